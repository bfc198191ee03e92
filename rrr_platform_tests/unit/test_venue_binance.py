"""Binance parsing: frames written from exchange-protocols.md section 1, values computed by hand."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from rrr_platform.market.types import BINANCE
from rrr_platform.venues import binance
from rrr_platform.venues.base import ErrorReply, ServerShutdown, SubscriptionAck, Unhandled

RECV = 1767225600131522874
MONO = 88231440012

TRADE = (
    '{"e":"trade","E":1767225600123,"s":"BTCUSDT","t":5123456789,"p":"94210.01000000",'
    '"q":"0.00350000","T":1767225600121,"m":true,"M":true}'
)
AGG = (
    '{"e":"aggTrade","E":1767225600123,"s":"BTCUSDT","a":3012345678,"p":"94210.01000000",'
    '"q":"0.01200000","f":5123456780,"l":5123456789,"T":1767225600121,"m":false,"M":true}'
)
BOOK = (
    '{"u":62345678901,"s":"BTCUSDT","b":"94210.00000000","B":"1.25300000",'
    '"a":"94210.01000000","A":"0.40000000"}'
)


def combined(stream: str, event: str) -> str:
    return f'{{"stream":"{stream}","data":{event}}}'


def test_raw_trade_maps_every_field() -> None:
    result = binance.parse(TRADE, RECV, "bn-2", MONO)
    assert not result.dead_letters and not result.events and not result.quotes
    (trade,) = result.trades
    assert trade.venue == BINANCE
    assert trade.symbol == "BTC-USDT"
    assert trade.venue_symbol == "BTCUSDT"
    assert trade.trade_id == "5123456789"
    assert trade.trade_id_kind == "trade"
    assert trade.price == Decimal("94210.01") and str(trade.price) == "94210.01000000"
    assert trade.size == Decimal("0.0035")
    assert trade.aggressor == "SELL"  # m=true: the buyer was the maker
    assert trade.venue_side_raw == "m=true"
    assert trade.exchange_ts_ns == 1_767_225_600_121_000_000
    assert trade.venue_send_ts_ns == 1_767_225_600_123_000_000
    assert trade.vendor_recv_ts_ns is None
    assert trade.receive_ts_ns == RECV and trade.receive_mono_ns == MONO
    assert (trade.seq, trade.seq_scope, trade.gapless) == (5123456789, "instrument", True)
    assert trade.connection_id == "bn-2"
    assert trade.is_replay is False and trade.conditions is None and trade.source_exchange is None


def test_combined_trade_equals_raw_and_bytes_equal_str() -> None:
    raw = binance.parse(TRADE, RECV, "c", MONO).trades[0]
    wrapped = binance.parse(combined("btcusdt@trade", TRADE).encode(), RECV, "c", MONO).trades[0]
    assert wrapped == raw


def test_a_json_number_where_binance_sends_a_decimal_string_is_a_wrong_type() -> None:
    for frame in (
        TRADE.replace('"p":"94210.01000000"', '"p":94210.010'),
        TRADE.replace('"q":"', '"q":1, "x":"'),
    ):
        result = binance.parse(frame, RECV)
        assert not result.trades
        assert "Expected `str | null`" in result.dead_letters[0].reason
    # Whitespace around a proper string is no reason to reject it.
    (trade,) = binance.parse(TRADE.replace('"p":"94210.01000000"', '"p" : "94210.010"'), RECV).trades
    assert str(trade.price) == "94210.010"


def test_buyer_taker_is_buy() -> None:
    (trade,) = binance.parse(TRADE.replace('"m":true', '"m":false'), RECV).trades
    assert trade.aggressor == "BUY" and trade.venue_side_raw == "m=false"


def test_microsecond_mode_times() -> None:
    frame = TRADE.replace("1767225600123", "1767225600123456").replace("1767225600121", "1767225600121987")
    (trade,) = binance.parse(combined("btcusdt@trade", frame), RECV).trades
    assert trade.exchange_ts_ns == 1_767_225_600_121_987_000
    assert trade.venue_send_ts_ns == 1_767_225_600_123_456_000


def test_agg_trade() -> None:
    (trade,) = binance.parse(combined("btcusdt@aggTrade", AGG), RECV).trades
    assert trade.trade_id == "3012345678" and trade.trade_id_kind == "aggregate"
    assert (trade.seq, trade.gapless) == (3012345678, True)
    assert trade.size == Decimal("0.012") and trade.aggressor == "BUY"


@pytest.mark.parametrize("frame", [BOOK, combined("btcusdt@bookTicker", BOOK)])
def test_book_ticker_quote(frame: str) -> None:
    result = binance.parse(frame, RECV, "bn-1", MONO)
    (quote,) = result.quotes
    assert quote.symbol == "BTC-USDT" and quote.venue_symbol == "BTCUSDT"
    assert (quote.bid_px, quote.bid_sz) == (Decimal("94210"), Decimal("1.253"))
    assert (quote.ask_px, quote.ask_sz) == (Decimal("94210.01"), Decimal("0.4"))
    assert quote.exchange_ts_ns is None  # spot bookTicker has no time
    assert quote.book_update_id == 62345678901
    assert (quote.seq, quote.seq_scope, quote.gapless) == (62345678901, "instrument", False)
    assert quote.receive_ts_ns == RECV and quote.receive_mono_ns == MONO and quote.connection_id == "bn-1"
    assert quote.ts_ns == RECV


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"result":null,"id":1}', SubscriptionAck(venue=BINANCE, detail="", request_id="1")),
        (
            '{"result":["btcusdt@trade"],"id":"abc"}',
            SubscriptionAck(venue=BINANCE, detail='["btcusdt@trade"]', request_id="abc"),
        ),
        (
            '{"error":{"code":2,"msg":"Invalid request: unknown stream"},"id":7}',
            ErrorReply(venue=BINANCE, message="Invalid request: unknown stream", code=2, request_id="7"),
        ),
        ('{"code":3,"msg":"Invalid JSON"}', ErrorReply(venue=BINANCE, message="Invalid JSON", code=3)),
        (
            '{"e":"serverShutdown","E":1770000000000}',
            ServerShutdown(venue=BINANCE, ts_ns=1770000000000000000),
        ),
        (
            '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770000000000}}',
            ServerShutdown(venue=BINANCE, ts_ns=1770000000000000000),
        ),
        (
            '{"e":"depthUpdate","E":1767225600200,"s":"BTCUSDT","U":62345678902,"u":62345678950,'
            '"b":[["94210.00000000","1.10000000"]],"a":[["94210.01000000","0.35000000"]]}',
            Unhandled(venue=BINANCE, kind="depthUpdate"),
        ),
        (
            '{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1767225601000,"s":"BTCUSDT",'
            '"k":{"t":1767225600000,"i":"1m","o":"94200.0","x":false}}}',
            Unhandled(venue=BINANCE, kind="kline"),
        ),
        (
            '{"lastUpdateId":160,"bids":[["0.0024","10"]],"asks":[["0.0026","100"]]}',
            Unhandled(venue=BINANCE, kind="depthSnapshot"),
        ),
    ],
)
def test_control_messages(frame: str, expected: object) -> None:
    result = binance.parse(frame, RECV)
    assert result.events == [expected]
    assert not result.trades and not result.quotes and not result.dead_letters


@pytest.mark.parametrize(
    ("frame", "reason_part"),
    [
        ('{"e":"trade","s":"BTCUSDT"', "invalid JSON"),
        ("", "invalid JSON"),
        (b"\xff\xfe{}", "invalid JSON"),
        ("[1,2]", "Expected `object`, got `array`"),
        ('"trade"', "Expected `object`, got `str`"),
        (TRADE.replace('"p":"94210.01000000"', '"p":true'), "got `bool` - at `$.p`"),
        (TRADE.replace('"t":5123456789', '"t":"5123456789"'), "at `$.t`"),
        (TRADE.replace('"m":true', '"m":"yes"'), "at `$.m`"),
        (TRADE.replace('"p":"94210.01000000",', ""), "trade: missing field 'p'"),
        (TRADE.replace('"q":"0.00350000",', ""), "trade: missing field 'q'"),
        (TRADE.replace('"T":1767225600121,', ""), "trade: missing field 'T'"),
        (TRADE.replace('"m":true,', ""), "trade: missing field 'm'"),
        (TRADE.replace('"t":5123456789,', ""), "trade: missing field 't'"),
        (TRADE.replace('"s":"BTCUSDT",', ""), "trade: missing field 's'"),
        (TRADE.replace('"p":"94210.01000000"', '"p":"abc"'), "is not a decimal"),
        (TRADE.replace('"q":"0.00350000"', '"q":[1]'), "at `$.q`"),
        (TRADE.replace("BTCUSDT", "FOOBAR"), "unknown symbol 'FOOBAR'"),
        (AGG.replace('"a":3012345678', '"a":"3012345678"'), "aggTrade: field 'a' must be an integer id"),
        (BOOK.replace(',"A":"0.40000000"', ""), "bookTicker: missing field 'A'"),
        (BOOK.replace('"a":"94210.01000000"', '"a":94210'), "bookTicker: field 'a' must be a decimal string"),
        ('{"stream":"btcusdt@trade"}', "combined frame without 'data'"),
        ('{"stream":"btcusdt@trade","data":5}', "at `$.data`"),
        ('{"hello":"world"}', "unrecognised message"),
    ],
)
def test_bad_frames_become_dead_letters(frame: str | bytes, reason_part: str) -> None:
    result = binance.parse(frame, RECV, "bn-9")
    assert not result.trades and not result.quotes and not result.events
    (letter,) = result.dead_letters
    assert reason_part in letter.reason, letter.reason
    assert letter.payload == (frame if isinstance(frame, bytes) else frame.encode())
    assert letter.venue == BINANCE and letter.receive_ts_ns == RECV and letter.connection_id == "bn-9"


def test_truncated_frames_never_raise() -> None:
    frame = combined("btcusdt@trade", TRADE)
    for cut in range(len(frame)):
        result = binance.parse(frame[:cut], RECV)
        assert len(result.dead_letters) == 1 and not result.trades


def test_registered_symbol_overrides_heuristic_split() -> None:
    binance.register_symbol("WEIRDUSD1", "WEIRD-USD1")
    (trade,) = binance.parse(TRADE.replace("BTCUSDT", "WEIRDUSD1"), RECV).trades
    assert trade.symbol == "WEIRD-USD1"


def test_ws_url_and_subscriptions() -> None:
    url = binance.ws_url("wss://stream.binance.com:9443/", ["BTC-USDT", "ETH-BTC"], ["trades", "quotes"])
    assert url == (
        "wss://stream.binance.com:9443/stream?streams="
        "btcusdt@trade/ethbtc@trade/btcusdt@bookTicker/ethbtc@bookTicker"
    )
    assert binance.ws_url("ws://h/binance", ["BTC-USDT"], ["trades"], time_unit="microsecond").endswith(
        "/binance/stream?streams=btcusdt@trade&timeUnit=MICROSECOND"
    )
    assert binance.subscribe_messages(["BTC-USDT"], ["trades"]) == []
    request = json.loads(binance.subscribe_request(["BTC-USDT"], ["trades", "quotes"], request_id=4))
    assert request == {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "btcusdt@bookTicker"], "id": 4}
    with pytest.raises(ValueError, match="unknown channel"):
        binance.ws_url("ws://h", ["BTC-USDT"], ["depth"])


def mutations(seed_frames: list[str], count: int, seed: int) -> list[bytes]:
    """Random byte flips, deletions, insertions and splices of valid frames."""
    import random

    rng = random.Random(seed)
    alphabet = b'{}[]":,-.0123456789eEtrufalsn \\x'
    out = []
    for _ in range(count):
        frame = bytearray(rng.choice(seed_frames).encode())
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(frame))
            op = rng.randrange(3)
            if op == 0:
                frame[pos] = rng.choice(alphabet)
            elif op == 1:
                del frame[pos]
            else:
                frame.insert(pos, rng.choice(alphabet))
        out.append(bytes(frame))
    return out


def test_fuzzed_frames_never_raise_and_nothing_is_lost() -> None:
    seeds = [TRADE, AGG, BOOK, combined("btcusdt@trade", TRADE), combined("btcusdt@bookTicker", BOOK)]
    seeds += ['{"result":null,"id":1}', '{"e":"serverShutdown","E":1770000000000}']
    for frame in mutations(seeds, 3000, seed=1):
        result = binance.parse(frame, RECV)
        assert len(result) >= 1  # a record, an event or a dead letter: never nothing, never an exception


@pytest.mark.parametrize("frame", [None, 42, bytearray(TRADE.encode()), memoryview(TRADE.encode())])
def test_frames_of_other_python_types(frame: object) -> None:
    result = binance.parse(frame, RECV)  # type: ignore[arg-type]
    if isinstance(frame, bytearray | memoryview):
        assert len(result.trades) == 1
    else:
        assert "not text or bytes" in result.dead_letters[0].reason


@pytest.mark.parametrize(
    "frame",
    [
        '{ "stream":"btcusdt@trade","data":' + TRADE + "}",
        '{"data":' + TRADE + ',"stream":"btcusdt@trade"}',
        '{"data":' + BOOK + ',"stream":"btcusdt@bookTicker"}',
    ],
)
def test_wrapped_events_in_any_key_order_or_spacing(frame: str) -> None:
    result = binance.parse(frame, RECV)
    assert len(result.trades) + len(result.quotes) == 1 and not result.events and not result.dead_letters
