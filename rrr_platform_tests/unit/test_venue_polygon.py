"""Polygon/Massive parsing: frames from exchange-protocols.md section 3, crypto and stocks."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from rrr_platform.market.types import POLYGON
from rrr_platform.venues import polygon
from rrr_platform.venues.base import SubscriptionAck, Unhandled, VenueStatus

RECV = 1767225600163004411
MONO = 99120000456

XT = (
    '{"ev":"XT","pair":"BTC-USD","p":94210.01,"t":1767225600121,"s":0.0035,"c":[2],"i":"912345678",'
    '"x":1,"r":1767225600140}'
)
XQ = (
    '{"ev":"XQ","pair":"BTC-USD","bp":94210.0,"bs":0.512,"ap":94210.01,"as":0.044,"t":1767225600130,'
    '"x":1,"r":1767225600142}'
)
T = (
    '{"ev":"T","sym":"AAPL","x":4,"i":"52983525029461","z":3,"p":227.515,"s":100,"c":[12,37],'
    '"t":1767225600121,"q":3681328,"trfi":202,"trft":1767225600119}'
)
Q = (
    '{"ev":"Q","sym":"AAPL","bx":11,"bp":227.51,"bs":3,"ax":12,"ap":227.52,"as":2,"c":1,"i":[604],'
    '"t":1767225600130,"q":50385480,"z":3}'
)


def frame(*events: str) -> str:
    return "[" + ",".join(events) + "]"


def test_crypto_trade_maps_every_field() -> None:
    result = polygon.parse(frame(XT), RECV, "pg-crypto-1", MONO)
    (trade,) = result.trades
    assert trade.venue == POLYGON and trade.symbol == "BTC-USD" and trade.venue_symbol == "BTC-USD"
    assert trade.trade_id == "912345678"
    assert trade.price == Decimal("94210.01") and trade.size == Decimal("0.0035")
    assert trade.aggressor == "BUY" and trade.venue_side_raw == "c=[2]"
    assert trade.exchange_ts_ns == 1_767_225_600_121_000_000
    assert trade.vendor_recv_ts_ns == 1_767_225_600_140_000_000
    assert trade.venue_send_ts_ns is None
    assert (trade.seq, trade.seq_scope, trade.gapless) == (None, "none", False)
    assert trade.source_exchange == "1" and trade.conditions == (2,)
    assert trade.asset_class == "crypto_spot" and trade.connection_id == "pg-crypto-1"
    assert trade.receive_mono_ns == MONO


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("94210.01", "94210.01"),
        ("0.1", "0.1"),  # float(0.1) is 0.1000000000000000055...: must not appear
        ("1.10", "1.10"),
        ("123456789012345678.123456789", "123456789012345678.123456789"),  # beyond float precision
        ("1e-8", "1E-8"),
    ],
)
def test_numbers_become_exact_decimals_from_the_token_text(token: str, expected: str) -> None:
    (trade,) = polygon.parse(frame(XT.replace('"p":94210.01', f'"p":{token}')), RECV).trades
    assert str(trade.price) == expected


def test_crypto_trade_sides_and_id_types() -> None:
    sell = XT.replace('"c":[2]', '"c":[1]').replace('"i":"912345678"', '"i":912345678')
    plain = XT.replace('"c":[2],', "")
    result = polygon.parse(frame(sell, plain), RECV)
    assert [t.aggressor for t in result.trades] == ["SELL", "UNKNOWN"]
    assert result.trades[0].trade_id == "912345678"  # a JSON number id becomes the same string


def test_crypto_trade_without_id_gets_a_deterministic_synthetic_id() -> None:
    no_id = XT.replace(',"i":"912345678"', "")
    first = polygon.parse(frame(no_id), RECV).trades[0]
    again = polygon.parse(frame(no_id), RECV + 5).trades[0]
    other = polygon.parse(frame(no_id.replace('"s":0.0035', '"s":0.0036')), RECV).trades[0]
    assert first.trade_id.startswith("syn:") and len(first.trade_id) == 20
    assert first.trade_id == again.trade_id != other.trade_id
    assert first.trade_id == polygon.synthetic_trade_id(
        "BTC-USD", 1, 1767225600121, Decimal("94210.01"), Decimal("0.0035"), [2]
    )


def test_crypto_quote() -> None:
    (quote,) = polygon.parse(frame(XQ), RECV, "pg-crypto-1", MONO).quotes
    assert (quote.bid_px, quote.bid_sz) == (Decimal("94210.0"), Decimal("0.512"))
    assert (quote.ask_px, quote.ask_sz) == (Decimal("94210.01"), Decimal("0.044"))
    assert quote.exchange_ts_ns == 1_767_225_600_130_000_000
    assert quote.vendor_recv_ts_ns == 1_767_225_600_142_000_000
    assert quote.source_exchange == "1" and quote.seq_scope == "none"


def test_stock_trade_and_quote() -> None:
    result = polygon.parse(frame(T, Q), RECV, "pg-stocks-1")
    (trade,) = result.trades
    assert trade.symbol == "AAPL" and trade.asset_class == "equity"
    assert trade.trade_id == "4:52983525029461"  # unique per (x, i)
    assert trade.price == Decimal("227.515") and trade.size == Decimal(100)
    assert trade.aggressor == "UNKNOWN"
    assert trade.exchange_ts_ns == 1_767_225_600_121_000_000
    assert (trade.seq, trade.seq_scope, trade.gapless) == (3681328, "instrument", False)
    assert trade.conditions == (12, 37) and trade.source_exchange == "4"
    (quote,) = result.quotes
    assert quote.bid_px == Decimal("227.51") and quote.ask_px == Decimal("227.52")
    assert (quote.bid_sz, quote.ask_sz) == (Decimal(300), Decimal(200))  # round lots -> shares
    assert (quote.bid_exchange, quote.ask_exchange) == ("11", "12")
    assert quote.conditions == (1, 604)
    assert (quote.seq, quote.seq_scope, quote.gapless) == (50385480, "instrument", False)
    assert quote.asset_class == "equity"


def test_mixed_frame_keeps_order_and_counts() -> None:
    result = polygon.parse(frame(XT, XQ, XT.replace("912345678", "912345679"), XQ), RECV)
    assert [t.trade_id for t in result.trades] == ["912345678", "912345679"]
    assert len(result.quotes) == 2 and not result.dead_letters


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (
            '{"ev":"status","status":"connected","message":"Connected Successfully"}',
            VenueStatus(venue=POLYGON, status="connected", message="Connected Successfully"),
        ),
        (
            '{"ev":"status","status":"auth_success","message":"authenticated"}',
            VenueStatus(venue=POLYGON, status="auth_success", message="authenticated"),
        ),
        (
            '{"ev":"status","status":"auth_failed","message":"authentication failed"}',
            VenueStatus(venue=POLYGON, status="auth_failed", message="authentication failed"),
        ),
        (
            '{"ev":"status","status":"max_connections","message":"Maximum number of connections exceeded."}',
            VenueStatus(
                venue=POLYGON, status="max_connections", message="Maximum number of connections exceeded."
            ),
        ),
        (
            '{"ev":"status","status":"success","message":"subscribed to: XT.BTC-USD"}',
            SubscriptionAck(venue=POLYGON, detail="subscribed to: XT.BTC-USD"),
        ),
        (
            '{"ev":"XA","pair":"BTC-USD","o":94150.0,"c":94210.01,"v":12.3456,"s":1767225600000,"e":1767225660000}',
            Unhandled(venue=POLYGON, kind="XA"),
        ),
        ('{"ev":"AM","sym":"AAPL","v":41100,"o":227.40}', Unhandled(venue=POLYGON, kind="AM")),
    ],
)
def test_status_and_unhandled_events(status: str, expected: object) -> None:
    result = polygon.parse(frame(status), RECV)
    assert result.events == [expected]
    assert not result.dead_letters


def test_only_auth_failed_is_fatal() -> None:
    assert VenueStatus(venue=POLYGON, status="auth_failed").is_fatal
    assert not VenueStatus(venue=POLYGON, status="max_connections").is_fatal


def test_one_bad_event_becomes_one_dead_letter_and_keeps_its_neighbours() -> None:
    bad_price = XT.replace('"p":94210.01', '"p":"abc"')
    no_pair = XT.replace('"pair":"BTC-USD",', "")
    empty_quote = '{"ev":"XQ","pair":"BTC-USD","t":1767225600130}'
    unknown = '{"ev":"LULD","T":"AAPL"}'
    result = polygon.parse(
        frame(XT, bad_price, XQ, no_pair, "42", '{"p":1}', empty_quote, unknown, T), RECV, "c"
    )
    assert [t.trade_id for t in result.trades] == ["912345678", "4:52983525029461"]
    assert len(result.quotes) == 1
    assert result.events == [Unhandled(venue=POLYGON, kind="LULD")]
    reasons = [d.reason for d in result.dead_letters]
    assert [d.payload for d in result.dead_letters] == [
        bad_price.encode(),
        no_pair.encode(),
        b"42",
        b'{"p":1}',
        empty_quote.encode(),
    ]
    assert "event 1 (XT)" in reasons[0] and "at `$.p`" in reasons[0]
    assert "missing required field `pair`" in reasons[1]
    assert reasons[2] == "event 4: expected an object, got int"
    assert reasons[3] == "event 5: missing field 'ev'"
    assert reasons[4] == "event 6: XQ: neither bid 'bp' nor ask 'ap'"
    assert all(d.connection_id == "c" and d.receive_ts_ns == RECV for d in result.dead_letters)


@pytest.mark.parametrize(
    ("text", "reason_part"),
    [
        ("[", "invalid JSON"),
        ("", "invalid JSON"),
        ('{"ev":"XT"}', "expected a JSON array of events"),
        ("[1,", "invalid JSON"),
    ],
)
def test_bad_frames(text: str, reason_part: str) -> None:
    result = polygon.parse(text, RECV)
    (letter,) = result.dead_letters
    assert reason_part in letter.reason and letter.payload == text.encode()


def test_stock_trade_with_empty_id_is_dead() -> None:
    result = polygon.parse(frame(T.replace('"i":"52983525029461"', '"i":""')), RECV)
    assert not result.trades and "empty trade id" in result.dead_letters[0].reason


def test_urls_and_auth_first() -> None:
    assert (
        polygon.ws_url("wss://socket.massive.com", ["BTC-USD"], ["trades"])
        == "wss://socket.massive.com/crypto"
    )
    assert polygon.ws_url("ws://h/polygon/stocks/", ["AAPL"], ["trades"]) == "ws://h/polygon/stocks"
    with pytest.raises(ValueError, match="cluster"):
        polygon.ws_url("ws://h/polygon/crypto", ["AAPL"], ["trades"])
    with pytest.raises(ValueError, match="one market"):
        polygon.ws_url("ws://h", ["AAPL", "BTC-USD"], ["trades"])
    auth, sub = (
        json.loads(m) for m in polygon.subscribe_messages(["BTC-USD", "ETH-USD"], ["trades", "quotes"], "k3y")
    )
    assert auth == {"action": "auth", "params": "k3y"}
    assert sub == {"action": "subscribe", "params": "XT.BTC-USD,XT.ETH-USD,XQ.BTC-USD,XQ.ETH-USD"}
    _, stocks = polygon.subscribe_messages(["AAPL"], ["trades", "quotes"], "k")
    assert json.loads(stocks)["params"] == "T.AAPL,Q.AAPL"
    with pytest.raises(ValueError, match="API key"):
        polygon.subscribe_messages(["AAPL"], ["trades"], None)


def test_fuzzed_frames_never_raise() -> None:
    from rrr_platform_tests.unit.test_venue_binance import mutations

    for mutated in mutations([frame(XT, XQ), frame(T, Q, XT)], 2000, seed=4):
        result = polygon.parse(mutated, RECV)
        assert len(result) >= 1
    assert "parser error" in polygon.parse(None, RECV).dead_letters[0].reason  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["p", "s"])
def test_a_number_sent_as_a_string_is_dead_lettered_not_coerced(field: str) -> None:
    # msgspec would happily decode "94210.01" into a Decimal field; the protocol sends numbers.
    quoted = (
        XT.replace('"p":94210.01', '"p":"94210.01"') if field == "p" else XT.replace('"s":', '"s":"1"', 1)
    )
    if field == "s":
        quoted = XT.split('"s":')[0] + '"s":"0.5",' + XT.split('"s":')[1].split(",", 1)[1]
    result = polygon.parse(frame(XT, quoted, XQ).encode(), RECV, "c")
    assert len(result.trades) == 1 and len(result.quotes) == 1
    assert [d.payload for d in result.dead_letters] == [quoted.encode()]
    assert f"at `$.{field}`" in result.dead_letters[0].reason
