"""Polygon.io / Massive: crypto and stocks WebSocket clusters and the REST API (exchange-protocols.md 3, 4).

Every frame is a JSON array of events tagged by ``ev``. Prices and sizes are JSON numbers: they are
decoded straight into ``Decimal`` from the token text (``msgspec`` does this for ``Decimal``
fields), never through a float. A frame decodes in one typed pass; if any element is bad, the frame
is decoded again element by element so that only the bad one becomes a dead letter.

Trade ids: stocks ``i`` is unique only per reporting exchange, so the stored id is ``"{x}:{i}"``
(the dedupe key ``sym, x, i`` of section 4.6 inside the table's key). Crypto ``XT`` trades without
``i`` get a synthetic id ``"syn:" + 16 hex digits`` of BLAKE2b over ``pair|x|t|p|s|c`` with the
price and size as their exact JSON text: a duplicate or replayed delivery of the same trade gets
the same id, so storage de-duplicates it. (Two genuinely distinct trades identical in all of those
fields within one millisecond would collapse into one; without an id nothing can tell them apart.)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from rrr_platform.market.symbols import polygon_rest_ticker
from rrr_platform.market.timeutil import NS_PER_MS, format_rfc3339_ns
from rrr_platform.market.types import POLYGON, Aggressor, Bar, DeadLetter, Quote, Trade
from rrr_platform.settings import Settings, get_settings
from rrr_platform.venues.base import (
    ParseResult,
    RestBase,
    SubscriptionAck,
    Unhandled,
    VenueStatus,
    as_bytes,
    dead,
    decode_error_reason,
    never_raises,
)

VENUE = POLYGON
_TRADE_PREFIX = {"crypto": "XT", "stocks": "T"}
_QUOTE_PREFIX = {"crypto": "XQ", "stocks": "Q"}
_MARKETS = ("stocks", "options", "forex", "crypto", "indices", "futures")
ROUND_LOT = 100  # stocks quote sizes are in round lots (section 4.7)


def market_of(symbols: Sequence[str]) -> str:
    """``crypto`` for ``BASE-QUOTE`` pairs, ``stocks`` for tickers; one connection serves one market."""
    markets = {"crypto" if "-" in s else "stocks" for s in symbols}
    if len(markets) != 1:
        raise ValueError(
            f"one Polygon connection serves one market, got {sorted(markets)} for {list(symbols)}"
        )
    return markets.pop()


def ws_url(base_url: str, symbols: list[str], channels: Sequence[str]) -> str:
    """``<host>/<market>``; a base URL that already ends with the market is kept as is."""
    _check_channels(channels)
    base = base_url.rstrip("/")
    market = market_of(symbols)
    last = base.rsplit("/", 1)[-1]
    if last in _MARKETS:
        if last != market:
            raise ValueError(f"{base_url} is the {last} cluster but the symbols are {market}")
        return base
    return f"{base}/{market}"


def _check_channels(channels: Sequence[str]) -> None:
    for channel in channels:
        if channel not in ("trades", "quotes"):
            raise ValueError(f"unknown channel {channel!r}; expected 'trades' or 'quotes'")


def subscribe_messages(
    symbols: Sequence[str], channels: Sequence[str], api_key: str | None = None
) -> list[str]:
    """``[auth, subscribe]``. Send the auth message first and the subscribe only after the
    ``auth_success`` status event (the server ignores earlier subscribes)."""
    if not api_key:
        raise ValueError("Polygon needs an API key (settings.polygon_api_key)")
    _check_channels(channels)
    market = market_of(symbols)
    topics = []
    for channel in channels:
        prefix = (_TRADE_PREFIX if channel == "trades" else _QUOTE_PREFIX)[market]
        topics.extend(f"{prefix}.{symbol}" for symbol in symbols)
    return [
        msgspec.json.encode({"action": "auth", "params": api_key}).decode(),
        msgspec.json.encode({"action": "subscribe", "params": ",".join(topics)}).decode(),
    ]


# --- WebSocket parsing ----------------------------------------------------------------------------


class _XT(msgspec.Struct, gc=False, tag_field="ev", tag="XT"):
    pair: str
    p: Decimal
    s: Decimal
    t: int
    x: int | None = None
    c: list[int] | None = None
    i: str | int | None = None  # an int per the spec, a string per both official clients
    r: int | None = None


class _XQ(msgspec.Struct, gc=False, tag_field="ev", tag="XQ"):
    pair: str
    bp: Decimal | None = None
    bs: Decimal | None = None
    ap: Decimal | None = None
    as_: Decimal | None = msgspec.field(default=None, name="as")
    t: int | None = None
    x: int | None = None
    r: int | None = None


class _T(msgspec.Struct, gc=False, tag_field="ev", tag="T"):
    sym: str
    p: Decimal
    s: Decimal
    t: int
    i: str | int
    x: int
    c: list[int] | None = None
    q: int | None = None
    z: int | None = None


class _Q(msgspec.Struct, gc=False, tag_field="ev", tag="Q"):
    sym: str
    bp: Decimal | None = None
    bs: Decimal | None = None
    ap: Decimal | None = None
    as_: Decimal | None = msgspec.field(default=None, name="as")
    bx: int | None = None
    ax: int | None = None
    c: int | None = None
    i: list[int] | None = None
    t: int | None = None
    q: int | None = None


class _Status(msgspec.Struct, gc=False, tag_field="ev", tag="status"):
    status: str
    message: str = ""


class _Agg(msgspec.Struct, gc=False, tag_field="ev", tag="XA"):
    """Aggregates are not turned into records; any fields are accepted."""


class _XAS(_Agg, tag="XAS"):
    pass


class _A(_Agg, tag="A"):
    pass


class _AM(_Agg, tag="AM"):
    pass


_EventType = _XT | _XQ | _T | _Q | _Status | _Agg | _XAS | _A | _AM
_frame_decoder = msgspec.json.Decoder(list[_EventType])
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_event_decoder = msgspec.json.Decoder(_EventType)
_KNOWN_EV = {"XT", "XQ", "T", "Q", "status", "XA", "XAS", "A", "AM"}

_TRADE = Trade(
    venue=VENUE,
    symbol="",
    venue_symbol="",
    trade_id="",
    price=Decimal(0),
    size=Decimal(0),
    aggressor="UNKNOWN",
    exchange_ts_ns=0,
    receive_ts_ns=0,
)
_replace = msgspec.structs.replace


def synthetic_trade_id(
    pair: str,
    exchange: int | None,
    t_ms: int,
    price: Decimal,
    size: Decimal,
    conditions: Sequence[int] | None,
) -> str:
    """Deterministic id for a crypto trade without one (see the module docstring)."""
    key = f"{pair}|{exchange}|{t_ms}|{price}|{size}|{','.join(map(str, conditions or ()))}"
    return "syn:" + hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def _crypto_aggressor(conditions: list[int] | None) -> Aggressor:
    # c: 1 = sellside, 2 = buyside (section 3.5; read as the aggressor, unverified upstream)
    if conditions:
        if 2 in conditions:
            return "BUY"
        if 1 in conditions:
            return "SELL"
    return "UNKNOWN"


def _convert(
    event: Any, result: ParseResult, receive_ts_ns: int, receive_mono_ns: int, connection_id: str
) -> str | None:
    """Append the record or event for one decoded element; returns a dead-letter reason instead."""
    kind = type(event)
    if kind is _XT:
        trade_id = event.i
        if trade_id is None or trade_id == "":
            trade_id = synthetic_trade_id(event.pair, event.x, event.t, event.p, event.s, event.c)
        conditions = tuple(event.c) if event.c is not None else None
        result.trades.append(
            _replace(
                _TRADE,
                symbol=event.pair,
                venue_symbol=event.pair,
                trade_id=str(trade_id),
                price=event.p,
                size=event.s,
                aggressor=_crypto_aggressor(event.c),
                venue_side_raw=None if event.c is None else f"c={list(event.c)}",
                exchange_ts_ns=event.t * NS_PER_MS,
                vendor_recv_ts_ns=None if event.r is None else event.r * NS_PER_MS,
                receive_ts_ns=receive_ts_ns,
                receive_mono_ns=receive_mono_ns,
                source_exchange=None if event.x is None else str(event.x),
                conditions=conditions,
                connection_id=connection_id,
            )
        )
    elif kind is _T:
        if event.i == "":
            return "T: empty trade id 'i'"
        result.trades.append(
            _replace(
                _TRADE,
                symbol=event.sym,
                venue_symbol=event.sym,
                trade_id=f"{event.x}:{event.i}",
                price=event.p,
                size=event.s,
                exchange_ts_ns=event.t * NS_PER_MS,  # SIP time
                receive_ts_ns=receive_ts_ns,
                receive_mono_ns=receive_mono_ns,
                seq=event.q,
                seq_scope="instrument" if event.q is not None else "none",
                gapless=False,  # q is unique and increasing but not consecutive
                asset_class="equity",
                source_exchange=str(event.x),
                conditions=tuple(event.c) if event.c is not None else None,
                connection_id=connection_id,
            )
        )
    elif kind is _XQ:
        if event.bp is None and event.ap is None:
            return "XQ: neither bid 'bp' nor ask 'ap'"
        result.quotes.append(
            Quote(
                venue=VENUE,
                symbol=event.pair,
                venue_symbol=event.pair,
                bid_px=event.bp,
                bid_sz=event.bs,
                ask_px=event.ap,
                ask_sz=event.as_,
                exchange_ts_ns=None if event.t is None else event.t * NS_PER_MS,
                vendor_recv_ts_ns=None if event.r is None else event.r * NS_PER_MS,
                receive_ts_ns=receive_ts_ns,
                receive_mono_ns=receive_mono_ns,
                source_exchange=None if event.x is None else str(event.x),
                connection_id=connection_id,
            )
        )
    elif kind is _Q:
        if event.bp is None and event.ap is None:
            return "Q: neither bid 'bp' nor ask 'ap'"
        conditions = ([event.c] if event.c is not None else []) + (event.i or [])
        result.quotes.append(
            Quote(
                venue=VENUE,
                symbol=event.sym,
                venue_symbol=event.sym,
                bid_px=event.bp,
                bid_sz=None if event.bs is None else event.bs * ROUND_LOT,
                ask_px=event.ap,
                ask_sz=None if event.as_ is None else event.as_ * ROUND_LOT,
                bid_exchange=None if event.bx is None else str(event.bx),
                ask_exchange=None if event.ax is None else str(event.ax),
                exchange_ts_ns=None if event.t is None else event.t * NS_PER_MS,
                receive_ts_ns=receive_ts_ns,
                receive_mono_ns=receive_mono_ns,
                seq=event.q,
                seq_scope="instrument" if event.q is not None else "none",
                gapless=False,
                asset_class="equity",
                conditions=tuple(conditions) if conditions else None,
                connection_id=connection_id,
            )
        )
    elif kind is _Status:
        if event.status == "success":
            result.events.append(SubscriptionAck(venue=VENUE, detail=event.message))
        else:
            result.events.append(VenueStatus(venue=VENUE, status=event.status, message=event.message))
    else:
        result.events.append(Unhandled(venue=VENUE, kind=kind.__struct_config__.tag))  # type: ignore[attr-defined]
    return None


# Polygon sends prices and sizes as JSON numbers. msgspec decodes a quoted "123.4" into a Decimal
# field just as well, so a wrong-typed value would pass unseen: one scan of the frame for a quoted
# value under a numeric key sends such frames to the element-by-element path, which rejects it.
_NUMERIC_KEYS = r'"(?:p|s|bp|bs|ap|as|o|h|l|c|v|vw|a|op)"\s*:\s*"'
_QUOTED_NUMBER_BYTES = re.compile(_NUMERIC_KEYS.encode())
_QUOTED_NUMBER_STR = re.compile(_NUMERIC_KEYS)


def _quoted_number(frame: str | bytes) -> re.Match | None:  # type: ignore[type-arg]
    pattern = _QUOTED_NUMBER_STR if isinstance(frame, str) else _QUOTED_NUMBER_BYTES
    return pattern.search(frame)  # type: ignore[arg-type]


def _parse(
    frame: str | bytes, receive_ts_ns: int, connection_id: str = "", receive_mono_ns: int = 0
) -> ParseResult:
    """Parse one Polygon frame (a JSON array of events); one bad event becomes one dead letter."""
    result = ParseResult()
    if _quoted_number(frame) is not None:
        return _parse_each(frame, result, receive_ts_ns, connection_id, receive_mono_ns)
    try:
        events = _frame_decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _parse_each(frame, result, receive_ts_ns, connection_id, receive_mono_ns)
    for event in events:
        reason = _convert(event, result, receive_ts_ns, receive_mono_ns, connection_id)
        if reason is not None:  # rare: redo the frame element by element to keep the raw element
            return _parse_each(frame, ParseResult(), receive_ts_ns, connection_id, receive_mono_ns)
    return result


def _parse_each(
    frame: str | bytes, result: ParseResult, receive_ts_ns: int, connection_id: str, receive_mono_ns: int
) -> ParseResult:
    try:
        elements = _raw_list_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        return dead(
            VENUE, f"expected a JSON array of events: {exc}", as_bytes(frame), receive_ts_ns, connection_id
        )
    except msgspec.DecodeError as exc:
        return dead(VENUE, f"invalid JSON: {exc}", as_bytes(frame), receive_ts_ns, connection_id)
    for index, raw in enumerate(elements):
        reason: str | None
        quoted = _quoted_number(bytes(raw))
        if quoted is not None:
            key = quoted.group().split(b":")[0].decode().strip('"')
            generic = msgspec.json.decode(raw)
            ev = generic.get("ev") if isinstance(generic, dict) else None
            reason = f"event {index} ({ev}): invalid field: Expected a JSON number, got a string"
            reason += f" - at `$.{key}`"
            result.dead_letters.append(_dl(reason, bytes(raw), receive_ts_ns, connection_id))
            continue
        try:
            event = _event_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            reason, unknown_kind = _element_reason(raw, exc, index)
            if unknown_kind is not None:  # well-formed, of a type we do not handle: not bad data
                result.events.append(Unhandled(venue=VENUE, kind=unknown_kind))
            else:
                result.dead_letters.append(_dl(reason, bytes(raw), receive_ts_ns, connection_id))
            continue
        except msgspec.DecodeError as exc:  # pragma: no cover - the array decoded, so elements are JSON
            result.dead_letters.append(_dl(f"invalid JSON: {exc}", bytes(raw), receive_ts_ns, connection_id))
            continue
        reason = _convert(event, result, receive_ts_ns, receive_mono_ns, connection_id)
        if reason is not None:
            result.dead_letters.append(
                _dl(f"event {index}: {reason}", bytes(raw), receive_ts_ns, connection_id)
            )
    return result


def _element_reason(raw: msgspec.Raw, exc: msgspec.ValidationError, index: int) -> tuple[str, str | None]:
    """(dead-letter reason, or the unknown ``ev`` of an event that is simply not handled)."""
    generic = msgspec.json.decode(raw)
    if not isinstance(generic, dict):
        return f"event {index}: expected an object, got {type(generic).__name__}", None
    ev = generic.get("ev")
    if ev is None:
        return f"event {index}: missing field 'ev'", None
    if isinstance(ev, str) and ev not in _KNOWN_EV:
        return "", ev
    return f"event {index} ({ev}): {decode_error_reason(exc)}", None


def _dl(reason: str, payload: bytes, receive_ts_ns: int, connection_id: str) -> DeadLetter:
    return DeadLetter(
        venue=VENUE, reason=reason, payload=payload, receive_ts_ns=receive_ts_ns, connection_id=connection_id
    )


# --- REST -----------------------------------------------------------------------------------------


class _AggBar(msgspec.Struct, gc=False):
    t: int
    o: Decimal
    h: Decimal
    l: Decimal  # noqa: E741
    c: Decimal
    v: Decimal
    vw: Decimal | None = None
    n: int | None = None


class _AggsPage(msgspec.Struct, gc=False):
    results: list[_AggBar] = []
    next_url: str | None = None
    status: str | None = None


class _RestTrade(msgspec.Struct, gc=False):
    price: Decimal
    size: Decimal
    id: str | None = None
    exchange: int | None = None
    conditions: list[int] | None = None
    participant_timestamp: int | None = None
    sip_timestamp: int | None = None
    sequence_number: int | None = None


class _TradesPage(msgspec.Struct, gc=False):
    results: list[_RestTrade] = []
    next_url: str | None = None


class _NewsPage(msgspec.Struct, gc=False):
    results: list[dict[str, Any]] = []
    next_url: str | None = None


_aggs_decoder = msgspec.json.Decoder(_AggsPage)
_trades_page_decoder = msgspec.json.Decoder(_TradesPage)
_news_decoder = msgspec.json.Decoder(_NewsPage)


class RestClient(RestBase):
    """``/v2/aggs/ticker/{ticker}/range/1/minute/{from}/{to}``, ``/v3/trades/{ticker}``,
    ``/v2/reference/news``; pages follow ``next_url``. The API key goes in an ``Authorization:
    Bearer`` header, never in a URL, so no logged URL carries it."""

    venue = VENUE

    def __init__(
        self,
        base_url: str | None = None,
        *,
        settings: Settings | None = None,
        api_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        settings = settings or get_settings()
        key = api_key if api_key is not None else settings.polygon_api_key.get_secret_value()
        super().__init__(
            base_url or settings.polygon_rest_url, headers={"Authorization": f"Bearer {key}"}, **kwargs
        )

    def __repr__(self) -> str:
        return f"polygon.RestClient({self.base_url!r})"

    async def _pages(
        self, path: str, params: dict[str, Any], decoder: msgspec.json.Decoder, max_pages: int | None = None
    ) -> AsyncIterator[Any]:
        url: str | None = path
        query: dict[str, Any] | None = params
        pages = 0
        while url is not None and (max_pages is None or pages < max_pages):
            body, _ = await self.get(url, query)
            page = decoder.decode(body)
            pages += 1
            yield page
            url, query = page.next_url, None  # next_url carries the cursor and every filter
            if url is not None and url.startswith("/"):
                url = self.base_url + url

    async def bars_1m(self, symbol: str, start_ns: int, end_ns: int) -> list[Bar]:
        """Minute aggregates starting in ``[start_ns, end_ns)``; crypto pairs as ``X:BASEQUOTE``."""
        ticker = polygon_rest_ticker(symbol)
        path = f"/v2/aggs/ticker/{ticker}/range/1/minute/{start_ns // NS_PER_MS}/{(end_ns - 1) // NS_PER_MS}"
        bars: list[Bar] = []
        async for page in self._pages(
            path, {"adjusted": "true", "sort": "asc", "limit": 50000}, _aggs_decoder
        ):
            for row in page.results:
                ts_ns = row.t * NS_PER_MS
                if start_ns <= ts_ns < end_ns:
                    bars.append(
                        Bar(
                            venue=VENUE,
                            symbol=symbol,
                            ts_ns=ts_ns,
                            open=row.o,
                            high=row.h,
                            low=row.l,
                            close=row.c,
                            volume=row.v,
                            vwap=row.vw,
                            trade_count=row.n or 0,
                        )
                    )
        return bars

    def _trade(self, symbol: str, row: _RestTrade) -> Trade:
        equity = "-" not in symbol
        # WebSocket times are ms; REST gives ns. Truncating to ms keeps a backfilled row's ``ts``
        # equal to the streamed row's, so the (venue, symbol, trade_id, ts) key de-duplicates them.
        raw_ts = row.sip_timestamp if equity and row.sip_timestamp else row.participant_timestamp
        if raw_ts is None:
            raw_ts = row.sip_timestamp or 0
        ts_ns = raw_ts - raw_ts % NS_PER_MS
        if equity:
            trade_id = f"{row.exchange}:{row.id}"
        elif row.id:
            trade_id = row.id
        else:
            trade_id = synthetic_trade_id(
                symbol, row.exchange, ts_ns // NS_PER_MS, row.price, row.size, row.conditions
            )
        return _replace(
            _TRADE,
            symbol=symbol,
            venue_symbol=polygon_rest_ticker(symbol),
            trade_id=trade_id,
            price=row.price,
            size=row.size,
            aggressor="UNKNOWN" if equity else _crypto_aggressor(row.conditions),
            exchange_ts_ns=ts_ns,
            seq=row.sequence_number,
            seq_scope="instrument" if equity and row.sequence_number is not None else "none",
            asset_class="equity" if equity else "crypto_spot",
            source_exchange=None if row.exchange is None else str(row.exchange),
            conditions=tuple(row.conditions) if row.conditions is not None else None,
            is_replay=True,
        )

    async def trades(
        self, symbol: str, start_ns: int, end_ns: int, *, max_pages: int | None = None, page_size: int = 50000
    ) -> AsyncIterator[list[Trade]]:
        """Trades in ``[start_ns, end_ns)`` ascending, one list per page (``page_size`` <= 50000)."""
        params = {
            "timestamp.gte": start_ns,
            "timestamp.lt": end_ns,
            "order": "asc",
            "sort": "timestamp",
            "limit": page_size,
        }
        async for page in self._pages(
            f"/v3/trades/{polygon_rest_ticker(symbol)}", params, _trades_page_decoder, max_pages
        ):
            trades = [self._trade(symbol, row) for row in page.results]
            if trades:
                yield trades

    async def news(
        self, start_ns: int, end_ns: int, ticker: str | None = None, *, max_pages: int | None = None
    ) -> list[dict[str, Any]]:
        """News articles published in ``[start_ns, end_ns)``, as the API returns them."""
        params = {
            "published_utc.gte": format_rfc3339_ns(start_ns, 0),
            "published_utc.lt": format_rfc3339_ns(end_ns, 0),
            "order": "asc",
            "sort": "published_utc",
            "limit": 1000,
            "ticker": None if ticker is None else polygon_rest_ticker(ticker),
        }
        out: list[dict[str, Any]] = []
        async for page in self._pages("/v2/reference/news", params, _news_decoder, max_pages):
            out.extend(page.results)
        return out


# The public parser: anything unforeseen becomes a dead letter, never an exception.
parse = never_raises(VENUE, _parse)

__all__ = [
    "VENUE",
    "RestClient",
    "market_of",
    "parse",
    "subscribe_messages",
    "synthetic_trade_id",
    "ws_url",
]
