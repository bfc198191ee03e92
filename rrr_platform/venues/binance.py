"""Binance Spot: combined/raw WebSocket streams and the REST history API (exchange-protocols.md 1, 4).

Parsing decodes each frame straight into one typed ``msgspec`` struct whose optional fields cover
every shape Binance sends (trade, aggTrade, bookTicker, the combined wrapper, control replies), so a
trade frame costs one C-level decode with the two decimals built from their strings, no dict.

Time unit: ``timeUnit=MICROSECOND`` switches every time field to µs. ``parse`` tells the units apart
by magnitude (an epoch in ms stays below 10^14 until the year 5138; in µs it is above 10^15 since
2001), so one parser serves both connection kinds and a misconfigured connection cannot silently
shift times by 1000x.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from rrr_platform.market.symbols import UnknownSymbol, canonical_from_concatenated, concatenated
from rrr_platform.market.timeutil import NS_PER_MIN, NS_PER_MS, NS_PER_US
from rrr_platform.market.types import BINANCE, Bar, DeadLetter, Quote, Trade
from rrr_platform.settings import Settings, get_settings
from rrr_platform.venues.base import (
    ErrorReply,
    ParseResult,
    RestBase,
    ServerShutdown,
    SubscriptionAck,
    Unhandled,
    as_bytes,
    dead,
    decode_error_reason,
)

VENUE = BINANCE
_STREAM_SUFFIX = {"trades": "trade", "agg_trades": "aggTrade", "quotes": "bookTicker"}
_US_THRESHOLD = 10**14  # above: the value is in µs (see module docstring)


# --- WebSocket ------------------------------------------------------------------------------------


def stream_names(symbols: Sequence[str], channels: Sequence[str]) -> list[str]:
    names = []
    for channel in channels:
        if channel not in _STREAM_SUFFIX:
            raise ValueError(f"unknown channel {channel!r}; expected one of {sorted(_STREAM_SUFFIX)}")
        names.extend(f"{concatenated(symbol).lower()}@{_STREAM_SUFFIX[channel]}" for symbol in symbols)
    return names


def ws_url(
    base_url: str, symbols: list[str], channels: Sequence[str], *, time_unit: str | None = None
) -> str:
    """Combined-stream URL: every payload arrives wrapped as ``{"stream", "data"}``, so a connection
    carrying several streams can always tell them apart."""
    base = base_url.rstrip("/")
    if base.endswith("/stream"):
        base = base[: -len("/stream")]
    url = f"{base}/stream?streams={'/'.join(stream_names(symbols, channels))}"
    if time_unit:
        url += f"&timeUnit={time_unit.upper()}"
    return url


def subscribe_messages(
    symbols: Sequence[str], channels: Sequence[str], api_key: str | None = None
) -> list[str]:
    """Nothing to send: ``ws_url`` already names the streams (Binance counts every client message
    against its 5 msg/s limit, so the URL is the cheaper way). See ``subscribe_request`` for live
    changes on an open socket."""
    stream_names(symbols, channels)  # validate the channels all the same
    return []


def subscribe_request(
    symbols: Sequence[str], channels: Sequence[str], request_id: int = 1, method: str = "SUBSCRIBE"
) -> str:
    """``{"method":"SUBSCRIBE","params":[...],"id":n}``: one message for all streams (rate limit)."""
    return msgspec.json.encode(
        {"method": method, "params": stream_names(symbols, channels), "id": request_id}
    ).decode()


class _ErrorBody(msgspec.Struct, gc=False):
    code: int | None = None
    msg: str | None = None


class _Event(msgspec.Struct, gc=False):
    """Every event field Binance uses; which are set depends on the stream (``e`` when present).

    ``a`` is the aggregate id (int) in aggTrade but the ask price (string) in bookTicker; ``b`` is the
    bid price in bookTicker but a list of levels in depth updates.
    """

    e: str | None = None
    E: int | None = None
    s: str | None = None
    t: int | None = None
    # Typed str, not Decimal: msgspec's Decimal also accepts a bare JSON number, and a number here is
    # a wrong-typed frame to dead-letter. Decimal(str) after decoding costs about the same.
    p: str | None = None
    q: str | None = None
    T: int | None = None
    m: bool | None = None
    a: int | Decimal | list[Any] | None = None
    f: int | None = None
    l: int | None = None  # noqa: E741 - Binance's field name
    u: int | None = None
    b: Decimal | list[Any] | None = None
    B: Decimal | None = None
    A: Decimal | None = None


class _Frame(_Event):
    """The combined wrapper and control replies, around (or instead of) an event."""

    stream: str | None = None
    data: _Event | None = None
    result: Any = msgspec.UNSET
    id: int | str | None = None
    error: _ErrorBody | None = None
    code: int | None = None
    msg: str | None = None
    lastUpdateId: int | None = None  # partial book depth has no e/s/E


class _Combined(msgspec.Struct, gc=False):
    stream: str
    data: _Event


_decoder = msgspec.json.Decoder(_Frame)
_combined_decoder = msgspec.json.Decoder(_Combined)
_event_decoder = msgspec.json.Decoder(_Event)
_canonical: dict[str, str] = {}
# Records are built by ``msgspec.structs.replace`` on a template: a third of the cost of keyword
# construction, which matters at the 500k frames/s target.
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
    seq_scope="instrument",
    gapless=True,
)
_replace = msgspec.structs.replace
_COMBINED_PREFIX_BYTES = b'{"stream"'
_COMBINED_PREFIX_STR = '{"stream"'


def register_symbol(venue_symbol: str, canonical: str) -> None:
    """Teach the parser a symbol from ``exchangeInfo`` (``baseAsset``-``quoteAsset``)."""
    _canonical[venue_symbol.upper()] = canonical


def canonical_symbol(venue_symbol: str) -> str:
    try:
        return _canonical[venue_symbol]
    except KeyError:
        symbol = canonical_from_concatenated(venue_symbol)  # raises UnknownSymbol
        _canonical[venue_symbol] = symbol
        return symbol


def _ts_ns(value: int) -> int:
    return value * NS_PER_US if value >= _US_THRESHOLD else value * NS_PER_MS


def parse(
    frame: str | bytes, receive_ts_ns: int, connection_id: str = "", receive_mono_ns: int = 0
) -> ParseResult:
    event: _Event
    msg: _Frame | None = None
    if type(frame) is bytes:
        prefix: bytes | str = _COMBINED_PREFIX_BYTES
    elif type(frame) is str:
        prefix = _COMBINED_PREFIX_STR
    else:  # bytearray, memoryview, or not a frame at all: the guarded slow path
        return _parse_other(frame, receive_ts_ns, connection_id, receive_mono_ns)
    try:
        if frame.startswith(prefix):  # type: ignore[arg-type]
            try:
                event = _combined_decoder.decode(frame).data
            except msgspec.ValidationError:  # e.g. a wrapper whose data is not an object: say why below
                msg = _decoder.decode(frame)
                event = msg.data if msg.data is not None else msg
        else:  # raw stream: the event alone decodes faster than the full frame shape
            event = _event_decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return dead(VENUE, decode_error_reason(exc), as_bytes(frame), receive_ts_ns, connection_id)
    # One pass for nearly every frame; a second only for a wrapped event that arrived without the
    # usual '{"stream"' prefix (key order, whitespace): its event then goes through the same paths.
    while True:
        kind = event.e
        if kind == "trade" or kind == "aggTrade":
            # Hot path: locals only, no helper calls (each Python call costs about 5% of the frame budget).
            symbol = event.s
            price = event.p
            size = event.q
            trade_time = event.T
            maker = event.m
            trade_id = event.t if kind == "trade" else event.a
            if (
                symbol is None
                or price is None
                or size is None
                or trade_time is None
                or maker is None
                or type(trade_id) is not int
            ):
                return _dead_missing(event, frame, receive_ts_ns, connection_id)
            try:
                price = Decimal(price)
                size = Decimal(size)
            except InvalidOperation:
                return dead(
                    VENUE,
                    f"{kind}: price {event.p!r} or size {event.q!r} is not a decimal",
                    as_bytes(frame),
                    receive_ts_ns,
                    connection_id,
                )
            canonical = _canonical.get(symbol)
            if canonical is None:
                try:
                    canonical = canonical_symbol(symbol)
                except UnknownSymbol:
                    return dead(
                        VENUE, f"unknown symbol {symbol!r}", as_bytes(frame), receive_ts_ns, connection_id
                    )
            send_time = event.E
            if send_time is not None:
                send_time = send_time * NS_PER_US if send_time >= _US_THRESHOLD else send_time * NS_PER_MS
            trade = _replace(
                _TRADE,
                symbol=canonical,
                venue_symbol=symbol,
                trade_id=str(trade_id),
                price=price,
                size=size,
                aggressor="SELL" if maker else "BUY",
                venue_side_raw="m=true" if maker else "m=false",
                exchange_ts_ns=trade_time * NS_PER_US
                if trade_time >= _US_THRESHOLD
                else trade_time * NS_PER_MS,
                venue_send_ts_ns=send_time,
                receive_ts_ns=receive_ts_ns,
                receive_mono_ns=receive_mono_ns,
                seq=trade_id,
                connection_id=connection_id,
            )
            if kind == "aggTrade":
                trade.trade_id_kind = "aggregate"
            return ParseResult([trade])
        if (
            kind is None
            and event.u is not None
            and event.s is not None
            and (event.b is not None or event.a is not None)
        ):
            return _book_ticker(event, frame, receive_ts_ns, connection_id, receive_mono_ns)
        if msg is None:  # a control frame (ack, error, serverShutdown...): needs the full shape
            try:
                msg = _decoder.decode(frame)
            except msgspec.ValidationError as exc:
                return dead(VENUE, decode_error_reason(exc), as_bytes(frame), receive_ts_ns, connection_id)
            if msg.data is not None:
                event = msg.data
                continue
        return _control(msg, event, frame, receive_ts_ns, connection_id)


_BOOK_AMOUNTS = re.compile(rb'"([bBaA])"\s*:\s*[-+0-9.]')


def _unquoted_amount(frame: str | bytes, pattern: re.Pattern[bytes]) -> str | None:
    """The first amount field sent as a bare JSON number, if any (Binance sends decimal strings)."""
    match = pattern.search(frame if isinstance(frame, bytes) else frame.encode())
    return match.group(1).decode() if match else None


def _parse_other(frame: object, receive_ts_ns: int, connection_id: str, receive_mono_ns: int) -> ParseResult:
    if isinstance(frame, bytearray | memoryview):
        return parse(bytes(frame), receive_ts_ns, connection_id, receive_mono_ns)
    return dead(
        VENUE,
        f"frame is a {type(frame).__name__}, not text or bytes",
        as_bytes(frame),
        receive_ts_ns,
        connection_id,
    )


def _dead_missing(event: _Event, frame: str | bytes, receive_ts_ns: int, connection_id: str) -> ParseResult:
    id_field = "t" if event.e == "trade" else "a"
    for name in ("s", id_field, "p", "q", "T", "m"):
        value = getattr(event, name)
        if value is None:
            reason = f"{event.e}: missing field {name!r}"
            break
        if name == id_field and type(value) is not int:
            reason = f"{event.e}: field {name!r} must be an integer id, got {value!r}"
            break
    else:  # pragma: no cover - parse only calls this when a check failed
        reason = f"{event.e}: malformed"
    return dead(VENUE, reason, as_bytes(frame), receive_ts_ns, connection_id)


def _book_ticker(
    event: _Event, frame: str | bytes, receive_ts_ns: int, connection_id: str, receive_mono_ns: int
) -> ParseResult:
    bad = _unquoted_amount(frame, _BOOK_AMOUNTS)
    if bad is not None:
        return dead(
            VENUE,
            f"bookTicker: field {bad!r} must be a decimal string, got a number",
            as_bytes(frame),
            receive_ts_ns,
            connection_id,
        )
    for name in ("b", "B", "a", "A"):
        value = getattr(event, name)
        if value is None:
            return dead(
                VENUE, f"bookTicker: missing field {name!r}", as_bytes(frame), receive_ts_ns, connection_id
            )
        if type(value) is not Decimal:
            return dead(
                VENUE,
                f"bookTicker: field {name!r} must be a decimal string, got {value!r}",
                as_bytes(frame),
                receive_ts_ns,
                connection_id,
            )
    symbol = event.s
    assert symbol is not None
    try:
        canonical = canonical_symbol(symbol)
    except UnknownSymbol:
        return dead(VENUE, f"unknown symbol {symbol!r}", as_bytes(frame), receive_ts_ns, connection_id)
    quote = Quote(
        venue=VENUE,
        symbol=canonical,
        venue_symbol=symbol,
        bid_px=event.b,  # type: ignore[arg-type]  # checked above
        bid_sz=event.B,
        ask_px=event.a,  # type: ignore[arg-type]
        ask_sz=event.A,
        exchange_ts_ns=None,  # spot bookTicker carries no time at all
        receive_ts_ns=receive_ts_ns,
        receive_mono_ns=receive_mono_ns,
        seq=event.u,
        seq_scope="instrument",
        gapless=False,  # u skips values: ordering only
        book_update_id=event.u,
        connection_id=connection_id,
    )
    return ParseResult(quotes=[quote])


def _control(
    msg: _Frame, event: _Event, frame: str | bytes, receive_ts_ns: int, connection_id: str
) -> ParseResult:
    request_id = None if msg.id is None else str(msg.id)
    if event.e == "serverShutdown":
        return ParseResult(
            events=[ServerShutdown(venue=VENUE, ts_ns=None if event.E is None else _ts_ns(event.E))]
        )
    if msg.error is not None:
        return ParseResult(
            events=[
                ErrorReply(
                    venue=VENUE, message=msg.error.msg or "", code=msg.error.code, request_id=request_id
                )
            ]
        )
    if msg.code is not None and msg.msg is not None:
        return ParseResult(
            events=[ErrorReply(venue=VENUE, message=msg.msg, code=msg.code, request_id=request_id)]
        )
    if msg.result is not msgspec.UNSET:
        detail = "" if msg.result is None else msgspec.json.encode(msg.result).decode()
        return ParseResult(events=[SubscriptionAck(venue=VENUE, detail=detail, request_id=request_id)])
    if event.e is not None:
        return ParseResult(events=[Unhandled(venue=VENUE, kind=event.e)])
    if msg.lastUpdateId is not None:
        return ParseResult(events=[Unhandled(venue=VENUE, kind="depthSnapshot")])
    if event.u is not None and event.s is not None:  # a bookTicker without any price: _book_ticker says which
        return _book_ticker(event, frame, receive_ts_ns, connection_id, 0)
    if msg.stream is not None and msg.data is None:
        reason = "combined frame without 'data'"
    else:
        reason = "unrecognised message: no event type, no known control fields"
    return dead(VENUE, reason, as_bytes(frame), receive_ts_ns, connection_id)


# --- REST -----------------------------------------------------------------------------------------


class _RestTrade(msgspec.Struct, gc=False):
    id: int
    price: Decimal
    qty: Decimal
    time: int
    isBuyerMaker: bool


class _RestAggTrade(msgspec.Struct, gc=False):
    a: int
    f: int
    l: int  # noqa: E741
    T: int


class _SymbolInfo(msgspec.Struct, gc=False):
    symbol: str
    baseAsset: str
    quoteAsset: str


class _ExchangeInfo(msgspec.Struct, gc=False):
    symbols: list[_SymbolInfo]


_exchange_info_decoder = msgspec.json.Decoder(_ExchangeInfo)
_trades_decoder = msgspec.json.Decoder(list[_RestTrade])
_agg_decoder = msgspec.json.Decoder(list[_RestAggTrade])
# openTime, open, high, low, close, volume, closeTime, quoteVolume, trades, takerBuyBase,
# takerBuyQuote, ignore
_Kline = tuple[int, Decimal, Decimal, Decimal, Decimal, Decimal, int, Decimal, int, Decimal, Decimal, Any]
_klines_decoder = msgspec.json.Decoder(list[_Kline])

PAGE_LIMIT = 1000  # historicalTrades / aggTrades / klines maximum
AGG_WINDOW_NS = 3600 * 10**9 - NS_PER_MS  # aggTrades: endTime - startTime must stay under one hour


class RestClient(RestBase):
    """``/api/v3/historicalTrades`` (by id), ``/api/v3/aggTrades`` (to find the first id at a time),
    ``/api/v3/klines``, ``/api/v3/exchangeInfo``. With ``time_unit="MICROSECOND"`` the
    ``X-MBX-TIME-UNIT`` header asks for µs, matching a µs WebSocket so backfilled rows carry the same
    ``ts`` as streamed ones. ``api_key`` (optional: market data needs none) goes in ``X-MBX-APIKEY``."""

    venue = VENUE

    def __init__(
        self,
        base_url: str | None = None,
        *,
        settings: Settings | None = None,
        time_unit: str | None = None,
        api_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        headers = {}
        if time_unit:
            headers["X-MBX-TIME-UNIT"] = time_unit.upper()
        if api_key:
            headers["X-MBX-APIKEY"] = api_key
        url = base_url or (settings or get_settings()).binance_rest_url
        super().__init__(url, headers=headers, **kwargs)

    async def load_symbols(self) -> dict[str, str]:
        """``exchangeInfo`` -> {``BTCUSDT``: ``BTC-USDT``}, registered with the parser, so symbols
        whose quote asset the built-in table does not know still map exactly."""
        body, _ = await self.get("/api/v3/exchangeInfo")
        info = _exchange_info_decoder.decode(body)
        mapping = {s.symbol: f"{s.baseAsset}-{s.quoteAsset}" for s in info.symbols}
        for venue_symbol, canonical in mapping.items():
            register_symbol(venue_symbol, canonical)
        return mapping

    def _trade(self, symbol: str, row: _RestTrade) -> Trade:
        return Trade(
            venue=VENUE,
            symbol=symbol,
            venue_symbol=concatenated(symbol),
            trade_id=str(row.id),
            price=row.price,
            size=row.qty,
            aggressor="SELL" if row.isBuyerMaker else "BUY",
            venue_side_raw="m=true" if row.isBuyerMaker else "m=false",
            exchange_ts_ns=_ts_ns(row.time),
            receive_ts_ns=0,
            seq=row.id,
            seq_scope="instrument",
            gapless=True,
            is_replay=True,
        )

    async def _page(self, symbol: str, from_id: int, limit: int) -> list[_RestTrade]:
        body, _ = await self.get(
            "/api/v3/historicalTrades",
            {"symbol": concatenated(symbol), "fromId": from_id, "limit": limit},
        )
        return _trades_decoder.decode(body)

    async def trades_by_id(self, symbol: str, first_id: int, last_id: int) -> list[Trade]:
        """Trades ``first_id..last_id`` inclusive, ascending."""
        out: list[Trade] = []
        next_id = first_id
        while next_id <= last_id:
            rows = await self._page(symbol, next_id, min(PAGE_LIMIT, last_id - next_id + 1))
            if not rows:
                break
            out.extend(self._trade(symbol, r) for r in rows if next_id <= r.id <= last_id)
            if rows[-1].id < next_id:  # a server that ignores fromId would loop forever
                break
            next_id = rows[-1].id + 1
        return out

    async def first_trade_id_at(self, symbol: str, start_ns: int, end_ns: int) -> int | None:
        """The first raw trade id in ``[start_ns, end_ns)``: the first aggregate trade's ``f``.

        ``aggTrades`` takes a start/end window of at most one hour, so a longer range is searched
        hour by hour until a trade turns up (a quiet hour has none)."""
        window_start = start_ns
        while window_start < end_ns:
            window_end = min(end_ns, window_start + AGG_WINDOW_NS)
            body, _ = await self.get(
                "/api/v3/aggTrades",
                {
                    "symbol": concatenated(symbol),
                    "startTime": window_start // NS_PER_MS,
                    "endTime": (window_end - 1) // NS_PER_MS,
                    "limit": 1,
                },
            )
            rows = _agg_decoder.decode(body)
            if rows:
                return rows[0].f
            window_start = window_end
        return None

    async def trades(self, symbol: str, start_ns: int, end_ns: int) -> AsyncIterator[list[Trade]]:
        """Trades in ``[start_ns, end_ns)``, page by page ascending."""
        next_id = await self.first_trade_id_at(symbol, start_ns, end_ns)
        while next_id is not None:
            rows = await self._page(symbol, next_id, PAGE_LIMIT)
            page = [self._trade(symbol, r) for r in rows if r.id >= next_id]
            in_range = [t for t in page if start_ns <= t.exchange_ts_ns < end_ns]
            if in_range:
                yield in_range
            if not page or page[-1].exchange_ts_ns >= end_ns or len(rows) < PAGE_LIMIT:
                return
            next_id = rows[-1].id + 1

    async def bars_1m(self, symbol: str, start_ns: int, end_ns: int) -> list[Bar]:
        """1-minute klines whose open time is in ``[start_ns, end_ns)``."""
        bars: list[Bar] = []
        cursor_ms = start_ns // NS_PER_MS
        end_ms = end_ns // NS_PER_MS
        while cursor_ms < end_ms:
            body, _ = await self.get(
                "/api/v3/klines",
                {
                    "symbol": concatenated(symbol),
                    "interval": "1m",
                    "startTime": cursor_ms,
                    "endTime": end_ms - 1,
                    "limit": PAGE_LIMIT,
                },
            )
            rows = _klines_decoder.decode(body)
            for row in rows:
                open_ns = _ts_ns(row[0])
                if not start_ns <= open_ns < end_ns:
                    continue
                volume, quote_volume = row[5], row[7]
                bars.append(
                    Bar(
                        venue=VENUE,
                        symbol=symbol,
                        ts_ns=open_ns,
                        open=row[1],
                        high=row[2],
                        low=row[3],
                        close=row[4],
                        volume=volume,
                        vwap=quote_volume / volume if volume else None,
                        trade_count=row[8],
                        buy_volume=row[9],
                    )
                )
            if len(rows) < PAGE_LIMIT:
                break
            cursor_ms = _ts_ns(rows[-1][0]) // NS_PER_MS + NS_PER_MIN // NS_PER_MS
        return bars


__all__ = [
    "VENUE",
    "DeadLetter",
    "RestClient",
    "canonical_symbol",
    "parse",
    "register_symbol",
    "subscribe_messages",
    "subscribe_request",
    "ws_url",
]
