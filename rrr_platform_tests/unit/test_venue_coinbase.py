"""Coinbase Exchange and Advanced Trade parsing: frames from exchange-protocols.md section 2."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from rrr_platform.market.types import COINBASE, COINBASE_AT
from rrr_platform.venues import coinbase
from rrr_platform.venues.base import ConnectionSequence, ErrorReply, Heartbeat, SubscriptionAck, Unhandled

RECV = 1772463845301877120
MONO = 91234001122

MATCH = (
    '{"type":"match","trade_id":734680346,"sequence":93526013154,'
    '"maker_order_id":"ac928c66-ca53-498f-9c13-a110027a60e8","taker_order_id":"132fb6ae-456b-4654-b4e0-d681ac05cea1",'
    '"time":"2026-03-02T15:04:05.287312Z","product_id":"BTC-USD","size":"0.001389","price":"94210.01","side":"sell"}'
)
TICKER = (
    '{"type":"ticker","sequence":93526013154,"product_id":"BTC-USD","price":"94210.01","open_24h":"92800.12",'
    '"volume_24h":"9758.367227","low_24h":"92001.5","high_24h":"95000","volume_30d":"539864.07776",'
    '"best_bid":"94210","best_bid_size":"0.03164","best_ask":"94210.01","best_ask_size":"0.00155","side":"buy",'
    '"time":"2026-03-02T15:04:05.287312Z","trade_id":734680346,"last_size":"0.001389"}'
)
HEARTBEAT = (
    '{"type":"heartbeat","sequence":93526013160,"last_trade_id":734680346,"product_id":"BTC-USD",'
    '"time":"2026-03-02T15:04:06.000301Z"}'
)
AT_TRADES = (
    '{"channel":"market_trades","client_id":"","timestamp":"2026-03-02T15:04:05.4Z","sequence_num":45,'
    '"events":[{"type":"update","trades":[{"trade_id":"912345678","product_id":"BTC-USD","price":"94210.01",'
    '"size":"0.0021","side":"SELL","time":"2026-03-02T15:04:05.287312Z"}]}]}'
)


# --- Exchange ---------------------------------------------------------------------------------------


def test_match_maps_every_field() -> None:
    result = coinbase.parse(MATCH, RECV, "cbx-1", MONO)
    assert not result.dead_letters and not result.events
    (trade,) = result.trades
    assert trade.venue == COINBASE
    assert (trade.symbol, trade.venue_symbol) == ("BTC-USD", "BTC-USD")
    assert trade.trade_id == "734680346"
    assert trade.price == Decimal("94210.01") and trade.size == Decimal("0.001389")
    assert trade.aggressor == "BUY"  # maker side sell: the taker bought
    assert trade.venue_side_raw == "sell"
    assert trade.exchange_ts_ns == 1_772_463_845_287_312_000
    assert trade.venue_send_ts_ns is None
    assert (trade.seq, trade.seq_scope, trade.gapless) == (734680346, "instrument", True)
    assert trade.receive_ts_ns == RECV and trade.receive_mono_ns == MONO and trade.connection_id == "cbx-1"
    assert trade.is_replay is False


def test_last_match_is_replay_and_buy_maker_is_sell() -> None:
    frame = MATCH.replace('"type":"match"', '"type":"last_match"').replace('"side":"sell"', '"side":"buy"')
    (trade,) = coinbase.parse(frame.encode(), RECV).trades
    assert trade.is_replay is True and trade.aggressor == "SELL"


def test_ticker_quote() -> None:
    (quote,) = coinbase.parse(TICKER, RECV, "cbx-1", MONO).quotes
    assert (quote.bid_px, quote.bid_sz) == (Decimal("94210"), Decimal("0.03164"))
    assert (quote.ask_px, quote.ask_sz) == (Decimal("94210.01"), Decimal("0.00155"))
    assert quote.exchange_ts_ns == 1_772_463_845_287_312_000
    assert (quote.seq, quote.seq_scope, quote.gapless) == (93526013154, "instrument", False)


def test_old_ticker_without_sizes_keeps_them_unknown() -> None:
    frame = TICKER.replace('"best_bid_size":"0.03164",', "").replace('"best_ask_size":"0.00155",', "")
    (quote,) = coinbase.parse(frame, RECV).quotes
    assert quote.bid_sz is None and quote.ask_sz is None and quote.bid_px == Decimal("94210")


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            HEARTBEAT,
            Heartbeat(
                venue=COINBASE,
                symbol="BTC-USD",
                last_trade_id=734680346,
                sequence=93526013160,
                ts_ns=1_772_463_846_000_301_000,
            ),
        ),
        (
            '{"type":"subscriptions","channels":[{"name":"matches","product_ids":["BTC-USD"]}]}',
            SubscriptionAck(venue=COINBASE, detail='[{"name":"matches","product_ids":["BTC-USD"]}]'),
        ),
        (
            '{"type":"error","message":"Failed to subscribe","reason":"BTC-XYZ is not a valid product"}',
            ErrorReply(venue=COINBASE, message="Failed to subscribe: BTC-XYZ is not a valid product"),
        ),
        (
            '{"type":"l2update","product_id":"BTC-USD","time":"2026-03-02T15:04:05.481102Z","changes":[]}',
            Unhandled(venue=COINBASE, kind="l2update"),
        ),
        (
            '{"type":"ticker","product_id":"BTC-USD","price":"1"}',
            Unhandled(venue=COINBASE, kind="ticker without best bid/ask"),
        ),
    ],
)
def test_exchange_control_messages(frame: str, expected: object) -> None:
    result = coinbase.parse(frame, RECV)
    assert result.events == [expected]
    assert not result.trades and not result.quotes and not result.dead_letters


@pytest.mark.parametrize(
    ("frame", "reason_part"),
    [
        ("{not json", "invalid JSON"),
        ("[]", "expected a JSON object, got list"),
        ('{"product_id":"BTC-USD"}', "missing field 'type'"),
        (
            MATCH.replace('"trade_id":734680346', '"trade_id":"734680346"'),
            "match: invalid field: Expected `int`",
        ),
        (MATCH.replace('"price":"94210.01",', ""), "missing required field `price`"),
        (MATCH.replace('"price":"94210.01"', '"price":"1e"'), "match: field 'price' is not a decimal"),
        (MATCH.replace('"side":"sell"', '"side":"up"'), "field 'side' must be 'buy' or 'sell'"),
        (MATCH.replace("2026-03-02T15:04:05.287312Z", "2026-03-02 15:04"), "field 'time' is not an RFC 3339"),
        (
            MATCH.replace("2026-03-02T15:04:05.287312Z", "2026-02-30T15:04:05Z"),
            "field 'time' is not an RFC 3339",
        ),
        (TICKER.replace('"best_ask":"94210.01"', '"best_ask":94210.01'), "ticker: invalid field"),
        (TICKER.replace('"best_bid":"94210"', '"best_bid":"x"'), "ticker: field 'best_bid' is not a decimal"),
        (HEARTBEAT.replace('"last_trade_id":734680346', '"last_trade_id":"x"'), "heartbeat: invalid field"),
    ],
)
def test_exchange_bad_frames(frame: str, reason_part: str) -> None:
    result = coinbase.parse(frame, RECV, "cbx-2")
    assert not result.trades and not result.quotes and not result.events
    (letter,) = result.dead_letters
    assert reason_part in letter.reason, letter.reason
    assert letter.payload == frame.encode() and letter.connection_id == "cbx-2" and letter.venue == COINBASE


def test_exchange_truncations_never_raise() -> None:
    for cut in range(len(MATCH)):
        result = coinbase.parse(MATCH[:cut], RECV)
        assert len(result.dead_letters) == 1


def test_exchange_subscribe_message() -> None:
    (message,) = coinbase.subscribe_messages(["BTC-USD", "ETH-USD"], ["trades", "quotes"])
    assert json.loads(message) == {
        "type": "subscribe",
        "product_ids": ["BTC-USD", "ETH-USD"],
        "channels": ["matches", "ticker", "heartbeat"],
    }
    assert coinbase.ws_url("wss://ws-feed.exchange.coinbase.com/", ["BTC-USD"], ["trades"]) == (
        "wss://ws-feed.exchange.coinbase.com"
    )
    with pytest.raises(ValueError, match="unknown"):
        coinbase.subscribe_messages(["BTC-USD"], ["level2"])


# --- Advanced Trade ---------------------------------------------------------------------------------


def test_at_market_trades() -> None:
    result = coinbase.parse_advanced_trade(AT_TRADES, RECV, "cbat-1", MONO)
    assert result.events == [ConnectionSequence(venue=COINBASE_AT, sequence_num=45, channel="market_trades")]
    (trade,) = result.trades
    assert trade.venue == COINBASE_AT and trade.symbol == "BTC-USD" and trade.trade_id == "912345678"
    assert trade.price == Decimal("94210.01") and trade.size == Decimal("0.0021")
    assert trade.aggressor == "BUY" and trade.venue_side_raw == "SELL"  # documented as the maker's side
    assert trade.exchange_ts_ns == 1_772_463_845_287_312_000
    assert trade.venue_send_ts_ns == 1_772_463_845_400_000_000
    assert (trade.seq, trade.seq_scope, trade.gapless) == (45, "connection", True)
    assert trade.is_replay is False and trade.connection_id == "cbat-1"


def test_at_snapshot_is_replay_and_nanosecond_envelope() -> None:
    frame = AT_TRADES.replace('"type":"update"', '"type":"snapshot"').replace(
        "2026-03-02T15:04:05.4Z", "2026-03-02T15:04:05.123456789Z"
    )
    (trade,) = coinbase.parse_advanced_trade(frame, RECV).trades
    assert trade.is_replay is True and trade.venue_send_ts_ns == 1_772_463_845_123_456_789


def test_at_one_bad_trade_keeps_its_neighbours() -> None:
    template = (
        '{"trade_id":"%s","product_id":"BTC-USD","price":"%s","size":"2","side":"BUY",'
        '"time":"2026-03-02T15:04:05Z"}'
    )
    good, bad, third = template % ("1", "1.5"), template % ("2", "oops"), template % ("3", "1.5")
    frame = (
        '{"channel":"market_trades","timestamp":"2026-03-02T15:04:05.4Z","sequence_num":7,'
        f'"events":[{{"type":"update","trades":[{good},{bad},{third}]}}]}}'
    )
    result = coinbase.parse_advanced_trade(frame, RECV)
    assert [t.trade_id for t in result.trades] == ["1", "3"]
    assert (
        result.trades[0].aggressor == "SELL" and result.trades[0].exchange_ts_ns == 1_772_463_845_000_000_000
    )
    (letter,) = result.dead_letters
    assert letter.payload == bad.encode() and "field 'price' is not a decimal" in letter.reason


def test_at_ticker_quote() -> None:
    frame = (
        '{"channel":"ticker","timestamp":"2026-03-02T15:04:05.2Z","sequence_num":44,"events":[{"type":"update",'
        '"tickers":[{"type":"ticker","product_id":"BTC-USD","price":"94210.01","volume_24_h":"8123.44512345",'
        '"best_bid":"94210","best_bid_quantity":"0.512","best_ask":"94210.01","best_ask_quantity":"0.044"}]}]}'
    )
    result = coinbase.parse_advanced_trade(frame, RECV)
    (quote,) = result.quotes
    assert quote.venue == COINBASE_AT
    assert (quote.bid_px, quote.bid_sz, quote.ask_px, quote.ask_sz) == (
        Decimal("94210"),
        Decimal("0.512"),
        Decimal("94210.01"),
        Decimal("0.044"),
    )
    assert quote.exchange_ts_ns is None and quote.venue_send_ts_ns == 1_772_463_845_200_000_000
    assert (quote.seq, quote.seq_scope, quote.gapless) == (44, "connection", True)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            '{"channel":"heartbeats","timestamp":"2026-03-02T15:04:06.000123Z","sequence_num":43,"events":'
            '[{"current_time":"2026-03-02 15:04:06.000098761 +0000 UTC m=+91717.525857105",'
            '"heartbeat_counter":3050}]}',
            [
                ConnectionSequence(venue=COINBASE_AT, sequence_num=43, channel="heartbeats"),
                Heartbeat(venue=COINBASE_AT, counter=3050, ts_ns=1_772_463_846_000_123_000),
            ],
        ),
        (
            '{"channel":"heartbeats","timestamp":"2026-03-02T15:04:06Z","sequence_num":44,'
            '"events":[{"heartbeat_counter":"3051"}]}',
            [
                ConnectionSequence(venue=COINBASE_AT, sequence_num=44, channel="heartbeats"),
                Heartbeat(venue=COINBASE_AT, counter=3051, ts_ns=1_772_463_846_000_000_000),
            ],
        ),
        (
            '{"channel":"subscriptions","client_id":"","timestamp":"2026-04-07T14:30:00.000000Z","sequence_num":1,'
            '"events":[{"subscriptions":{"market_trades":["BTC-USD","ETH-USD"]}}]}',
            [
                ConnectionSequence(venue=COINBASE_AT, sequence_num=1, channel="subscriptions"),
                SubscriptionAck(venue=COINBASE_AT, detail='{"market_trades":["BTC-USD","ETH-USD"]}'),
            ],
        ),
        (
            '{"channel":"l2_data","timestamp":"2026-03-02T15:04:05.5Z","sequence_num":46,"events":[]}',
            [
                ConnectionSequence(venue=COINBASE_AT, sequence_num=46, channel="l2_data"),
                Unhandled(venue=COINBASE_AT, kind="l2_data"),
            ],
        ),
        (
            '{"type":"error","message":"failure to subscribe"}',
            [ErrorReply(venue=COINBASE_AT, message="failure to subscribe")],
        ),
    ],
)
def test_at_control_messages(frame: str, expected: list[object]) -> None:
    result = coinbase.parse_advanced_trade(frame, RECV)
    assert result.events == expected
    assert not result.trades and not result.dead_letters


@pytest.mark.parametrize(
    ("frame", "reason_part"),
    [
        ("nope", "invalid JSON"),
        ('{"timestamp":"2026-03-02T15:04:05Z"}', "missing field 'channel'"),
        ('{"channel":"market_trades","sequence_num":"x","events":[]}', "at `$.sequence_num`"),
        (
            '{"channel":"market_trades","timestamp":"yesterday","sequence_num":3,"events":[]}',
            "field 'timestamp' is not an RFC 3339",
        ),
        (
            '{"channel":"market_trades","timestamp":"2026-03-02T15:04:05Z","sequence_num":3}',
            "market_trades: missing field 'events'",
        ),
        (
            '{"channel":"market_trades","timestamp":"2026-03-02T15:04:05Z","sequence_num":3,"events":[{"type":"update"}]}',
            "market_trades: missing field 'trades'",
        ),
    ],
)
def test_at_bad_frames(frame: str, reason_part: str) -> None:
    result = coinbase.parse_advanced_trade(frame, RECV)
    assert not result.trades
    (letter,) = result.dead_letters
    assert reason_part in letter.reason, letter.reason


def test_at_subscribe_messages_one_channel_each_plus_heartbeats() -> None:
    messages = [json.loads(m) for m in coinbase.at_subscribe_messages(["BTC-USD"], ["trades", "quotes"])]
    assert messages == [
        {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"},
        {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "ticker"},
        {"type": "subscribe", "channel": "heartbeats"},
    ]


def test_fast_rfc3339_agrees_with_the_general_parser() -> None:
    import random

    from rrr_platform.market.timeutil import format_rfc3339_ns, parse_rfc3339_ns
    from rrr_platform.venues.base import rfc3339_ns

    rng = random.Random(11)
    for _ in range(2000):
        ns = rng.randrange(0, 4_102_444_800 * 10**9)
        for digits in range(10):
            text = format_rfc3339_ns(ns, digits)
            assert rfc3339_ns(text) == parse_rfc3339_ns(text), text
    assert rfc3339_ns("2026-03-02T16:04:05.287312+01:00") == 1_772_463_845_287_312_000  # general path
    for bad in (
        "2026-03-02T15:04:05.Z",
        "2026-03-02T15:04:5a.1Z",
        "2026-03-02T24:00:00Z",
        "2026-03-02T15:04:61Z",
    ):
        with pytest.raises(ValueError):
            rfc3339_ns(bad)


def test_fuzzed_frames_never_raise() -> None:
    from rrr_platform_tests.unit.test_venue_binance import mutations

    for frame in mutations([MATCH, TICKER, HEARTBEAT], 2000, seed=2):
        assert len(coinbase.parse(frame, RECV)) >= 1
    for frame in mutations([AT_TRADES], 1000, seed=3):
        assert len(coinbase.parse_advanced_trade(frame, RECV)) >= 1
    assert "parser error" in coinbase.parse(None, RECV).dead_letters[0].reason  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("price", "why"),
    [
        ("56995.32", "Expected `str | null`"),
        ('"-5"', "not a positive number"),
        ('"NaN"', "not a positive number"),
    ],
)
def test_a_ticker_with_a_malformed_last_price_is_dead_lettered(price: str, why: str) -> None:
    text = (
        '{"type":"ticker","sequence":1,"product_id":"BTC-USD","price":'
        + price
        + ',"best_bid":"94210.00","best_bid_size":"0.5","best_ask":"94210.01","best_ask_size":"0.1",'
        '"time":"2026-03-02T15:04:05.287312Z"}'
    )
    result = coinbase.parse(text, RECV, "c")
    assert not result.quotes
    assert len(result.dead_letters) == 1 and why in result.dead_letters[0].reason
