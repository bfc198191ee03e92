"""Coinbase: the Exchange feed (the main one) and Advanced Trade parsing (exchange-protocols.md 2, 4).

Exchange (``ws-feed.exchange.coinbase.com``): flat messages tagged by ``type``; trades from
``matches`` (``side`` is the **maker's** side: ``sell`` means the taker bought), quotes from
``ticker``, ``heartbeat`` per product with ``last_trade_id``. Trade continuity: ``trade_id`` per
product (the ``sequence`` space is shared with other channels, so it jumps on ``matches`` alone).

Advanced Trade (``advanced-trade-ws.coinbase.com``): envelopes ``{channel, timestamp, sequence_num,
events[]}``; ``sequence_num`` is one counter per connection, so AT trades carry it with
``seq_scope="connection"`` and every envelope also yields a ``ConnectionSequence`` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from rrr_platform.market.timeutil import NS_PER_MIN, NS_PER_S, format_rfc3339_ns
from rrr_platform.market.types import COINBASE, COINBASE_AT, Aggressor, Bar, DeadLetter, Quote, Trade
from rrr_platform.settings import Settings, get_settings
from rrr_platform.venues.base import (
    ConnectionSequence,
    ErrorReply,
    Heartbeat,
    ParseResult,
    RestBase,
    SubscriptionAck,
    Unhandled,
    as_bytes,
    dead,
    decimal_from_text,
    decode_error_reason,
    never_raises,
    rfc3339_ns,
)

VENUE = COINBASE
VENUE_AT = COINBASE_AT

_EXCHANGE_CHANNELS = {"trades": "matches", "quotes": "ticker"}
_AT_CHANNELS = {"trades": "market_trades", "quotes": "ticker"}
# Exchange ``match`` side is the maker's; the aggressor is the other side.
_MAKER_SIDE_TO_AGGRESSOR: dict[str, Aggressor] = {"sell": "BUY", "buy": "SELL", "SELL": "BUY", "BUY": "SELL"}


class _Bad(Exception):
    """A field failed a check after decoding; the message is the dead-letter reason."""


def _dec(text: str | None, field: str) -> Decimal:
    if text is None:
        raise _Bad(f"missing field {field!r}")
    value = decimal_from_text(text)
    if value is None:
        raise _Bad(f"field {field!r} is not a decimal: {text!r}")
    return value


def _opt_dec(text: str | None, field: str) -> Decimal | None:
    return None if text is None or text == "" else _dec(text, field)


def _time(text: str, field: str = "time") -> int:
    try:
        return rfc3339_ns(text)
    except (ValueError, IndexError) as exc:
        raise _Bad(f"field {field!r} is not an RFC 3339 time: {text!r} ({exc})") from None


# --- Exchange WebSocket ---------------------------------------------------------------------------


def ws_url(base_url: str, symbols: list[str], channels: Sequence[str]) -> str:
    """Coinbase subscribes with a message, not in the URL."""
    for channel in channels:
        if channel not in _EXCHANGE_CHANNELS:
            raise ValueError(f"unknown channel {channel!r}; expected one of {sorted(_EXCHANGE_CHANNELS)}")
    return base_url.rstrip("/")


def subscribe_messages(
    symbols: Sequence[str], channels: Sequence[str], api_key: str | None = None
) -> list[str]:
    """One Exchange subscribe message for all channels, always with ``heartbeat`` (its
    ``last_trade_id`` reveals a missed last trade even when no further trade arrives)."""
    names = [_EXCHANGE_CHANNELS[c] for c in channels if c in _EXCHANGE_CHANNELS]
    unknown = [c for c in channels if c not in _EXCHANGE_CHANNELS]
    if unknown:
        raise ValueError(f"unknown channels {unknown}; expected {sorted(_EXCHANGE_CHANNELS)}")
    names.append("heartbeat")
    return [
        msgspec.json.encode({"type": "subscribe", "product_ids": list(symbols), "channels": names}).decode()
    ]


class _Match(msgspec.Struct, gc=False, tag_field="type", tag="match"):
    trade_id: int
    product_id: str
    price: str
    size: str
    side: str
    time: str
    sequence: int | None = None


class _LastMatch(_Match, tag="last_match"):
    pass


class _Ticker(msgspec.Struct, gc=False, tag_field="type", tag="ticker"):
    product_id: str
    sequence: int | None = None
    price: str | None = None  # the last trade's price: not part of the quote, but a ticker with a
    last_size: str | None = None  # malformed one is a malformed message, and is dead-lettered
    best_bid: str | None = None
    best_bid_size: str | None = None
    best_ask: str | None = None
    best_ask_size: str | None = None
    time: str | None = None
    trade_id: int | None = None


class _ExHeartbeat(msgspec.Struct, gc=False, tag_field="type", tag="heartbeat"):
    product_id: str | None = None
    sequence: int | None = None
    last_trade_id: int | None = None
    time: str | None = None


class _Subscriptions(msgspec.Struct, gc=False, tag_field="type", tag="subscriptions"):
    channels: list[Any] = []


class _Error(msgspec.Struct, gc=False, tag_field="type", tag="error"):
    message: str = ""
    reason: str | None = None


_ExchangeMessage = _Match | _LastMatch | _Ticker | _ExHeartbeat | _Subscriptions | _Error
_exchange_decoder = msgspec.json.Decoder(_ExchangeMessage)
_KNOWN_EXCHANGE_TYPES = {"match", "last_match", "ticker", "heartbeat", "subscriptions", "error"}
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


def _unknown_or_bad(
    venue: str,
    frame: str | bytes,
    exc: Exception,
    known: set[str],
    tag: str,
    receive_ts_ns: int,
    connection_id: str,
) -> ParseResult:
    """A failed typed decode: a well-formed message of a type we do not handle is not bad data."""
    try:
        generic = msgspec.json.decode(frame)
    except msgspec.DecodeError as json_exc:
        return dead(venue, f"invalid JSON: {json_exc}", as_bytes(frame), receive_ts_ns, connection_id)
    if not isinstance(generic, dict):
        return dead(
            venue,
            f"expected a JSON object, got {type(generic).__name__}",
            as_bytes(frame),
            receive_ts_ns,
            connection_id,
        )
    kind = generic.get(tag)
    if kind is None:
        return dead(venue, f"missing field {tag!r}", as_bytes(frame), receive_ts_ns, connection_id)
    if isinstance(kind, str) and kind not in known:
        return ParseResult(events=[Unhandled(venue=venue, kind=kind)])
    return dead(venue, f"{kind}: {decode_error_reason(exc)}", as_bytes(frame), receive_ts_ns, connection_id)


def _parse(
    frame: str | bytes, receive_ts_ns: int, connection_id: str = "", receive_mono_ns: int = 0
) -> ParseResult:
    """Parse one Coinbase Exchange frame."""
    try:
        msg = _exchange_decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _unknown_or_bad(VENUE, frame, exc, _KNOWN_EXCHANGE_TYPES, "type", receive_ts_ns, connection_id)
    try:
        if type(msg) is _Match or type(msg) is _LastMatch:
            aggressor = _MAKER_SIDE_TO_AGGRESSOR.get(msg.side)
            if aggressor is None:
                raise _Bad(f"field 'side' must be 'buy' or 'sell', got {msg.side!r}")
            trade = _replace(
                _TRADE,
                symbol=msg.product_id,
                venue_symbol=msg.product_id,
                trade_id=str(msg.trade_id),
                price=_dec(msg.price, "price"),
                size=_dec(msg.size, "size"),
                aggressor=aggressor,
                venue_side_raw=msg.side,
                exchange_ts_ns=_time(msg.time),
                receive_ts_ns=receive_ts_ns,
                receive_mono_ns=receive_mono_ns,
                seq=msg.trade_id,
                is_replay=type(msg) is _LastMatch,
                connection_id=connection_id,
            )
            return ParseResult([trade])
        if type(msg) is _Ticker:
            for name, text in (("price", msg.price), ("last_size", msg.last_size)):
                value = None if text is None else _dec(text, name)
                if value is not None and not (value.is_finite() and value > 0):
                    raise _Bad(f"ticker {name} is not a positive number: {text!r}")
            if msg.best_bid is None and msg.best_ask is None:
                return ParseResult(events=[Unhandled(venue=VENUE, kind="ticker without best bid/ask")])
            quote = Quote(
                venue=VENUE,
                symbol=msg.product_id,
                venue_symbol=msg.product_id,
                bid_px=_opt_dec(msg.best_bid, "best_bid"),
                bid_sz=_opt_dec(msg.best_bid_size, "best_bid_size"),
                ask_px=_opt_dec(msg.best_ask, "best_ask"),
                ask_sz=_opt_dec(msg.best_ask_size, "best_ask_size"),
                exchange_ts_ns=None if msg.time is None else _time(msg.time),  # the triggering trade's time
                receive_ts_ns=receive_ts_ns,
                receive_mono_ns=receive_mono_ns,
                seq=msg.sequence,
                seq_scope="instrument",
                gapless=False,  # the sequence is shared with other channels
                connection_id=connection_id,
            )
            return ParseResult(quotes=[quote])
        if type(msg) is _ExHeartbeat:
            return ParseResult(
                events=[
                    Heartbeat(
                        venue=VENUE,
                        symbol=msg.product_id,
                        last_trade_id=msg.last_trade_id,
                        sequence=msg.sequence,
                        ts_ns=None if msg.time is None else _time(msg.time),
                    )
                ]
            )
        if type(msg) is _Subscriptions:
            return ParseResult(
                events=[SubscriptionAck(venue=VENUE, detail=msgspec.json.encode(msg.channels).decode())]
            )
        assert type(msg) is _Error
        message = msg.message if not msg.reason else f"{msg.message}: {msg.reason}"
        return ParseResult(events=[ErrorReply(venue=VENUE, message=message)])
    except _Bad as exc:
        return dead(VENUE, f"{_tag_of(msg)}: {exc}", as_bytes(frame), receive_ts_ns, connection_id)


def _tag_of(msg: object) -> str:
    return type(msg).__struct_config__.tag or type(msg).__name__  # type: ignore[attr-defined]


# --- Advanced Trade WebSocket ---------------------------------------------------------------------


def at_subscribe_messages(
    symbols: Sequence[str], channels: Sequence[str], api_key: str | None = None
) -> list[str]:
    """Advanced Trade takes one channel per subscribe message; ``heartbeats`` keeps quiet channels
    from being closed after 60-90 s without updates."""
    out = []
    for channel in channels:
        if channel not in _AT_CHANNELS:
            raise ValueError(f"unknown channel {channel!r}; expected one of {sorted(_AT_CHANNELS)}")
        out.append({"type": "subscribe", "product_ids": list(symbols), "channel": _AT_CHANNELS[channel]})
    out.append({"type": "subscribe", "channel": "heartbeats"})
    return [msgspec.json.encode(m).decode() for m in out]


class _Envelope(msgspec.Struct, gc=False):
    channel: str | None = None
    timestamp: str | None = None
    sequence_num: int | None = None
    events: list[msgspec.Raw] | None = None
    type: str | None = None  # only on error replies, which have no envelope
    message: str | None = None
    reason: str | None = None


class _ATEvent(msgspec.Struct, gc=False):
    type: str | None = None
    trades: list[msgspec.Raw] | None = None
    tickers: list[msgspec.Raw] | None = None
    subscriptions: dict[str, Any] | None = None
    heartbeat_counter: int | str | None = None
    current_time: str | None = None


class _ATTrade(msgspec.Struct, gc=False):
    trade_id: str | int
    product_id: str
    price: str
    size: str
    side: str
    time: str


class _ATTicker(msgspec.Struct, gc=False):
    product_id: str
    best_bid: str | None = None
    best_bid_quantity: str | None = None
    best_ask: str | None = None
    best_ask_quantity: str | None = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_at_event_decoder = msgspec.json.Decoder(_ATEvent)
_at_trade_decoder = msgspec.json.Decoder(_ATTrade)
_at_ticker_decoder = msgspec.json.Decoder(_ATTicker)
_AT_TRADE = msgspec.structs.replace(_TRADE, venue=VENUE_AT, seq_scope="connection", gapless=True)


def _parse_advanced_trade(
    frame: str | bytes, receive_ts_ns: int, connection_id: str = "", receive_mono_ns: int = 0
) -> ParseResult:
    """Parse one Coinbase Advanced Trade frame; one bad trade or ticker becomes one dead letter."""
    try:
        env = _envelope_decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return dead(VENUE_AT, decode_error_reason(exc), as_bytes(frame), receive_ts_ns, connection_id)
    if env.channel is None:
        if env.type == "error":
            message = env.message or ""
            return ParseResult(
                events=[
                    ErrorReply(venue=VENUE_AT, message=f"{message}: {env.reason}" if env.reason else message)
                ]
            )
        return dead(VENUE_AT, "missing field 'channel'", as_bytes(frame), receive_ts_ns, connection_id)
    result = ParseResult()
    if env.sequence_num is not None:
        result.events.append(
            ConnectionSequence(venue=VENUE_AT, sequence_num=env.sequence_num, channel=env.channel)
        )
    send_ns: int | None = None
    if env.timestamp is not None:
        try:
            send_ns = _time(env.timestamp, "timestamp")
        except _Bad as exc:
            result.dead_letters.append(_dl(str(exc), as_bytes(frame), receive_ts_ns, connection_id))
            return result
    channel = env.channel
    if channel not in ("market_trades", "ticker", "heartbeats", "subscriptions"):
        result.events.append(Unhandled(venue=VENUE_AT, kind=channel))
        return result
    if env.events is None:
        result.dead_letters.append(
            _dl(f"{channel}: missing field 'events'", as_bytes(frame), receive_ts_ns, connection_id)
        )
        return result
    for raw_event in env.events:
        try:
            event = _at_event_decoder.decode(raw_event)
        except msgspec.ValidationError as exc:
            result.dead_letters.append(
                _dl(
                    f"{channel} event: {decode_error_reason(exc)}",
                    bytes(raw_event),
                    receive_ts_ns,
                    connection_id,
                )
            )
            continue
        if channel == "market_trades":
            for raw_trade in event.trades or ():
                try:
                    result.trades.append(
                        _at_trade(
                            raw_trade, event, env, send_ns, receive_ts_ns, receive_mono_ns, connection_id
                        )
                    )
                except (_Bad, msgspec.ValidationError) as exc:
                    reason = (
                        decode_error_reason(exc) if isinstance(exc, msgspec.ValidationError) else str(exc)
                    )
                    result.dead_letters.append(
                        _dl(f"market_trades: {reason}", bytes(raw_trade), receive_ts_ns, connection_id)
                    )
            if event.trades is None:
                result.dead_letters.append(
                    _dl(
                        "market_trades: missing field 'trades'",
                        bytes(raw_event),
                        receive_ts_ns,
                        connection_id,
                    )
                )
        elif channel == "ticker":
            for raw_ticker in event.tickers or ():
                try:
                    quote = _at_ticker(
                        raw_ticker, env, send_ns, receive_ts_ns, receive_mono_ns, connection_id
                    )
                except (_Bad, msgspec.ValidationError) as exc:
                    reason = (
                        decode_error_reason(exc) if isinstance(exc, msgspec.ValidationError) else str(exc)
                    )
                    result.dead_letters.append(
                        _dl(f"ticker: {reason}", bytes(raw_ticker), receive_ts_ns, connection_id)
                    )
                    continue
                if quote is None:
                    result.events.append(Unhandled(venue=VENUE_AT, kind="ticker without best bid/ask"))
                else:
                    result.quotes.append(quote)
        elif channel == "heartbeats":
            counter = event.heartbeat_counter
            if isinstance(counter, str):  # the prose docs show a string, production sends an int
                counter = int(counter) if counter.isdigit() else None
            result.events.append(Heartbeat(venue=VENUE_AT, counter=counter, ts_ns=send_ns))
        else:
            detail = msgspec.json.encode(event.subscriptions or {}).decode()
            result.events.append(SubscriptionAck(venue=VENUE_AT, detail=detail))
    return result


def _dl(reason: str, payload: bytes, receive_ts_ns: int, connection_id: str) -> DeadLetter:
    return DeadLetter(
        venue=VENUE_AT,
        reason=reason,
        payload=payload,
        receive_ts_ns=receive_ts_ns,
        connection_id=connection_id,
    )


def _at_trade(
    raw: msgspec.Raw,
    event: _ATEvent,
    env: _Envelope,
    send_ns: int | None,
    receive_ts_ns: int,
    receive_mono_ns: int,
    connection_id: str,
) -> Trade:
    trade = _at_trade_decoder.decode(raw)
    # Documented as the maker's side: inverted to the aggressor (section 4.6; open item 5.1).
    aggressor = _MAKER_SIDE_TO_AGGRESSOR.get(trade.side)
    if aggressor is None:
        raise _Bad(f"field 'side' must be 'BUY' or 'SELL', got {trade.side!r}")
    return _replace(
        _AT_TRADE,
        symbol=trade.product_id,  # the product received, not the one requested (-USDC aliasing)
        venue_symbol=trade.product_id,
        trade_id=str(trade.trade_id),
        price=_dec(trade.price, "price"),
        size=_dec(trade.size, "size"),
        aggressor=aggressor,
        venue_side_raw=trade.side,
        exchange_ts_ns=_time(trade.time),
        venue_send_ts_ns=send_ns,
        receive_ts_ns=receive_ts_ns,
        receive_mono_ns=receive_mono_ns,
        seq=env.sequence_num,
        is_replay=event.type == "snapshot",
        connection_id=connection_id,
    )


def _at_ticker(
    raw: msgspec.Raw,
    env: _Envelope,
    send_ns: int | None,
    receive_ts_ns: int,
    receive_mono_ns: int,
    connection_id: str,
) -> Quote | None:
    ticker = _at_ticker_decoder.decode(raw)
    if ticker.best_bid is None and ticker.best_ask is None:
        return None
    return Quote(
        venue=VENUE_AT,
        symbol=ticker.product_id,
        venue_symbol=ticker.product_id,
        bid_px=_opt_dec(ticker.best_bid, "best_bid"),
        bid_sz=_opt_dec(ticker.best_bid_quantity, "best_bid_quantity"),
        ask_px=_opt_dec(ticker.best_ask, "best_ask"),
        ask_sz=_opt_dec(ticker.best_ask_quantity, "best_ask_quantity"),
        exchange_ts_ns=None,  # no per-ticker time; the envelope's send time is below
        venue_send_ts_ns=send_ns,
        receive_ts_ns=receive_ts_ns,
        receive_mono_ns=receive_mono_ns,
        seq=env.sequence_num,
        seq_scope="connection",
        gapless=True,
        connection_id=connection_id,
    )


# --- Exchange REST --------------------------------------------------------------------------------


class _RestTrade(msgspec.Struct, gc=False):
    trade_id: int
    price: Decimal
    size: Decimal
    side: str
    time: str


_rest_trades_decoder = msgspec.json.Decoder(list[_RestTrade])
# [time (s), low, high, open, close, volume]; numbers are JSON numbers: decoded exactly from their text
_candles_decoder = msgspec.json.Decoder(list[tuple[int, Decimal, Decimal, Decimal, Decimal, Decimal]])
TRADES_PAGE = 1000  # /products/{id}/trades maximum limit
CANDLES_PER_REQUEST = 300  # /products/{id}/candles maximum


class RestClient(RestBase):
    """Coinbase Exchange ``/products/{id}/trades`` (newest first, cursor pagination: ``after=<cursor>``
    from the ``CB-AFTER`` header gives older trades, ``before``/``CB-BEFORE`` newer ones) and
    ``/products/{id}/candles`` (at most 300 per request)."""

    venue = VENUE

    def __init__(
        self, base_url: str | None = None, *, settings: Settings | None = None, **kwargs: Any
    ) -> None:
        super().__init__(base_url or (settings or get_settings()).coinbase_rest_url, **kwargs)

    def _trade(self, symbol: str, row: _RestTrade) -> Trade:
        aggressor = _MAKER_SIDE_TO_AGGRESSOR.get(row.side, "UNKNOWN")  # REST side is the maker's too
        return _replace(
            _TRADE,
            symbol=symbol,
            venue_symbol=symbol,
            trade_id=str(row.trade_id),
            price=row.price,
            size=row.size,
            aggressor=aggressor,
            venue_side_raw=row.side,
            exchange_ts_ns=rfc3339_ns(row.time),
            seq=row.trade_id,
            is_replay=True,
        )

    async def trade_pages(
        self, symbol: str, after: int | None = None, *, max_pages: int | None = None
    ) -> AsyncIterator[list[Trade]]:
        """Pages from newest (or from just below ``after``) towards older trades, each ascending."""
        cursor: str | None = None if after is None else str(after)
        pages = 0
        while max_pages is None or pages < max_pages:
            body, headers = await self.get(
                f"/products/{symbol}/trades", {"limit": TRADES_PAGE, "after": cursor}
            )
            rows = _rest_trades_decoder.decode(body)
            pages += 1
            if not rows:
                return
            yield sorted((self._trade(symbol, r) for r in rows), key=lambda t: t.seq or 0)
            # Only an empty page ends the walk: a short page can also mean the cursor was above the
            # newest trade (the API returns what exists below it), not that history is exhausted.
            next_cursor = headers.get("CB-AFTER") or str(min(r.trade_id for r in rows))
            if next_cursor == cursor:
                return
            cursor = next_cursor

    async def trades_by_id(self, symbol: str, first_id: int, last_id: int) -> list[Trade]:
        """Trades ``first_id..last_id`` inclusive, ascending (cursor starts just above ``last_id``)."""
        out: list[Trade] = []
        async for page in self.trade_pages(symbol, after=last_id + 1):
            out.extend(t for t in page if t.seq is not None and first_id <= t.seq <= last_id)
            if page[0].seq is not None and page[0].seq <= first_id:
                break
        out.sort(key=lambda t: t.seq or 0)
        return out

    async def _newest_below(self, symbol: str, cursor: int | None) -> Trade | None:
        """The newest trade with id below ``cursor`` (one ``after=cursor&limit=1`` request), or
        the newest of all for ``cursor=None``."""
        body, _ = await self.get(f"/products/{symbol}/trades", {"limit": 1, "after": cursor})
        rows = _rest_trades_decoder.decode(body)
        return self._trade(symbol, rows[0]) if rows else None

    async def first_id_at(self, symbol: str, ts_ns: int, hi_id: int) -> int:
        """The smallest trade id whose time is at or after ``ts_ns``, searching below ``hi_id``
        (whose time must be at or after it). Gallops back from ``hi_id`` in doubling steps, then
        bisects: ~2 log2(distance / 1000) requests for any history depth, where walking back page by
        page would take one request per 1000 trades, and no id far older than needed is asked for."""
        hi, step = hi_id, TRADES_PAGE
        while True:
            probe = hi - step
            if probe < 1:
                lo = 1
                break
            trade = await self._newest_below(symbol, probe + 1)
            if trade is None or trade.seq is None:  # nothing at or below probe: history starts later
                lo = probe + 1
                break
            if trade.exchange_ts_ns < ts_ns:
                lo = trade.seq + 1
                break
            hi, step = trade.seq, step * 2
        while lo < hi:
            mid = (lo + hi) // 2
            trade = await self._newest_below(symbol, mid + 1)
            if trade is None or trade.seq is None or trade.exchange_ts_ns < ts_ns:
                lo = mid + 1 if trade is None or trade.seq is None else max(mid, trade.seq) + 1
            else:
                hi = trade.seq
        return lo

    async def trades(
        self, symbol: str, start_ns: int, end_ns: int, *, max_pages: int | None = None
    ) -> AsyncIterator[list[Trade]]:
        """Trades in ``[start_ns, end_ns)``; each page ascending, pages newest first.

        The API pages by trade id only, newest first. A window within the newest page is served from
        it; an older one first finds the id at ``end_ns`` by bisection, then walks back from there.
        """
        newest = await self._newest_below(symbol, None)
        if newest is None or newest.seq is None:
            return
        after: int | None = None
        if newest.exchange_ts_ns >= end_ns:
            after = await self.first_id_at(symbol, end_ns, newest.seq)  # ids below: time < end_ns
        async for page in self.trade_pages(symbol, after=after, max_pages=max_pages):
            in_range = [t for t in page if start_ns <= t.exchange_ts_ns < end_ns]
            if in_range:
                yield in_range
            if page[0].exchange_ts_ns < start_ns:
                return

    async def bars_1m(self, symbol: str, start_ns: int, end_ns: int) -> list[Bar]:
        """1-minute candles starting in ``[start_ns, end_ns)``, ascending. Candles carry no trade
        count or VWAP: ``trade_count`` is 0 and ``vwap`` None."""
        bars: dict[int, Bar] = {}
        window_ns = CANDLES_PER_REQUEST * NS_PER_MIN
        cursor = start_ns - start_ns % NS_PER_MIN
        while cursor < end_ns:
            window_end = min(cursor + window_ns, end_ns)
            body, _ = await self.get(
                f"/products/{symbol}/candles",
                {
                    "granularity": 60,
                    "start": format_rfc3339_ns(cursor, 0),
                    "end": format_rfc3339_ns(window_end, 0),
                },
            )
            for time_s, low, high, open_, close, volume in _candles_decoder.decode(body):
                ts_ns = time_s * NS_PER_S
                if start_ns <= ts_ns < end_ns:
                    bars[ts_ns] = Bar(
                        venue=VENUE,
                        symbol=symbol,
                        ts_ns=ts_ns,
                        open=open_,
                        high=high,
                        low=low,
                        close=close,
                        volume=volume,
                        vwap=None,
                        trade_count=0,
                    )
            cursor = window_end
        return [bars[k] for k in sorted(bars)]


# The public parsers: anything unforeseen becomes a dead letter, never an exception.
parse = never_raises(VENUE, _parse)
parse_advanced_trade = never_raises(VENUE_AT, _parse_advanced_trade)

__all__ = [
    "VENUE",
    "VENUE_AT",
    "RestClient",
    "at_subscribe_messages",
    "parse",
    "parse_advanced_trade",
    "subscribe_messages",
    "ws_url",
]
