"""Risk per instrument and for an equal-weight portfolio: volatility, VaR / ES, drawdown, backtests.

Returns are log returns of one bar (1 minute for the platform's bars). VaR and ES are reported as
positive loss fractions of one bar ahead. Methods:
  historical   empirical quantile of the trailing returns
  parametric   normal with the EWMA (RiskMetrics, lambda 0.94) volatility forecast
  garch        normal with the GARCH(1,1) volatility forecast (``arch`` package)
  fhs          filtered historical simulation: GARCH volatility forecast times the empirical
               quantile of the GARCH-standardised residuals
Backtests compare one-step-ahead VaR forecasts with the realised returns out of sample: Kupiec's
proportion-of-failures and Christoffersen's independence likelihood-ratio tests (chi-square, 1 df).
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
from scipy import stats
from scipy.signal import lfilter
from scipy.special import xlogy

from rrr_platform.market.timeutil import NS_PER_DAY

LEVELS = (0.95, 0.99)
METHODS = ("historical", "parametric", "garch", "fhs")
EWMA_LAMBDA = 0.94


class RiskInputError(ValueError):
    """Returns cannot be used for risk (too few, not finite); the message says why."""


def _returns(values: np.ndarray | pd.Series, minimum: int = 30) -> np.ndarray:
    r = np.asarray(values, dtype=np.float64)
    r = r[~np.isnan(r)]
    if not np.isfinite(r).all():
        raise RiskInputError("returns contain infinities")
    if len(r) < minimum:
        raise RiskInputError(f"need at least {minimum} returns, got {len(r)}")
    return r


# ---------------------------------------------------------------------------------- volatility


def realized_volatility(returns: np.ndarray) -> float:
    """Per-bar realized volatility: sqrt(mean of squared returns)."""
    r = _returns(returns, 2)
    return float(np.sqrt(np.mean(r * r)))


def ewma_variance(returns: np.ndarray, lam: float = EWMA_LAMBDA) -> np.ndarray:
    """One-step-ahead EWMA variance: ``out[t]`` uses returns up to t-1; ``out[n]`` is the next forecast.

    Seeded with the variance of the first 30 returns (or all, if fewer).
    """
    r = np.asarray(returns, dtype=np.float64)
    out = np.empty(len(r) + 1)
    out[0] = np.var(r[: min(30, len(r))]) if len(r) else 0.0
    # A recursion (each value needs the previous one): scipy.signal.lfilter runs it in C.
    out[1:], _ = lfilter([1.0 - lam], [1.0, -lam], r * r, zi=[lam * out[0]])
    return out


@dataclass(frozen=True)
class GarchFit:
    mu: float
    omega: float
    alpha: float
    beta: float
    scale: float  # returns were multiplied by this before fitting (arch's optimiser wants O(1) data)
    backcast: float  # variance before the first return (scaled units), fixed at fit time

    @property
    def persistence(self) -> float:
        return self.alpha + self.beta


def _scale_for(r: np.ndarray) -> float:
    std = float(np.std(r))
    return 1.0 if std == 0 else float(10.0 ** np.round(-np.log10(std)))


def _backcast(residuals: np.ndarray) -> float:
    """arch's GARCH backcast: exponentially weighted (0.94) mean of the first 75 squared residuals."""
    tau = min(75, len(residuals))
    weights = 0.94 ** np.arange(tau)
    return float(np.sum(residuals[:tau] ** 2 * weights / weights.sum()))


def fit_garch(returns: np.ndarray) -> GarchFit:
    """GARCH(1,1) with a constant mean and normal innovations, by maximum likelihood (``arch``)."""
    r = _returns(returns, 100)
    scale = _scale_for(r)
    from arch import arch_model  # deferred: arch costs seconds to import, most callers never fit GARCH

    model = arch_model(r * scale, mean="Constant", vol="GARCH", p=1, q=1, dist="normal", rescale=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; the parameters are checked below
        result = model.fit(disp="off", show_warning=False)
    p = result.params
    mu = float(p["mu"])
    return GarchFit(
        mu, float(p["omega"]), float(p["alpha[1]"]), float(p["beta[1]"]), scale, _backcast(r * scale - mu)
    )


def garch_volatility(returns: np.ndarray, fit: GarchFit) -> np.ndarray:
    """One-step-ahead conditional volatility with fixed parameters: ``out[t]`` uses returns up to t-1,
    ``out[n]`` is the next forecast; in return units.

    The variance recursion ``s2[t] = omega + alpha e[t-1]^2 + beta s2[t-1]`` runs through
    ``scipy.signal.lfilter`` from the fit's fixed backcast, so bar t's value never depends on later
    bars (arch's ``fix`` recomputes the backcast from whatever sample it is given).
    """
    e2 = (np.asarray(returns, dtype=np.float64) * fit.scale - fit.mu) ** 2
    drive = fit.omega + fit.alpha * np.concatenate(([fit.backcast], e2))
    variance, _ = lfilter([1.0], [1.0, -fit.beta], drive, zi=[fit.beta * fit.backcast])
    return np.sqrt(variance) / fit.scale


# ------------------------------------------------------------------------------------- VaR / ES


@dataclass(frozen=True)
class VarEs:
    method: str
    level: float
    var: float
    es: float


def _tail(values: np.ndarray, level: float) -> tuple[float, float]:
    """VaR and ES (positive losses) of an empirical sample of returns."""
    q = float(np.quantile(values, 1.0 - level))
    tail = values[values <= q]
    return -q, -float(tail.mean())


def var_es(returns: np.ndarray, level: float, method: str, garch: GarchFit | None = None) -> VarEs:
    """One-bar-ahead VaR and ES at ``level`` (e.g. 0.99) by ``method`` from the whole return history."""
    r = _returns(returns)
    z = stats.norm.ppf(1.0 - level)
    es_factor = stats.norm.pdf(z) / (1.0 - level)
    if method == "historical":
        var, es = _tail(r, level)
    elif method == "parametric":
        mu, sigma = float(r.mean()), float(np.sqrt(ewma_variance(r)[-1]))
        var, es = -(mu + sigma * z), -mu + sigma * es_factor
    elif method in ("garch", "fhs"):
        fit = garch or fit_garch(r)
        sigmas = garch_volatility(r, fit)
        mu, sigma_next = fit.mu / fit.scale, float(sigmas[-1])
        if method == "garch":
            var, es = -(mu + sigma_next * z), -mu + sigma_next * es_factor
        else:
            standardised = (r - mu) / sigmas[:-1]
            q_var, q_es = _tail(standardised, level)
            var, es = -mu + sigma_next * q_var, -mu + sigma_next * q_es
    else:
        raise ValueError(f"unknown VaR method {method!r}; one of {METHODS}")
    return VarEs(method, level, float(var), float(es))


def var_forecasts(
    returns: np.ndarray, level: float, method: str, train: int, garch: GarchFit | None = None
) -> np.ndarray:
    """One-step-ahead VaR for every bar after the first ``train`` (out of sample), as positive losses.

    GARCH parameters are fitted on the first ``train`` returns only and then held fixed; the
    historical method uses a rolling window of ``train`` returns; EWMA updates bar by bar.
    """
    r = _returns(returns)
    if not 30 <= train < len(r):
        raise RiskInputError(f"training length {train} must be in [30, {len(r)})")
    z = stats.norm.ppf(1.0 - level)
    if method == "historical":
        windows = np.lib.stride_tricks.sliding_window_view(r[:-1], train)
        return -np.quantile(windows, 1.0 - level, axis=1)[: len(r) - train]
    if method == "parametric":
        sigma = np.sqrt(ewma_variance(r)[train:-1])
        mu = float(r[:train].mean())
        return -(mu + sigma * z)
    if method in ("garch", "fhs"):
        fit = garch or fit_garch(r[:train])
        sigmas = garch_volatility(r, fit)
        mu = fit.mu / fit.scale
        if method == "garch":
            return -(mu + sigmas[train:-1] * z)
        standardised = (r[:train] - mu) / sigmas[:train]
        q = float(np.quantile(standardised, 1.0 - level))
        return -(mu + sigmas[train:-1] * q)
    raise ValueError(f"unknown VaR method {method!r}; one of {METHODS}")


# ------------------------------------------------------------------------------------ backtests


@dataclass(frozen=True)
class VarBacktest:
    method: str
    level: float
    observations: int
    exceptions: int
    expected: float
    kupiec_lr: float
    kupiec_p: float
    christoffersen_lr: float
    christoffersen_p: float

    def accepted(self, significance: float = 0.05) -> bool:
        return self.kupiec_p > significance and self.christoffersen_p > significance

    def as_dict(self) -> dict[str, float | int | str | bool]:
        return {**asdict(self), "accepted": self.accepted()}


def kupiec_pof(exceptions: np.ndarray, level: float) -> tuple[float, float]:
    """Kupiec's proportion-of-failures LR statistic and its chi-square(1) p-value.

    H0: the exception probability is ``1 - level``.
    """
    hits = np.asarray(exceptions, dtype=bool)
    n, x = len(hits), int(hits.sum())
    if n == 0:
        raise RiskInputError("no observations to backtest")
    p = 1.0 - level
    phat = x / n
    log_h0 = xlogy(n - x, 1.0 - p) + xlogy(x, p)
    log_h1 = xlogy(n - x, 1.0 - phat) + xlogy(x, phat)
    lr = max(-2.0 * (log_h0 - log_h1), 0.0)
    return float(lr), float(stats.chi2.sf(lr, 1))


def christoffersen_independence(exceptions: np.ndarray) -> tuple[float, float]:
    """Christoffersen's independence LR statistic (first-order Markov vs independent) and p-value."""
    hits = np.asarray(exceptions, dtype=bool).astype(np.int8)
    if len(hits) < 2:
        raise RiskInputError("need at least two observations for the independence test")
    prev, cur = hits[:-1], hits[1:]
    n00 = int(((prev == 0) & (cur == 0)).sum())
    n01 = int(((prev == 0) & (cur == 1)).sum())
    n10 = int(((prev == 1) & (cur == 0)).sum())
    n11 = int(((prev == 1) & (cur == 1)).sum())
    pi0 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi1 = n11 / (n10 + n11) if n10 + n11 else 0.0
    pi = (n01 + n11) / (n00 + n01 + n10 + n11)
    log_h0 = xlogy(n00 + n10, 1.0 - pi) + xlogy(n01 + n11, pi)
    log_h1 = xlogy(n00, 1.0 - pi0) + xlogy(n01, pi0) + xlogy(n10, 1.0 - pi1) + xlogy(n11, pi1)
    lr = max(-2.0 * (log_h0 - log_h1), 0.0)
    return float(lr), float(stats.chi2.sf(lr, 1))


def backtest_var(
    returns: np.ndarray, level: float, method: str, train: int, garch: GarchFit | None = None
) -> VarBacktest:
    """Out-of-sample backtest of ``method``'s one-step VaR on the returns after the first ``train``."""
    r = _returns(returns)
    var = var_forecasts(r, level, method, train, garch)
    hits = r[train:] < -var
    kupiec = kupiec_pof(hits, level)
    independence = christoffersen_independence(hits)
    return VarBacktest(
        method,
        level,
        len(hits),
        int(hits.sum()),
        len(hits) * (1.0 - level),
        kupiec[0],
        kupiec[1],
        independence[0],
        independence[1],
    )


# ---------------------------------------------------------------------------------------- report


def max_drawdown(returns: np.ndarray) -> float:
    """Largest peak-to-trough fall of the cumulative value, as a positive fraction."""
    r = _returns(returns, 1)
    value = np.exp(np.concatenate(([0.0], np.cumsum(r))))
    peak = np.maximum.accumulate(value)
    return float(np.max(1.0 - value / peak))


def equal_weight_portfolio(returns: pd.DataFrame) -> pd.Series:
    """Log return of an equal-weight portfolio rebalanced every bar, over the instruments present."""
    simple = np.expm1(returns)
    return np.log1p(simple.mean(axis=1, skipna=True)).rename("portfolio")


def instrument_risk(returns: np.ndarray, train_fraction: float = 0.5) -> dict[str, object]:
    """Volatility, VaR/ES table, drawdown and VaR backtests of one return series."""
    r = _returns(returns, 200)
    train = int(len(r) * train_fraction)
    garch_all = fit_garch(r)
    garch_train = fit_garch(r[:train])
    table = [
        asdict(var_es(r, level, method, garch_all if method in ("garch", "fhs") else None))
        for level in LEVELS
        for method in METHODS
    ]
    backtests = [
        backtest_var(r, level, method, train, garch_train).as_dict() for level in LEVELS for method in METHODS
    ]
    return {
        "observations": len(r),
        "realized_vol": realized_volatility(r),
        "ewma_vol_forecast": float(np.sqrt(ewma_variance(r)[-1])),
        "garch_vol_forecast": float(garch_volatility(r, garch_all)[-1]),
        "garch_params": asdict(garch_all),
        "max_drawdown": max_drawdown(r),
        "var_es": table,
        "backtests": backtests,
    }


def risk_report(returns: pd.DataFrame, train_fraction: float = 0.5) -> dict[str, dict[str, object]]:
    """``instrument_risk`` for every column of ``returns`` (bars x instruments) and the portfolio.

    Columns with too little data are reported with an ``error`` instead of failing the report.
    """
    report: dict[str, dict[str, object]] = {}
    series = {str(c): returns[c] for c in returns.columns}
    if len(returns.columns) > 0:
        series["portfolio"] = equal_weight_portfolio(returns)
    for name, values in series.items():
        try:
            report[name] = instrument_risk(values.to_numpy(np.float64), train_fraction)
        except RiskInputError as exc:
            report[name] = {"error": str(exc)}
    return report


def returns_matrix(bars: pd.DataFrame) -> pd.DataFrame:
    """1-bar log returns of every instrument (``venue:symbol`` columns) on the union of bar times."""
    if bars.empty:
        return pd.DataFrame()
    frame = bars.assign(instrument=bars["venue"] + ":" + bars["symbol"])
    close = frame.pivot(index="ts_ns", columns="instrument", values="close").sort_index()
    # A minute without a trade keeps the last price: a zero return, not a gap.
    return np.log(close.ffill()).diff().iloc[1:]


def day_risk(
    conn: psycopg.Connection, day: dt.date, lookback_days: int = 3, train_fraction: float = 0.5
) -> dict[str, dict[str, object]]:
    """``risk_report`` over 1-minute returns of the ``lookback_days`` days ending with ``day`` (UTC)."""
    from rrr_platform.ml.features import day_bounds_ns, load_bars

    start, end = day_bounds_ns(day)
    bars = load_bars(conn, start - (lookback_days - 1) * NS_PER_DAY, end)
    return risk_report(returns_matrix(bars), train_fraction)


def var_table_markdown(report: dict[str, dict[str, object]]) -> str:
    """One row per instrument and method: VaR and ES at each level, in basis points of one bar."""
    header = "| instrument | method | " + " | ".join(f"VaR {lv:.0%} | ES {lv:.0%}" for lv in LEVELS) + " |"
    lines = [header, "|" + " --- |" * (2 + 2 * len(LEVELS))]
    for name, entry in report.items():
        if "error" in entry:
            lines.append(f"| {name} | {entry['error']} |" + " |" * (2 * len(LEVELS)))
            continue
        table = entry["var_es"]
        assert isinstance(table, list)
        for method in METHODS:
            cells = []
            for level in LEVELS:
                row = next(r for r in table if r["method"] == method and r["level"] == level)
                cells += [f"{row['var'] * 1e4:.2f}", f"{row['es'] * 1e4:.2f}"]
            lines.append(f"| {name} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def backtest_pvalues(report: dict[str, dict[str, object]]) -> dict[str, dict[str, float | bool]]:
    """``{"instrument/method/99%": {kupiec_p, christoffersen_p, exceptions, accepted}}`` for metadata."""
    out: dict[str, dict[str, float | bool]] = {}
    for name, entry in report.items():
        for bt in entry.get("backtests", []):  # type: ignore[union-attr]
            out[f"{name}/{bt['method']}/{bt['level']:.0%}"] = {
                "kupiec_p": round(float(bt["kupiec_p"]), 6),
                "christoffersen_p": round(float(bt["christoffersen_p"]), 6),
                "exceptions": int(bt["exceptions"]),
                "expected": round(float(bt["expected"]), 2),
                "accepted": bool(bt["accepted"]),
            }
    return out


def write_report(report: dict[str, dict[str, object]], root: Path, day: dt.date) -> Path:
    """The report as JSON under ``root/date=YYYY-MM-DD/risk.json`` (atomic replace)."""
    import orjson

    path = root / f"date={day.isoformat()}" / "risk.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    tmp.replace(path)
    return path


SUMMARY_KEYS = ("observations", "realized_vol", "ewma_vol_forecast", "garch_vol_forecast", "max_drawdown")


def volatility_summary(report: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """Per instrument: the volatility figures and drawdown (or the error that kept it out)."""
    return {
        name: entry if "error" in entry else {k: entry[k] for k in SUMMARY_KEYS}
        for name, entry in report.items()
    }
