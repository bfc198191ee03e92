"""Risk: VaR/ES by hand, backtest statistics by hand, GARCH VaR accepted on GARCH data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from arch import arch_model
from scipy import stats

from rrr_platform.ml import risk


def simulate_garch(
    n: int, seed: int, omega: float = 2e-7, alpha: float = 0.08, beta: float = 0.9
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty(n)
    variance = omega / (1 - alpha - beta)
    for t in range(n):
        out[t] = math.sqrt(variance) * rng.standard_normal()
        variance = omega + alpha * out[t] ** 2 + beta * variance
    return out


def test_kupiec_by_hand() -> None:
    hits = np.zeros(250, bool)
    hits[:5] = True  # 5 exceptions in 250 at 99%: expected 2.5
    p, phat = 0.01, 5 / 250
    lr = -2 * ((245 * math.log(1 - p) + 5 * math.log(p)) - (245 * math.log(1 - phat) + 5 * math.log(phat)))
    got_lr, got_p = risk.kupiec_pof(hits, 0.99)
    assert got_lr == pytest.approx(lr)
    assert got_p == pytest.approx(stats.chi2.sf(lr, 1))
    assert risk.kupiec_pof(np.zeros(100, bool), 0.99)[0] == pytest.approx(-2 * 100 * math.log(0.99))


def test_christoffersen_by_hand() -> None:
    hits = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0], bool)
    # transitions: 00:4 01:2 10:2 11:1
    n00, n01, n10, n11 = 4, 2, 2, 1
    pi0, pi1, pi = n01 / (n00 + n01), n11 / (n10 + n11), (n01 + n11) / 9
    ll0 = (n00 + n10) * math.log(1 - pi) + (n01 + n11) * math.log(pi)
    ll1 = n00 * math.log(1 - pi0) + n01 * math.log(pi0) + n10 * math.log(1 - pi1) + n11 * math.log(pi1)
    lr, p = risk.christoffersen_independence(hits)
    assert lr == pytest.approx(-2 * (ll0 - ll1))
    assert p == pytest.approx(stats.chi2.sf(-2 * (ll0 - ll1), 1))
    assert risk.christoffersen_independence(np.zeros(50, bool)) == (0.0, 1.0)


def test_clustered_exceptions_fail_independence() -> None:
    hits = np.zeros(1000, bool)
    hits[500:510] = True  # the right count at 99%, all in one run
    assert risk.kupiec_pof(hits, 0.99)[1] > 0.5
    assert risk.christoffersen_independence(hits)[1] < 1e-6


def test_historical_var_es_by_hand() -> None:
    returns = np.linspace(-0.10, 0.09, 20)  # -0.10, -0.09, ..., 0.09
    result = risk.var_es(np.tile(returns, 5), 0.95, "historical")
    q = np.quantile(np.tile(returns, 5), 0.05)
    assert result.var == pytest.approx(-q)
    tail = np.tile(returns, 5)[np.tile(returns, 5) <= q]
    assert result.es == pytest.approx(-tail.mean())
    assert result.es >= result.var


def test_parametric_var_uses_the_ewma_forecast() -> None:
    r = np.random.default_rng(2).normal(0, 0.01, 500)
    sigma = math.sqrt(risk.ewma_variance(r)[-1])
    result = risk.var_es(r, 0.99, "parametric")
    z = stats.norm.ppf(0.01)
    assert result.var == pytest.approx(-(r.mean() + sigma * z))
    assert result.es == pytest.approx(-r.mean() + sigma * stats.norm.pdf(z) / 0.01)


def test_ewma_recursion_reference() -> None:
    r = np.array([0.01, -0.02, 0.005, 0.0])
    out = risk.ewma_variance(r, 0.9)
    expected = [np.var(r)]
    for value in r:
        expected.append(0.9 * expected[-1] + 0.1 * value * value)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_max_drawdown_by_hand() -> None:
    r = np.log([1.10, 0.5, 1.2, 1.5])  # value 1, 1.1, 0.55, 0.66, 0.99
    assert risk.max_drawdown(r) == pytest.approx(0.5)
    assert risk.max_drawdown(np.log([1.01, 1.02])) == 0.0


def test_garch_fit_recovers_parameters_and_filters_causally() -> None:
    r = simulate_garch(6000, 1)
    fit = risk.fit_garch(r)
    assert fit.alpha == pytest.approx(0.08, abs=0.03)
    assert fit.beta == pytest.approx(0.9, abs=0.04)
    sigma = risk.garch_volatility(r, fit)
    assert len(sigma) == len(r) + 1
    # Causal: the volatility for bar t is the same whatever comes after t.
    np.testing.assert_array_equal(risk.garch_volatility(r[:3000], fit)[:3001], sigma[:3001])
    # Reference: arch's own filter with the same parameters. Its backcast differs slightly (taken from
    # the starting mean); the difference decays as beta^t.
    model = arch_model(r * fit.scale, mean="Constant", vol="GARCH", p=1, q=1, rescale=False)
    reference = model.fix([fit.mu, fit.omega, fit.alpha, fit.beta]).conditional_volatility / fit.scale
    np.testing.assert_allclose(sigma[:-1], reference, rtol=1e-2)
    np.testing.assert_allclose(sigma[500:-1], reference[500:], rtol=1e-9)


def test_garch_99_var_is_accepted_on_garch_returns_and_a_wrong_var_is_not() -> None:
    r = simulate_garch(8000, 7)
    fit = risk.fit_garch(r[:3000])
    accepted = risk.backtest_var(r, 0.99, "garch", 3000, fit)
    assert accepted.observations == 5000
    assert accepted.kupiec_p > 0.05 and accepted.christoffersen_p > 0.05, accepted
    assert accepted.accepted()
    fhs = risk.backtest_var(r, 0.99, "fhs", 3000, fit)
    assert fhs.kupiec_p > 0.05, fhs
    # The same test has power: the GARCH VaR understated by 20% is rejected on the same data.
    understated = 0.8 * risk.var_forecasts(r, 0.99, "garch", 3000, fit)
    assert risk.kupiec_pof(r[3000:] < -understated, 0.99)[1] < 0.01


def test_risk_report_per_instrument_and_portfolio() -> None:
    returns = pd.DataFrame({"a": simulate_garch(600, 2), "b": simulate_garch(600, 3),
                            "short": [np.nan] * 590 + list(np.full(10, 0.001))})
    report = risk.risk_report(returns)
    assert set(report) == {"a", "b", "short", "portfolio"}
    assert "need at least" in str(report["short"]["error"])
    a = report["a"]
    assert {(row["method"], row["level"]) for row in a["var_es"]} == {
        (m, lv) for m in risk.METHODS for lv in risk.LEVELS}
    for row in a["var_es"]:
        assert row["es"] >= row["var"] > 0
    assert len(a["backtests"]) == len(risk.METHODS) * len(risk.LEVELS)
    assert all(0 <= bt["kupiec_p"] <= 1 for bt in a["backtests"])
    assert "| portfolio | fhs |" in risk.var_table_markdown(report)
    assert risk.backtest_pvalues(report)["a/garch/99%"]["exceptions"] >= 0


def test_bad_returns_are_a_clear_error() -> None:
    with pytest.raises(risk.RiskInputError, match="need at least"):
        risk.var_es(np.array([0.01, 0.02]), 0.99, "historical")
    with pytest.raises(risk.RiskInputError, match="infinities"):
        risk.var_es(np.r_[np.zeros(50), np.inf], 0.99, "historical")
    with pytest.raises(ValueError, match="unknown VaR method"):
        risk.var_es(np.zeros(50), 0.99, "magic")
