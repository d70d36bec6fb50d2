"""Statistics that separate skill from luck: a date-block bootstrap interval of a metric, the
information coefficient, the Sharpe ratio with its Probabilistic and Deflated versions, and the
probability of backtest overfitting.

References
----------
* Bailey, D. H. & Lopez de Prado, M. (2014). "The Deflated Sharpe Ratio: Correcting for Selection
  Bias, Backtest Overfitting and Non-Normality." Journal of Portfolio Management 40(5), 94-107.
* Bailey, D. H., Borwein, J., Lopez de Prado, M. & Zhu, Q. J. (2017). "The Probability of Backtest
  Overfitting." Journal of Computational Finance 20(4) (combinatorially symmetric cross-validation).

All Sharpe ratios here are *per period* (not annualised) unless a name says ``annualised``.
Plain numpy/scipy; no Dagster, no MLflow.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from mlops_assets.errors import InvalidInput
from mlops_assets.evaluation.metrics import HIGHER_IS_BETTER, compute_metrics

EULER_GAMMA = 0.5772156649015329
TRADING_DAYS = 252


# -- metric interval ------------------------------------------------------------------------------
def fast_roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged; nan with one class."""
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = stats.rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def metric_function(task_type: str, metric: str, threshold: float = 0.5) -> Callable[[np.ndarray, np.ndarray], float]:
    """``f(y, score) -> value`` of one metric (ROC AUC by ranks, others through compute_metrics)."""
    if task_type == "binary" and metric == "roc_auc":
        return fast_roc_auc

    def fn(y: np.ndarray, score: np.ndarray) -> float:
        return float(compute_metrics(task_type, y, score, threshold).get(metric, math.nan))

    return fn


@dataclass(frozen=True)
class MetricInterval:
    metric: str
    value: float
    low: float
    high: float
    level: float
    n_boot: int
    block_length: int
    n_dates: int
    n_rows: int

    @property
    def width(self) -> float:
        return self.high - self.low

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def date_block_bootstrap_ci(
    dates: np.ndarray, y: np.ndarray, score: np.ndarray, metric_fn: Callable[[np.ndarray, np.ndarray], float],
    *, metric: str = "metric", n_boot: int = 500, alpha: float = 0.05, block_length: int | None = None,
    seed: int = 0,
) -> MetricInterval:
    """Percentile interval of ``metric_fn`` over a circular block bootstrap of whole *dates*.

    Rows of one date stay together (cross-sectional dependence), and consecutive dates are drawn in
    blocks of ``block_length`` (default ``ceil(n_dates ** (1/3))``, serial dependence and
    overlapping label windows).
    """
    dates = np.asarray(dates)
    if not (dates.shape[0] == len(y) == len(score)):
        raise InvalidInput("score", "dates, y and score must have the same length")
    if dates.shape[0] == 0:
        raise InvalidInput("y", "is empty; the interval needs out-of-sample predictions")
    order = np.argsort(dates, kind="stable")
    dates, y, score = dates[order], np.asarray(y)[order], np.asarray(score)[order]
    unique, starts, counts = np.unique(dates, return_index=True, return_counts=True)
    n_dates = unique.shape[0]
    length = block_length or max(1, math.ceil(n_dates ** (1 / 3)))
    point = metric_fn(y, score)
    rng = np.random.default_rng(seed)
    n_blocks = math.ceil(n_dates / length)
    values = np.empty(n_boot)
    for b in range(n_boot):
        first = rng.integers(0, n_dates, size=n_blocks)
        picked = ((first[:, None] + np.arange(length)[None, :]) % n_dates).ravel()[:n_dates]
        rows = np.concatenate([np.arange(s, s + c) for s, c in zip(starts[picked], counts[picked])])
        values[b] = metric_fn(y[rows], score[rows])
    values = values[np.isfinite(values)]
    low, high = (np.quantile(values, [alpha / 2, 1 - alpha / 2]) if values.size else (math.nan, math.nan))
    return MetricInterval(metric, float(point), float(low), float(high), 1 - alpha, n_boot, length, n_dates,
                          int(dates.shape[0]))


# -- information coefficient --------------------------------------------------------------------
@dataclass(frozen=True)
class InformationCoefficient:
    """Mean Spearman IC with its t-stat and ICIR (mean / std of the IC series).

    ``method`` is ``cross_sectional`` (one IC per date over the symbols) or ``time_series`` (one IC
    per symbol and window of ``window`` dates, when dates have fewer than ``min_symbols`` symbols).
    """

    method: str
    mean: float
    std: float
    t_stat: float
    icir: float
    n: int
    min_symbols: int
    window: int | None
    note: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(np.corrcoef(stats.rankdata(a), stats.rankdata(b))[0, 1])


def ic_series(symbols: np.ndarray, dates: np.ndarray, score: np.ndarray, fwd_return: np.ndarray, *,
              min_symbols: int = 5, window: int = 63) -> tuple[str, np.ndarray, np.ndarray, int]:
    """(method, IC values, their period keys, median symbols per date); see :class:`InformationCoefficient`."""
    symbols, dates = np.asarray(symbols), np.asarray(dates)
    score, fwd_return = np.asarray(score, dtype=np.float64), np.asarray(fwd_return, dtype=np.float64)
    ok = np.isfinite(score) & np.isfinite(fwd_return)
    symbols, dates, score, fwd_return = symbols[ok], dates[ok], score[ok], fwd_return[ok]
    unique_dates, inverse, counts = np.unique(dates, return_inverse=True, return_counts=True)
    median_symbols = int(np.median(counts)) if counts.size else 0
    values, keys = [], []
    if median_symbols >= min_symbols:
        order = np.argsort(inverse, kind="stable")
        bounds = np.r_[0, np.cumsum(counts)]
        for i in range(unique_dates.size):
            rows = order[bounds[i]:bounds[i + 1]]
            if rows.size >= min_symbols:
                values.append(_spearman(score[rows], fwd_return[rows]))
                keys.append(unique_dates[i])
        method = "cross_sectional"
    else:
        period = inverse // window
        for sym in np.unique(symbols):
            mine = symbols == sym
            for p in np.unique(period[mine]):
                rows = mine & (period == p)
                if rows.sum() >= max(10, window // 3):
                    values.append(_spearman(score[rows], fwd_return[rows]))
                    keys.append(unique_dates[min(int(p) * window, unique_dates.size - 1)])
        method = "time_series"
    v = np.asarray(values, dtype=np.float64)
    k = np.asarray(keys)
    finite = np.isfinite(v)
    return method, v[finite], k[finite], median_symbols


def information_coefficient(symbols: np.ndarray, dates: np.ndarray, score: np.ndarray, fwd_return: np.ndarray,
                            *, min_symbols: int = 5, window: int = 63) -> InformationCoefficient:
    """Spearman IC of the score with the realised forward return.

    With at least ``min_symbols`` symbols per date (median) it is the per-date cross-sectional rank
    correlation. With fewer (e.g. two indices) a cross-section of ranks is degenerate (with two
    symbols every IC is +1 or -1), so it falls back to a time-series IC: per symbol, the rank
    correlation over consecutive windows of ``window`` dates. The t-stat is mean / (std / sqrt(n));
    overlapping label windows (horizon > 1) make it optimistic.
    """
    method, v, _, median = ic_series(symbols, dates, score, fwd_return, min_symbols=min_symbols, window=window)
    n = int(v.size)
    mean = float(v.mean()) if n else math.nan
    std = float(v.std(ddof=1)) if n > 1 else math.nan
    t = mean / (std / math.sqrt(n)) if n > 1 and std > 0 else math.nan
    icir = mean / std if n > 1 and std > 0 else math.nan
    if method == "cross_sectional":
        note = f"per-date cross-sectional Spearman over {median} symbols (median), {n} dates"
    else:
        note = (f"time-series Spearman per symbol over {window}-date windows ({n} windows): only {median} "
                f"symbol(s) per date, fewer than {min_symbols}, so a per-date rank correlation is degenerate")
    return InformationCoefficient(method, mean, std, t, icir, n, min_symbols,
                                  None if method == "cross_sectional" else window, note)


# -- Sharpe, PSR, DSR -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SharpeStats:
    sharpe: float          # per period
    n: int
    skew: float
    kurtosis: float        # non-excess (3 for a normal)

    @property
    def annualised(self) -> float:
        return self.sharpe * math.sqrt(TRADING_DAYS)


def sharpe_stats(returns: np.ndarray) -> SharpeStats:
    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size < 3 or r.std(ddof=1) == 0:
        return SharpeStats(math.nan, int(r.size), math.nan, math.nan)
    return SharpeStats(float(r.mean() / r.std(ddof=1)), int(r.size), float(stats.skew(r)),
                       float(stats.kurtosis(r, fisher=False)))


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """E[max SR] of ``n_trials`` independent zero-skill trials whose Sharpe estimates have variance
    ``sharpe_variance`` (Bailey & Lopez de Prado 2014, eq. for SR0):
    ``sqrt(V) * ((1 - g) * Z^-1(1 - 1/N) + g * Z^-1(1 - 1/(N e)))``, g the Euler-Mascheroni constant."""
    if n_trials < 1:
        raise InvalidInput("n_trials", "must be >= 1")
    if n_trials == 1:
        return 0.0
    z = stats.norm.ppf
    return float(math.sqrt(max(sharpe_variance, 0.0)) * (
        (1 - EULER_GAMMA) * z(1 - 1 / n_trials) + EULER_GAMMA * z(1 - 1 / (n_trials * math.e))))


def probabilistic_sharpe_ratio(sharpe: float, n: int, skew: float, kurtosis: float, benchmark: float = 0.0) -> float:
    """P(true SR > benchmark) given the observed per-period SR over ``n`` returns with the given skew
    and (non-excess) kurtosis."""
    denom = 1 - skew * sharpe + (kurtosis - 1) / 4 * sharpe ** 2
    if not (math.isfinite(sharpe) and n > 1 and denom > 0):
        return math.nan
    return float(stats.norm.cdf((sharpe - benchmark) * math.sqrt(n - 1) / math.sqrt(denom)))


@dataclass(frozen=True)
class DeflatedSharpe:
    sharpe: float
    sharpe_annualised: float
    n_returns: int
    skew: float
    kurtosis: float
    n_trials: int
    trials_sharpe_variance: float
    variance_source: str
    expected_max_sharpe: float
    psr: float
    dsr: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def deflated_sharpe_ratio(sharpe: float, n: int, skew: float, kurtosis: float, n_trials: int,
                          trials_sharpe_variance: float, variance_source: str = "given") -> DeflatedSharpe:
    """DSR = PSR with the benchmark set to the expected maximum Sharpe of ``n_trials`` trials."""
    sr0 = expected_max_sharpe(n_trials, trials_sharpe_variance)
    return DeflatedSharpe(
        sharpe, sharpe * math.sqrt(TRADING_DAYS), n, skew, kurtosis, n_trials, trials_sharpe_variance,
        variance_source, sr0, probabilistic_sharpe_ratio(sharpe, n, skew, kurtosis, 0.0),
        probabilistic_sharpe_ratio(sharpe, n, skew, kurtosis, sr0),
    )


# -- probability of backtest overfitting ----------------------------------------------------------
@dataclass(frozen=True)
class BacktestOverfitting:
    pbo: float
    n_candidates: int
    n_periods: int
    n_splits: int
    n_combinations: int
    logits: list[float]
    candidates: list[str]
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["logits"] = [round(v, 4) for v in self.logits]
        return out


def _per_column_sharpe(m: np.ndarray) -> np.ndarray:
    std = m.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = m.mean(axis=0) / std
    return np.where(np.isfinite(out), out, -np.inf)


def probability_of_backtest_overfitting(returns: np.ndarray, candidates: list[str] | None = None,
                                        n_splits: int = 10) -> BacktestOverfitting:
    """CSCV (Bailey, Borwein, Lopez de Prado & Zhu): ``returns`` is (T periods x N candidates).

    The T rows are cut into ``n_splits`` (even) contiguous blocks; for every choice of half of them
    as in-sample, the best in-sample candidate (by Sharpe) is ranked out-of-sample, and
    ``logit = ln(w / (1 - w))`` with ``w`` its relative rank in (0, 1). PBO is the share of
    combinations with ``logit <= 0`` (the in-sample winner at or below the out-of-sample median).
    """
    m = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        raise InvalidInput("returns", "needs a (periods x candidates) matrix with at least 2 candidates")
    if n_splits < 2 or n_splits % 2:
        raise InvalidInput("n_splits", f"must be an even number >= 2, got {n_splits}")
    t, n = m.shape
    if t < 2 * n_splits:
        raise InvalidInput("returns", f"{t} periods are too few for {n_splits} blocks of >= 2")
    names = candidates or [f"c{i}" for i in range(n)]
    blocks = np.array_split(np.arange(t), n_splits)
    logits = []
    for chosen in itertools.combinations(range(n_splits), n_splits // 2):
        ins = np.concatenate([blocks[i] for i in chosen])
        oos = np.concatenate([blocks[i] for i in range(n_splits) if i not in chosen])
        best = int(np.argmax(_per_column_sharpe(m[ins])))
        oos_sr = _per_column_sharpe(m[oos])
        rank = stats.rankdata(oos_sr)[best]  # 1 = worst, n = best
        w = rank / (n + 1)
        logits.append(math.log(w / (1 - w)))
    lam = np.asarray(logits)
    return BacktestOverfitting(float(np.mean(lam <= 0)), n, t, n_splits, len(logits), lam.tolist(), list(names))


def higher_is_better(metric: str) -> bool:
    return HIGHER_IS_BETTER.get(metric, True)
