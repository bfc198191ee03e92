"""The simulated world, one UTC day at a time: fair-value paths, volatility, order flow, news.

Everything here is per base asset (BTC, AAPL, ...) and shared by every venue that lists it; the
venue layer (``model.py``) puts a small mean-reverting basis around the fair value and draws that
venue's bars and trades. A day is a pure function of (seed, config, day, state at the start of the
day); the state at the end of day d is the state at the start of day d+1.

Return of asset i in minute t (log, fair value), in units of that minute's volatility sigma_t::

    r_t / sigma_t = a * z_t + KAPPA * g_t + s * g_{t-1}   [signal="flow"]
                                          + s * tone_j   [signal="news", for 30 min after headline j]
    + jump_t

``z`` mixes a market factor and an idiosyncratic shock, ``g`` is the minute's latent order-flow
imbalance (standard normal; buy fraction = (1 + tanh(0.7 g)) / 2), ``a`` keeps the variance at one.
With ``signal="none"``, ``g`` moves the price of its own minute only (flow has price impact) and
headlines' tone is noise: nothing observable at the end of minute t predicts the sign of r_{t+1}.
Volatility (regimes, log-vol AR(1)) and trade intensity cluster in every mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import lfilter

from rrr_platform.simulator import news as news_text

MINUTES_PER_DAY = 1440
MINUTES_PER_YEAR = 365 * MINUTES_PER_DAY
KAPPA = 0.3  # contemporaneous price impact of order flow (present in every mode)
FLOW_SQUASH = 0.7  # buy fraction = (1 + tanh(FLOW_SQUASH * g)) / 2
NEWS_HORIZON_MIN = 30  # minutes a headline's tone drifts its tickers under signal="news"
NEWS_PER_DAY = 48.0
JUMP_PROB_PER_MIN = 1.0 / 1440.0
JUMP_SCALE = 4.0  # jump size = JUMP_SCALE * sigma * Student-t(4), the t clipped at +-8
REGIME_VOL = np.array([0.6, 1.0, 2.2])  # calm, normal, turbulent
REGIME_MEAN_MINUTES = np.array([900.0, 480.0, 120.0])
LOGVOL_PHI = 0.995
LOGVOL_SD = 0.35  # stationary sd of the log-vol component
BASIS_PHI = math.exp(-1.0 / 30.0)  # venue basis half-life ~ 20 minutes


@dataclass(frozen=True)
class AssetSpec:
    name: str  # crypto base ("BTC") or equity ticker ("AAPL")
    asset_class: str  # "crypto_spot" | "equity"
    initial_price: float  # USD at config.start
    annual_vol: float
    activity: float  # relative trade intensity
    beta: float  # loading on the class's market factor


CRYPTO_ASSETS = (
    AssetSpec("BTC", "crypto_spot", 95_000.0, 0.55, 1.0, 0.7),
    AssetSpec("ETH", "crypto_spot", 3_400.0, 0.70, 0.8, 0.7),
    AssetSpec("SOL", "crypto_spot", 180.0, 0.90, 0.6, 0.6),
    AssetSpec("XRP", "crypto_spot", 2.3, 0.85, 0.5, 0.6),
    AssetSpec("DOGE", "crypto_spot", 0.32, 0.95, 0.4, 0.6),
    AssetSpec("ADA", "crypto_spot", 0.9, 0.90, 0.3, 0.6),
    AssetSpec("AVAX", "crypto_spot", 35.0, 0.95, 0.3, 0.6),
    AssetSpec("LINK", "crypto_spot", 20.0, 0.90, 0.3, 0.6),
)
EQUITY_ASSETS = (
    AssetSpec("AAPL", "equity", 230.0, 0.25, 1.0, 0.5),
    AssetSpec("MSFT", "equity", 420.0, 0.25, 0.9, 0.5),
    AssetSpec("NVDA", "equity", 140.0, 0.50, 1.0, 0.5),
    AssetSpec("AMZN", "equity", 210.0, 0.32, 0.8, 0.5),
    AssetSpec("GOOGL", "equity", 175.0, 0.30, 0.7, 0.5),
    AssetSpec("TSLA", "equity", 330.0, 0.55, 1.0, 0.4),
)
CLASSES = ("crypto_spot", "equity")


@dataclass
class WorldState:
    """What carries over from the end of one day to the start of the next."""

    log_price: np.ndarray  # (n_assets,)
    regime: np.ndarray  # (n_classes,) int
    log_vol: np.ndarray  # (n_assets,)
    basis: dict[str, np.ndarray]  # venue -> (n_assets,) log basis
    flow_last: np.ndarray  # (n_assets,) g of the last minute
    excitation: np.ndarray  # (n_assets,) trade-intensity feedback
    pending_drift: np.ndarray  # (n_assets, NEWS_HORIZON_MIN) news drift spilling into the next day


@dataclass(frozen=True)
class NewsDraw:
    published_ns: int
    asset_indices: tuple[int, ...]
    tone: int  # -1, 0, +1
    phrase_index: int
    index_in_day: int


@dataclass
class DayWorld:
    day: int  # days since 1970-01-01
    log_price: np.ndarray  # (n_assets, 1441): [:, 0] start of day, [:, m+1] end of minute m
    sigma: np.ndarray  # (n_assets, 1440) per-minute volatility of log returns
    sigma_ratio: np.ndarray  # (n_assets, 1440) sigma relative to the asset's base level
    flow: np.ndarray  # (n_assets, 1440) latent order-flow imbalance g (standard normal)
    intensity: np.ndarray  # (n_assets, 1440) relative trade intensity (mean ~1)
    basis: dict[str, np.ndarray]  # venue -> (n_assets, 1441) log basis
    news: list[NewsDraw] = field(default_factory=list)


def base_sigma(spec: AssetSpec) -> float:
    return spec.annual_vol / math.sqrt(MINUTES_PER_YEAR)


def _transition_matrix() -> np.ndarray:
    leave = 1.0 / REGIME_MEAN_MINUTES
    k = len(REGIME_VOL)
    matrix = np.empty((k, k))
    for i in range(k):
        matrix[i, :] = leave[i] / (k - 1)
        matrix[i, i] = 1.0 - leave[i]
    return matrix


def stationary_regime_probs() -> np.ndarray:
    values, vectors = np.linalg.eig(_transition_matrix().T)
    vec = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
    return vec / vec.sum()


def _regime_path(rng: np.random.Generator, start: int) -> np.ndarray:
    """Markov-switching regime per minute, drawn as geometric sojourns (a loop over switches, not minutes)."""
    leave = 1.0 / REGIME_MEAN_MINUTES
    k = len(REGIME_VOL)
    out = np.empty(MINUTES_PER_DAY, dtype=np.int64)
    pos, state = 0, int(start)
    # The regime at minute 0 is the carried state continued, so a sojourn may span the day boundary.
    while pos < MINUTES_PER_DAY:
        stay = int(rng.geometric(leave[state]))
        out[pos : pos + stay] = state
        pos += stay
        if pos < MINUTES_PER_DAY:
            others = [j for j in range(k) if j != state]
            state = others[int(rng.integers(len(others)))]
    return out


def _ar1(innovations: np.ndarray, phi: float, initial: np.ndarray) -> np.ndarray:
    """y_t = phi * y_{t-1} + x_t along the last axis, starting from y_{-1} = initial (vectorised)."""
    zi = (phi * initial)[..., None]
    out, _ = lfilter([1.0], [1.0, -phi], innovations, axis=-1, zi=zi)
    return out


def stationary_state(
    rng: np.random.Generator, n_assets: int, venues: tuple[str, ...], basis_sd: dict[str, float]
) -> WorldState:
    probs = stationary_regime_probs()
    return WorldState(
        log_price=np.zeros(n_assets),
        regime=rng.choice(len(probs), size=len(CLASSES), p=probs),
        log_vol=rng.normal(0.0, LOGVOL_SD, n_assets),
        basis={v: rng.normal(0.0, basis_sd[v], n_assets) for v in venues},
        flow_last=rng.normal(0.0, 1.0, n_assets),
        excitation=np.zeros(n_assets),
        pending_drift=np.zeros((n_assets, NEWS_HORIZON_MIN)),
    )


def initial_state(
    assets: tuple[AssetSpec, ...], venues: tuple[str, ...]
) -> WorldState:
    n = len(assets)
    return WorldState(
        log_price=np.log(np.array([a.initial_price for a in assets])),
        regime=np.ones(len(CLASSES), dtype=np.int64),
        log_vol=np.zeros(n),
        basis={v: np.zeros(n) for v in venues},
        flow_last=np.zeros(n),
        excitation=np.zeros(n),
        pending_drift=np.zeros((n, NEWS_HORIZON_MIN)),
    )


def generate_day(
    rng: np.random.Generator,
    day: int,
    assets: tuple[AssetSpec, ...],
    state: WorldState,
    signal: str,
    signal_strength: float,
    basis_sd: dict[str, float],
) -> tuple[DayWorld, WorldState]:
    """One day of the world from the state at its start; returns the day and the state at its end."""
    n = len(assets)
    m = MINUTES_PER_DAY
    class_of = np.array([CLASSES.index(a.asset_class) for a in assets])
    sig0 = np.array([base_sigma(a) for a in assets])
    beta = np.array([a.beta for a in assets])

    # Volatility: class-wide Markov regime times a per-asset log-vol AR(1).
    regimes = np.stack([_regime_path(rng, int(state.regime[c])) for c in range(len(CLASSES))])
    logvol_innov = rng.normal(0.0, LOGVOL_SD * math.sqrt(1 - LOGVOL_PHI**2), (n, m))
    log_vol = _ar1(logvol_innov, LOGVOL_PHI, state.log_vol)
    sigma_ratio = REGIME_VOL[regimes[class_of]] * np.exp(log_vol - 0.5 * LOGVOL_SD**2)
    sigma = sig0[:, None] * sigma_ratio

    # Shocks: market factor per class, idiosyncratic part, order flow, jumps.
    factor = rng.normal(0.0, 1.0, (len(CLASSES), m))[class_of]
    idio = rng.normal(0.0, 1.0, (n, m))
    z = beta[:, None] * factor + np.sqrt(1 - beta**2)[:, None] * idio
    flow = rng.normal(0.0, 1.0, (n, m))
    jump_on = rng.random((n, m)) < JUMP_PROB_PER_MIN
    jumps = np.where(jump_on, JUMP_SCALE * np.clip(rng.standard_t(4, (n, m)), -8.0, 8.0), 0.0)

    # News: arrivals, tickers, tone. Drawn in every mode so the headlines do not depend on the signal.
    news_draws, drift = _draw_news(rng, day, n, state.pending_drift)

    s = signal_strength
    if signal == "flow":
        a = math.sqrt(1 - KAPPA**2 - s**2)
        prev_flow = np.concatenate([state.flow_last[:, None], flow[:, :-1]], axis=1)
        std_ret = a * z + KAPPA * flow + s * prev_flow
    elif signal == "news":
        std_ret = math.sqrt(1 - KAPPA**2) * z + KAPPA * flow + s * drift[:, :m]
    else:
        std_ret = math.sqrt(1 - KAPPA**2) * z + KAPPA * flow
    returns = sigma * (std_ret + jumps)
    log_price = np.concatenate(
        [state.log_price[:, None], state.log_price[:, None] + np.cumsum(returns, axis=1)], axis=1
    )

    # Trade intensity: rises with volatility and with recent large moves (a self-exciting feedback).
    shock = np.abs(std_ret + jumps) - 0.8
    excitation = _ar1(0.05 * shock, 0.9, state.excitation)
    intensity = np.sqrt(sigma_ratio) * np.exp(np.clip(excitation, -1.0, 2.0))

    basis: dict[str, np.ndarray] = {}
    basis_end: dict[str, np.ndarray] = {}
    for venue in sorted(basis_sd):
        sd = basis_sd[venue]
        innov = rng.normal(0.0, sd * math.sqrt(1 - BASIS_PHI**2), (n, m))
        path = _ar1(innov, BASIS_PHI, state.basis[venue])
        basis[venue] = np.concatenate([state.basis[venue][:, None], path], axis=1)
        basis_end[venue] = path[:, -1].copy()

    world = DayWorld(
        day=day, log_price=log_price, sigma=sigma, sigma_ratio=sigma_ratio, flow=flow,
        intensity=intensity, basis=basis, news=news_draws,
    )
    end = WorldState(
        log_price=log_price[:, -1].copy(),
        regime=regimes[:, -1].copy(),
        log_vol=log_vol[:, -1].copy(),
        basis=basis_end,
        flow_last=flow[:, -1].copy(),
        excitation=excitation[:, -1].copy(),
        pending_drift=drift[:, m:].copy(),
    )
    return world, end


def _draw_news(
    rng: np.random.Generator, day: int, n_assets: int, pending: np.ndarray
) -> tuple[list[NewsDraw], np.ndarray]:
    """Headlines of the day and the tone drift they put on minutes after them (incl. carry-over)."""
    m = MINUTES_PER_DAY
    horizon = NEWS_HORIZON_MIN
    drift = np.zeros((n_assets, m + horizon))
    drift[:, :horizon] += pending
    count = int(rng.poisson(NEWS_PER_DAY))
    seconds = np.sort(rng.integers(0, 86_400, count))
    draws: list[NewsDraw] = []
    for j, second in enumerate(seconds):
        n_tickers = 1 if rng.random() < 0.7 else 2
        indices = tuple(int(i) for i in rng.choice(n_assets, size=min(n_tickers, n_assets), replace=False))
        tone = int(rng.choice([-1, 0, 1], p=[0.35, 0.3, 0.35]))
        phrase = int(rng.integers(0, 1 << 16))
        minute = int(second) // 60
        # The tone moves the minutes strictly after the one it was published in.
        for i in indices:
            drift[i, minute + 1 : minute + 1 + horizon] += tone
        draws.append(NewsDraw(
            published_ns=(day * 86_400 + int(second)) * 1_000_000_000,
            asset_indices=indices, tone=tone, phrase_index=phrase, index_in_day=j,
        ))
    return draws, drift


def headline_for(draw: NewsDraw, assets: tuple[AssetSpec, ...]) -> tuple[str, str]:
    names = [news_text.DISPLAY_NAMES.get(assets[i].name, assets[i].name) for i in draw.asset_indices]
    return news_text.headline(names, draw.tone, draw.phrase_index)
