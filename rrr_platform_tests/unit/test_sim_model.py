"""The simulator's market model: determinism, split invariance, exact roll-up, ids, planted signals."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from scipy import stats
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from rrr_platform.market.types import BINANCE, COINBASE, POLYGON
from rrr_platform.simulator import news as news_text
from rrr_platform.simulator.model import (
    BarBatch,
    MarketConfig,
    MarketModel,
    TradeBatch,
    format_ticks,
)

MIN = 60 * 10**9
DAY = 1440 * MIN
START = MarketConfig().start_ns
ALPHA = 0.01  # significance level of the "no signal" checks


def robust_slope_test(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """OLS slope of y on x with a heteroskedasticity-robust (HC0) t statistic; returns (t, two-sided p).

    Returns cluster in volatility, so the classical OLS standard error would be wrong.
    """
    xc, yc = x - x.mean(), y - y.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ yc) / sxx
    resid = yc - slope * xc
    se = float(np.sqrt(np.sum(xc**2 * resid**2))) / sxx
    t = slope / se
    return t, float(2 * stats.t.sf(abs(t), df=len(x) - 2))


def log_returns(bars: BarBatch) -> np.ndarray:
    return np.diff(np.log(bars.close.astype(np.float64)))


def imbalance(bars: BarBatch) -> np.ndarray:
    return 2.0 * bars.buy_volume / bars.volume - 1.0


def assert_trades_equal(a: TradeBatch, b: TradeBatch) -> None:
    assert a.instrument == b.instrument
    for name in ("ts_ns", "trade_id", "price_ticks", "size_lots", "side"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def assert_bars_equal(a: BarBatch, b: BarBatch) -> None:
    for name in ("ts_ns", "open", "high", "low", "close", "volume", "trade_count", "buy_volume",
                 "first_trade_id"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.fixture(scope="module")
def model() -> MarketModel:
    return MarketModel()


def test_instruments_and_lookup(model: MarketModel) -> None:
    assert len(model.instruments(BINANCE)) == 8
    assert len(model.instruments(COINBASE)) == 8
    assert len(model.instruments(POLYGON)) == 14
    btc = model.instrument(BINANCE, "BTCUSDT")
    assert (btc.symbol, btc.venue_symbol, btc.asset_class) == ("BTC-USDT", "BTCUSDT", "crypto_spot")
    assert model.instrument(BINANCE, "btcusdt") == btc == model.instrument(BINANCE, "BTC-USDT")
    assert model.instrument(POLYGON, "X:BTCUSD").venue_symbol == "BTC-USD"
    assert model.instrument(POLYGON, "AAPL").asset_class == "equity"
    with pytest.raises(KeyError):
        model.instrument(COINBASE, "AAPL")
    with pytest.raises(KeyError):
        model.trades(BINANCE, "NOPE-USDT", START, START + MIN)


@pytest.mark.parametrize("kwargs", [{"signal": "momentum"}, {"signal_strength": 1.5}, {"n_crypto": 99},
                                    {"n_crypto": 0, "n_equities": 0}, {"trade_rate_scale": 0.0},
                                    {"cache_hours": 0}])
def test_bad_config_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MarketConfig(**kwargs)  # type: ignore[arg-type]


def test_format_ticks_exact_decimals() -> None:
    assert format_ticks(9421001, 2) == "94210.01"
    assert format_ticks(5, 8) == "0.00000005"
    assert format_ticks(5, 8, pad_to=8) == "0.00000005"
    assert format_ticks(9421001, 2, pad_to=8) == "94210.01000000"
    assert format_ticks(42, 0) == "42"
    assert format_ticks(42, 0, pad_to=2) == "42.00"
    assert format_ticks(-150, 2) == "-1.50"
    assert "e" not in format_ticks(1, 12).lower()
    assert Decimal(format_ticks(123456789, 5)) == Decimal("1234.56789")


def test_same_seed_same_data_different_seed_different_data() -> None:
    window = (START + 2 * DAY + 5 * MIN, START + 2 * DAY + 7 * MIN)
    a, b = MarketModel(MarketConfig(seed=3)), MarketModel(MarketConfig(seed=3))
    c = MarketModel(MarketConfig(seed=4))
    assert_trades_equal(a.trades(COINBASE, "ETH-USD", *window), b.trades(COINBASE, "ETH-USD", *window))
    assert_bars_equal(a.bars_1m(POLYGON, "AAPL", *window), b.bars_1m(POLYGON, "AAPL", *window))
    assert a.news(START, START + DAY) == b.news(START, START + DAY)
    assert a.quote_at(BINANCE, "SOLUSDT", window[0] + 123) == b.quote_at(BINANCE, "SOLUSDT", window[0] + 123)
    assert not np.array_equal(a.bars_1m(POLYGON, "AAPL", *window).close,
                              c.bars_1m(POLYGON, "AAPL", *window).close)
    assert [n.title for n in a.news(START, START + DAY)] != [n.title for n in c.news(START, START + DAY)]


def test_cache_eviction_does_not_change_data(model: MarketModel) -> None:
    """Evicted days, venue days and hours are regenerated identically, in any request order."""
    tiny = MarketModel(MarketConfig(cache_days=1, cache_venue_days=1, cache_hours=1))
    windows = [(START + 3 * DAY - 90 * MIN, START + 3 * DAY + 5 * MIN), (START - DAY - 5 * MIN, START - DAY),
               (START + DAY, START + DAY + 61 * MIN)]
    for window in reversed(windows):
        tiny.trades(POLYGON, "ETH-USD", *window)
    for window in windows:
        for venue, symbol in ((POLYGON, "ETH-USD"), (BINANCE, "SOLUSDT")):
            assert_trades_equal(tiny.trades(venue, symbol, *window), model.trades(venue, symbol, *window))
            small, big = tiny.bars_1m(venue, symbol, *window), model.bars_1m(venue, symbol, *window)
            assert_bars_equal(small, big)
            np.testing.assert_array_equal(small.notional, big.notional)


def test_split_invariance_bars_and_trades(model: MarketModel) -> None:
    a, c = START + DAY - 7 * MIN - 1234, START + DAY + 4 * MIN + 999
    for split in (START + DAY, START + DAY - 3 * MIN + 17_000_123, a + 1):
        whole = model.bars_1m(COINBASE, "BTC-USD", a, c)
        left = model.bars_1m(COINBASE, "BTC-USD", a, split)
        right = model.bars_1m(COINBASE, "BTC-USD", split, c)
        joined = {k: np.concatenate([getattr(left, k), getattr(right, k)])
                  for k in ("ts_ns", "close", "volume", "first_trade_id")}
        for k, v in joined.items():
            np.testing.assert_array_equal(getattr(whole, k), v)
        tw = model.trades(COINBASE, "BTC-USD", a, c)
        tl, tr = model.trades(COINBASE, "BTC-USD", a, split), model.trades(COINBASE, "BTC-USD", split, c)
        np.testing.assert_array_equal(tw.trade_id, np.concatenate([tl.trade_id, tr.trade_id]))
        np.testing.assert_array_equal(tw.price_ticks, np.concatenate([tl.price_ticks, tr.price_ticks]))
        assert np.all(tl.ts_ns < split) and np.all(tr.ts_ns >= split)
    # A fresh model (empty caches) asked for a late window first gives the same data.
    fresh = MarketModel()
    assert_trades_equal(fresh.trades(COINBASE, "BTC-USD", START + DAY, c), model.trades(COINBASE, "BTC-USD",
                                                                                        START + DAY, c))
    assert len(model.bars_1m(BINANCE, "BTCUSDT", a, a)) == 0
    assert len(model.trades(BINANCE, "BTCUSDT", c, a)) == 0


@pytest.mark.parametrize("rate_scale", [1.0, 0.005])
def test_trades_roll_up_exactly_to_bars(rate_scale: float) -> None:
    """Count, volume, OHLC, buy volume, first id and notional of each minute's trades equal its bar.

    The low rate gives minutes of 1, 2 and 3 trades, where the roll-up has the least room.
    """
    model = MarketModel(MarketConfig(trade_rate_scale=rate_scale))
    start, end = START + DAY - 20 * MIN, START + DAY + 20 * MIN
    counts_seen: set[int] = set()
    for inst in (model.instrument(BINANCE, "BTCUSDT"), model.instrument(COINBASE, "DOGE-USD"),
                 model.instrument(POLYGON, "TSLA"), model.instrument(POLYGON, "LINK-USD")):
        bars = model.bars_1m(inst.venue, inst.symbol, start, end)
        trades = model.trades(inst.venue, inst.symbol, start, end)
        assert len(bars) == 40 and len(trades) == int(bars.trade_count.sum())
        minute = (trades.ts_ns - start) // MIN
        assert np.all(np.diff(trades.ts_ns) >= 0) and np.all(trades.ts_ns % 1000 == 0)
        assert np.all(trades.size_lots >= 1) and np.all(trades.price_ticks >= 1)
        assert set(np.unique(trades.side)) <= {-1, 1}
        for i in range(len(bars)):
            sel = minute == i
            px, sz, side = trades.price_ticks[sel], trades.size_lots[sel], trades.side[sel]
            assert len(px) == bars.trade_count[i]
            assert (px[0], px.max(), px.min(), px[-1]) == (bars.open[i], bars.high[i], bars.low[i],
                                                             bars.close[i])
            assert sz.sum() == bars.volume[i]
            assert sz[side > 0].sum() == bars.buy_volume[i]
            assert trades.trade_id[sel][0] == bars.first_trade_id[i]
            assert int(px @ sz) == bars.notional[i]
            counts_seen.add(int(bars.trade_count[i]))
    if rate_scale < 1:
        assert {1, 2, 3} <= counts_seen
    # Exact decimal rendering of the quote volume and VWAP.
    inst = bars.instrument
    assert Decimal(bars.quote_volume_str(0)) == Decimal(int(bars.notional[0])).scaleb(
        -(inst.price_decimals + inst.size_decimals))
    assert inst.price(int(bars.low[0])) <= bars.vwap(0) <= inst.price(int(bars.high[0]))


def test_trade_ids_consecutive_and_by_id_agrees(model: MarketModel) -> None:
    # Across minute and day boundaries, and across the configured start (backward-chained days).
    for start in (START + 3 * DAY - 2 * MIN, START - 2 * MIN):
        trades = model.trades(BINANCE, "ETHUSDT", start, start + 4 * MIN)
        assert np.all(np.diff(trades.trade_id) == 1)
        by_id = model.trades_by_id(BINANCE, "ETHUSDT", int(trades.trade_id[0]), int(trades.trade_id[-1]))
        assert_trades_equal(by_id, trades)
    first = model.trades(BINANCE, "ETHUSDT", START, START + MIN)
    assert first.trade_id[0] == model.bars_1m(BINANCE, "ETHUSDT", START, START + MIN).first_trade_id[0]
    some = model.trades_by_id(BINANCE, "ETHUSDT", int(first.trade_id[5]), int(first.trade_id[9]))
    assert some.trade_id.tolist() == first.trade_id[5:10].tolist()
    assert len(model.trades_by_id(BINANCE, "ETHUSDT", 10, 9)) == 0
    with pytest.raises(ValueError, match="before the simulated range"):
        MarketModel(MarketConfig(n_crypto=1, n_equities=0)).trades_by_id(BINANCE, "BTCUSDT", 1, 5)
    last = model.last_trade_before(BINANCE, "ETHUSDT", START + MIN)
    assert last.trade_id[0] == first.trade_id[-1]


def test_quotes_bracket_the_last_trade(model: MarketModel) -> None:
    for venue, symbol in ((BINANCE, "BTCUSDT"), (COINBASE, "XRP-USD"), (POLYGON, "MSFT")):
        for k in range(20):
            ts = START + 5 * DAY + k * 7_777_777_777
            q = model.quote_at(venue, symbol, ts)
            last = model.last_trade_before(venue, symbol, ts + 1)
            assert q.ts_ns == last.ts_ns[0] <= ts
            assert 0 < q.bid_ticks < q.ask_ticks and q.bid_lots > 0 and q.ask_lots > 0
            touch = q.ask_ticks if last.side[0] > 0 else q.bid_ticks
            assert touch == last.price_ticks[0]
    btc = model.quote_at(BINANCE, "BTCUSDT", START + 5 * DAY)
    assert btc.ask_ticks - btc.bid_ticks <= 10  # BTC on Binance trades at a one-to-few-cent spread


def test_cross_venue_prices_stay_close(model: MarketModel) -> None:
    window = (START + 10 * DAY, START + 13 * DAY)
    closes = {v: model.bars_1m(v, s, *window).close / 10.0 ** model.instrument(v, s).price_decimals
              for v, s in ((BINANCE, "BTC-USDT"), (COINBASE, "BTC-USD"), (POLYGON, "BTC-USD"))}
    spread_bp = 1e4 * np.abs(np.log(closes[BINANCE] / closes[COINBASE]))
    assert np.median(spread_bp) < 5 and spread_bp.max() < 30
    assert np.median(1e4 * np.abs(np.log(closes[POLYGON] / closes[COINBASE]))) < 5
    # ...while the asset itself moves much more than that over the window.
    assert np.ptp(np.log(closes[COINBASE])) * 1e4 > 10 * np.median(spread_bp)


def test_fat_tails_and_volatility_clustering(model: MarketModel) -> None:
    r = log_returns(model.bars_1m(BINANCE, "BTCUSDT", START, START + 20 * DAY))
    absr = np.abs(r - r.mean())
    # Under no clustering the lag-1 autocorrelation of |r| is ~ N(0, 1/n).
    acf1 = np.corrcoef(absr[:-1], absr[1:])[0, 1]
    assert acf1 > 0 and stats.norm.sf(acf1 * np.sqrt(len(r))) < 1e-6
    assert stats.kurtosis(r) > 0 and stats.kurtosistest(r).pvalue < 1e-6
    # Trade arrivals cluster too: minute counts are overdispersed relative to Poisson and autocorrelated.
    counts = model.bars_1m(BINANCE, "BTCUSDT", START, START + 5 * DAY).trade_count.astype(np.float64)
    assert counts.var() > 2 * counts.mean()
    assert np.corrcoef(counts[:-1], counts[1:])[0, 1] > 0.1


def _pooled_flow_test(model: MarketModel, days: int) -> tuple[float, float]:
    xs, ys = [], []
    for venue, symbol in ((BINANCE, "BTCUSDT"), (COINBASE, "ETH-USD"), (POLYGON, "AAPL")):
        bars = model.bars_1m(venue, symbol, START, START + days * DAY)
        r = log_returns(bars)
        r = r / np.std(r)
        xs.append(imbalance(bars)[1:-1])  # imbalance of minute t ...
        ys.append(r[1:])  # ... against the close-to-close return of minute t+1
    return robust_slope_test(np.concatenate(xs), np.concatenate(ys))


def test_no_signal_is_a_martingale() -> None:
    model = MarketModel(MarketConfig(signal="none", seed=21))
    t, p = _pooled_flow_test(model, days=15)
    assert p > ALPHA, f"flow imbalance predicts returns under signal=none (t={t:.2f})"
    r = log_returns(model.bars_1m(POLYGON, "NVDA", START, START + 15 * DAY))
    t, p = robust_slope_test(r[:-1], r[1:])
    assert p > ALPHA, f"past returns predict returns under signal=none (t={t:.2f})"
    t, p = _news_tone_test(model, days=10)
    assert p > ALPHA, f"news tone predicts returns under signal=none (t={t:.2f})"


def test_flow_signal_is_detectable() -> None:
    t, p = _pooled_flow_test(MarketModel(MarketConfig(signal="flow", signal_strength=0.05, seed=21)), days=15)
    assert t > 0 and p < 1e-6


def _news_tone_test(model: MarketModel, days: int) -> tuple[float, float]:
    """Tone of each (headline, ticker) against that ticker's Polygon return over the next 30 minutes."""
    by_base = {i.base: i for i in model.instruments(POLYGON)}
    bars = {b: model.bars_1m(POLYGON, i.symbol, START, START + days * DAY + DAY) for b, i in by_base.items()}
    sd = {b: np.std(log_returns(v)) for b, v in bars.items()}
    tones, moves = [], []
    for item in model.news(START, START + days * DAY):
        m = (item.published_ns - START) // MIN
        for base in item.tickers:
            close = bars[base].close
            tones.append(item.tone)
            moves.append(np.log(close[m + 30] / close[m]) / sd[base])
    return robust_slope_test(np.asarray(tones, dtype=np.float64), np.asarray(moves))


def test_news_signal_is_detectable() -> None:
    t, p = _news_tone_test(MarketModel(MarketConfig(signal="news", signal_strength=0.05, seed=21)), days=10)
    assert t > 0 and p < 1e-6


def test_news_items_and_tone_in_text(model: MarketModel) -> None:
    items = model.news(START, START + 3 * DAY)
    assert len(items) > 50
    assert [i.published_ns for i in items] == sorted(i.published_ns for i in items)
    assert len({i.id for i in items}) == len(items)
    assert all(i.title and i.description and i.publisher and i.url.startswith("https://") for i in items)
    tickers = {t for i in items for t in i.tickers}
    assert "BTC" in tickers or "ETH" in tickers
    assert tickers & {"AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "TSLA"}
    aapl = model.news(START, START + 3 * DAY, ticker="AAPL")
    assert aapl and all("AAPL" in i.tickers for i in aapl)
    assert model.news(START, START + 3 * DAY, ticker="X:BTCUSD") == model.news(START, START + 3 * DAY,
                                                                                ticker="BTC-USD")
    with pytest.raises(KeyError):
        model.news(START, START + DAY, ticker="ZZZZ")
    # The tone is in the words: a lexicon model (VADER) recovers its sign.
    vader = SentimentIntensityAnalyzer()
    toned = [i for i in items if i.tone != 0]
    agree = sum(np.sign(vader.polarity_scores(i.title)["compound"]) == i.tone for i in toned)
    assert agree == len(toned)
    for tone, words in ((1, news_text.POSITIVE_WORDS), (-1, news_text.NEGATIVE_WORDS)):
        assert all(any(w in phrase.split(" ") or w in phrase for w in words)
                   for phrase in news_text.phrases_for(tone))
