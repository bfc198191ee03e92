"""What every venue adapter returns, and the shared REST plumbing.

``parse(frame, receive_ts_ns, connection_id, receive_mono_ns) -> ParseResult`` is pure and never
raises: records go to ``trades`` / ``quotes``, anything that cannot become a record goes to
``dead_letters`` with its raw bytes and a precise reason, and control messages the engine acts on
become small typed ``events``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp
import msgspec
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from rrr_platform.market.timeutil import NS_PER_S, parse_rfc3339_ns
from rrr_platform.market.types import DeadLetter, Quote, Trade

log = logging.getLogger(__name__)


# --- control events -------------------------------------------------------------------------------


class SubscriptionAck(msgspec.Struct, gc=False, kw_only=True, tag=True):
    """The venue confirmed a (un)subscription. ``detail`` is what it listed, as text."""

    venue: str
    detail: str = ""
    request_id: str | None = None


class ErrorReply(msgspec.Struct, gc=False, kw_only=True, tag=True):
    """The venue answered a request with an error (bad subscribe, bad product...)."""

    venue: str
    message: str
    code: int | None = None
    request_id: str | None = None


class Heartbeat(msgspec.Struct, gc=False, kw_only=True, tag=True):
    """Liveness from the venue. Coinbase Exchange carries the product's ``last_trade_id`` (a gap
    check that works even when no trade arrives); Coinbase AT carries ``counter``."""

    venue: str
    symbol: str | None = None
    last_trade_id: int | None = None
    sequence: int | None = None
    counter: int | None = None
    ts_ns: int | None = None


class ServerShutdown(msgspec.Struct, gc=False, kw_only=True, tag=True):
    """Binance ``serverShutdown``: reconnect now."""

    venue: str
    ts_ns: int | None = None


class VenueStatus(msgspec.Struct, gc=False, kw_only=True, tag=True):
    """Polygon ``status`` messages: ``connected``, ``auth_success``, ``auth_failed``, ``auth_timeout``,
    ``max_connections``, ``success`` (subscription ack), ``error``."""

    venue: str
    status: str
    message: str = ""

    @property
    def is_fatal(self) -> bool:
        """A bad key or a plan without this feed: reconnecting in a loop would not help."""
        return self.status == "auth_failed"


class ConnectionSequence(msgspec.Struct, gc=False, kw_only=True, tag=True):
    """Coinbase Advanced Trade envelope ``sequence_num`` (one counter per connection, across every
    channel). Emitted for every envelope so the engine sees the whole sequence, not only the numbers
    of envelopes that carried trades."""

    venue: str
    sequence_num: int
    channel: str


class Unhandled(msgspec.Struct, gc=False, kw_only=True, tag=True):
    """A well-formed message of a kind this adapter does not turn into records (depth, klines,
    aggregates, a new type the venue added). Counted, not dead-lettered: it is not bad data."""

    venue: str
    kind: str


Event = (
    SubscriptionAck | ErrorReply | Heartbeat | ServerShutdown | VenueStatus | ConnectionSequence | Unhandled
)


class ParseResult(msgspec.Struct, gc=False):
    """The records, dead letters and control events of one frame.

    A ``msgspec`` struct: built once per frame, it costs a third of a slotted class's ``__init__``.
    Empty-list defaults are copied per instance, so appending is safe.
    """

    trades: list[Trade] = []
    quotes: list[Quote] = []
    dead_letters: list[DeadLetter] = []
    events: list[Event] = []

    def __len__(self) -> int:
        return len(self.trades) + len(self.quotes) + len(self.dead_letters) + len(self.events)


def decimal_from_text(text: str) -> Decimal | None:
    """``Decimal(text)`` for a venue's decimal string, or None when it is not one. Stricter than
    ``Decimal()``, which also takes ``"1_000"`` and surrounding spaces: no venue sends those."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        return None
    if "_" in text or text != text.strip():
        return None
    return value


_MINUTE_NS: dict[str, int] = {}
_FRACTION_SCALE = tuple(10 ** (9 - digits) for digits in range(10))


def _minute_ns(prefix: str) -> int:
    """``YYYY-MM-DDTHH:MM`` -> ns, validated, cached (a feed's prefix changes once a minute)."""
    value = _MINUTE_NS.get(prefix)
    if value is None:
        hours, minutes = prefix[11:13], prefix[14:16]
        if not (hours.isascii() and hours.isdigit() and minutes.isascii() and minutes.isdigit()):
            raise ValueError(f"bad RFC 3339 time {prefix!r}")
        if int(hours) > 23 or int(minutes) > 59:
            raise ValueError(f"bad RFC 3339 time {prefix!r}")
        value = parse_rfc3339_ns(prefix + ":00Z")
        if len(_MINUTE_NS) >= 8192:
            _MINUTE_NS.clear()
        _MINUTE_NS[prefix] = value
    return value


def rfc3339_ns(text: str) -> int:
    """``parse_rfc3339_ns`` with a fast path for the venues' usual ``YYYY-MM-DDTHH:MM:SS[.f...]Z``.

    The ``YYYY-MM-DDTHH:MM`` prefix is cached (it changes once a minute) and only the seconds and
    the fraction are read per call: a small share of the general parser's cost, which dominated
    Coinbase frames. Anything else (offsets, lower-case separators) goes to the general parser.
    Raises ValueError for an invalid time.
    """
    n = len(text)
    if 20 <= n <= 30 and text[-1] == "Z" and text[16] == ":" and text[10] == "T" and text[13] == ":":
        seconds = text[17:19]
        fraction = text[20:-1] if n > 21 and text[19] == "." else ("0" if n == 20 else "x")
        if not (seconds.isascii() and seconds.isdigit() and fraction.isascii() and fraction.isdigit()):
            raise ValueError(f"bad RFC 3339 time {text!r}")
        sec = int(seconds)
        if sec > 60:
            raise ValueError(f"bad RFC 3339 time {text!r}")
        frac_ns = 0 if n == 20 else int(fraction) * _FRACTION_SCALE[len(fraction)]
        return _minute_ns(text[:16]) + sec * NS_PER_S + frac_ns
    return parse_rfc3339_ns(text)


def as_bytes(frame: object) -> bytes:
    """The raw payload of a dead letter, byte for byte where the frame is text or bytes."""
    if isinstance(frame, bytes):
        return frame
    if isinstance(frame, str):
        return frame.encode("utf-8", "surrogateescape")
    if isinstance(frame, bytearray | memoryview):
        return bytes(frame)
    return repr(frame).encode()


def never_raises(venue: str, parse: Callable[..., ParseResult]) -> Callable[..., ParseResult]:
    """Wrap a parser so that anything unforeseen (a frame of the wrong Python type, a bug) becomes a
    dead letter with the exception as the reason instead of stopping the reader."""

    @functools.wraps(parse)
    def guarded(
        frame: str | bytes, receive_ts_ns: int, connection_id: str = "", receive_mono_ns: int = 0
    ) -> ParseResult:
        try:
            return parse(frame, receive_ts_ns, connection_id, receive_mono_ns)
        except Exception as exc:  # the contract: parse never raises
            log.exception("%s parser failed on a frame", venue)
            return dead(
                venue,
                f"parser error: {type(exc).__name__}: {exc}",
                as_bytes(frame),
                receive_ts_ns,
                connection_id,
            )

    return guarded


def dead(venue: str, reason: str, payload: bytes, receive_ts_ns: int, connection_id: str) -> ParseResult:
    """A result holding a single dead letter."""
    return ParseResult(
        dead_letters=[
            DeadLetter(
                venue=venue,
                reason=reason,
                payload=payload,
                receive_ts_ns=receive_ts_ns,
                connection_id=connection_id,
            )
        ]
    )


def decode_error_reason(exc: Exception) -> str:
    """``msgspec`` errors already name the JSON path (``Expected `str`, got `int` - at `$.p```)."""
    if isinstance(exc, msgspec.ValidationError):
        return f"invalid field: {exc}"
    return f"invalid JSON: {exc}"


def missing(obj: object, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` that is None on ``obj``, as a dead-letter reason."""
    for name in names:
        if getattr(obj, name) is None:
            return f"missing field {name!r}"
    return None


# --- REST -----------------------------------------------------------------------------------------


class VenueHTTPError(Exception):
    """A non-2xx answer from a venue's REST API."""

    def __init__(self, status: int, url: str, body: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status} from {url}: {body[:300]}")
        self.status = status
        self.url = url
        self.body = body
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, VenueHTTPError):
        return exc.retryable
    return isinstance(exc, aiohttp.ClientConnectionError | asyncio.TimeoutError)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the only form the venues send); an HTTP date is not honoured."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds)


class RestBase:
    """aiohttp session, bounded tenacity retries of 429/5xx/connection errors honouring Retry-After.

    ``max_attempts`` bounds the tries; the wait is Retry-After when the venue sends one (capped at
    ``max_wait_s``), else exponential from ``base_wait_s``.
    """

    venue: str = ""

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        max_attempts: int = 5,
        base_wait_s: float = 0.5,
        max_wait_s: float = 30.0,
        timeout_s: float = 30.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._own_session = session is None
        self._max_attempts = max_attempts
        self._base_wait_s = base_wait_s
        self._max_wait_s = max_wait_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._headers = dict(headers or {})

    async def __aenter__(self) -> RestBase:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._own_session = True
        return self._session

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, VenueHTTPError) and exc.retry_after is not None:
            return min(exc.retry_after, self._max_wait_s)
        return min(self._base_wait_s * 2 ** (state.attempt_number - 1), self._max_wait_s)

    async def get(
        self, path_or_url: str, params: Mapping[str, Any] | None = None
    ) -> tuple[bytes, Mapping[str, str]]:
        """GET with retries; returns the body and the response headers."""
        url = path_or_url if path_or_url.startswith(("http://", "https://")) else self.base_url + path_or_url
        clean = {k: str(v) for k, v in (params or {}).items() if v is not None}
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            reraise=True,
        ):
            with attempt:
                async with self._client().get(url, params=clean, headers=self._headers) as resp:
                    body = await resp.read()
                    if resp.status >= 400:
                        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                        log.warning("%s REST %s -> HTTP %s", self.venue, resp.url.path, resp.status)
                        raise VenueHTTPError(
                            resp.status,
                            str(resp.url.with_query(None)),
                            body.decode(errors="replace"),
                            retry_after,
                        )
                    return body, resp.headers
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover
