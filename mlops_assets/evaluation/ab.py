"""A/B significance between a control (A: the champion / production model) and a candidate (B).

Two pieces of evidence, both paired on the same rows or dates:

* **Correctness** - McNemar's test (statsmodels) on the 2x2 table of "A right / wrong" x
  "B right / wrong". Only the discordant cells count; the exact binomial version is used when
  they hold fewer than ``exact_below`` (25) rows, the chi-square version with continuity
  correction otherwise. The effect size is the accuracy difference B - A (and the discordant
  odds ratio ``n(A wrong, B right) / n(A right, B wrong)``, 0.5 added to each cell).
* **Returns** - a paired **circular block bootstrap** of the annualised Sharpe difference
  B - A: blocks of ``block_length`` consecutive days (default ``ceil(n ** (1/3))``) are drawn
  with the same indices for both series, which keeps their autocorrelation and their
  correlation with each other; ``block_length=1`` is the iid bootstrap. The percentile
  interval at ``1 - alpha`` is reported.

Verdict: ``candidate_better`` when at least one test is significantly in B's favour and none in
A's; ``candidate_worse`` in the mirror case; ``no_significant_difference`` otherwise (also when
the two tests disagree).

The same function serves offline evaluation and served traffic: :func:`ab_test_frame` takes the
prediction log joined to realised labels and returns (one row per request, both models' scores)
and replays both as strategies to get the paired daily returns. Both tests are *paired*, so both
models must have scored the same requests: run the candidate in shadow mode, or re-score the
logged features with the model that did not serve a request.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import polars as pl
from statsmodels.stats.contingency_tables import mcnemar

from mlops_assets.evaluation.backtest import (
    CANDIDATE,
    CHAMPION,
    backtest,
    positions_from_scores,
    strategy_returns_aligned,
)
from mlops_assets.evaluation.errors import EvaluationInputError
from mlops_assets.evaluation.metrics import predicted_classes, true_classes
from mlops_assets.evaluation.performance import TRADING_DAYS

Verdict = Literal["candidate_better", "candidate_worse", "no_significant_difference"]


@dataclass(frozen=True)
class ABResult:
    """Outcome of :func:`ab_test`. ``table`` is ``[[both right, A right B wrong],
    [A wrong B right, both wrong]]``."""

    n: int
    table: list[list[int]]
    mcnemar_statistic: float
    mcnemar_p_value: float
    exact: bool
    accuracy_a: float
    accuracy_b: float
    accuracy_difference: float
    discordant_odds_ratio: float
    sharpe_a: float
    sharpe_b: float
    sharpe_difference: float
    sharpe_ci_low: float
    sharpe_ci_high: float
    sharpe_p_value: float
    n_days: int
    n_boot: int
    block_length: int
    alpha: float
    verdict: Verdict
    reason: str

    @property
    def p_value(self) -> float:
        """The smaller of the two p-values (the one that drove a significant verdict)."""
        values = [v for v in (self.mcnemar_p_value, self.sharpe_p_value) if math.isfinite(v)]
        return min(values) if values else math.nan

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "p_value": self.p_value}


def mcnemar_table(y_true: object, pred_a: object, pred_b: object) -> np.ndarray:
    """The paired 2x2 correctness table of A and B against ``y_true``."""
    y, a, b = (np.asarray(v).ravel() for v in (y_true, pred_a, pred_b))
    if not (y.shape == a.shape == b.shape):
        raise EvaluationInputError(
            "pred_b", f"lengths differ: y_true {y.shape[0]}, pred_a {a.shape[0]}, pred_b {b.shape[0]}"
        )
    ca, cb = a == y, b == y
    return np.array(
        [[np.sum(ca & cb), np.sum(ca & ~cb)], [np.sum(~ca & cb), np.sum(~ca & ~cb)]], dtype=np.int64
    )


def _sharpe_rows(samples: np.ndarray) -> np.ndarray:
    """Annualised Sharpe of each row; nan where the row has zero variance."""
    std = samples.std(axis=1, ddof=1)
    mean = samples.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = mean / std * math.sqrt(TRADING_DAYS)
    out[~np.isfinite(out)] = np.nan
    return out


def block_bootstrap_indices(n: int, n_boot: int, block_length: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n)`` indices of a circular block bootstrap."""
    n_blocks = math.ceil(n / block_length)
    starts = rng.integers(0, n, size=(n_boot, n_blocks))
    idx = (starts[:, :, None] + np.arange(block_length)[None, None, :]) % n
    return idx.reshape(n_boot, -1)[:, :n]


def sharpe_difference_ci(
    returns_a: object,
    returns_b: object,
    n_boot: int = 1000,
    seed: int = 0,
    block_length: int | None = None,
    alpha: float = 0.05,
) -> tuple[float, float, float, float, int]:
    """(difference, ci_low, ci_high, two-sided bootstrap p-value, block length) of Sharpe B - A."""
    ra = np.asarray(returns_a, dtype=np.float64).ravel()
    rb = np.asarray(returns_b, dtype=np.float64).ravel()
    if ra.shape != rb.shape:
        raise EvaluationInputError(
            "returns_b", f"has {rb.shape[0]} days, returns_a has {ra.shape[0]}", "pair them by date"
        )
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(rb))):
        raise EvaluationInputError("returns_a/returns_b", "contain NaN or infinite values")
    n = ra.shape[0]
    length = block_length or max(1, math.ceil(n ** (1 / 3)))
    if n < 3:
        return math.nan, math.nan, math.nan, math.nan, length
    observed = float(_sharpe_rows(np.vstack([rb, ra])) @ np.array([1.0, -1.0]))
    idx = block_bootstrap_indices(n, n_boot, length, np.random.default_rng(seed))
    diffs = _sharpe_rows(rb[idx]) - _sharpe_rows(ra[idx])
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0 or not math.isfinite(observed):
        return observed, math.nan, math.nan, math.nan, length
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)))
    return observed, float(low), float(high), float(p), length


def _verdict(
    acc_diff: float, p_mc: float, sharpe_low: float, sharpe_high: float, alpha: float
) -> tuple[Verdict, str]:
    better, worse = [], []
    if math.isfinite(p_mc) and p_mc < alpha and acc_diff != 0:
        evidence = f"McNemar p = {p_mc:.4g}, accuracy difference {acc_diff:+.4f}"
        (better if acc_diff > 0 else worse).append(evidence)
    if math.isfinite(sharpe_low) and sharpe_low > 0:
        better.append(f"Sharpe difference CI [{sharpe_low:.3f}, {sharpe_high:.3f}] above 0")
    if math.isfinite(sharpe_high) and sharpe_high < 0:
        worse.append(f"Sharpe difference CI [{sharpe_low:.3f}, {sharpe_high:.3f}] below 0")
    if better and not worse:
        return "candidate_better", "; ".join(better)
    if worse and not better:
        return "candidate_worse", "; ".join(worse)
    if better and worse:
        return "no_significant_difference", "tests disagree: " + "; ".join(better + worse)
    return "no_significant_difference", f"no test significant at alpha = {alpha}"


def ab_test(
    y_true: object,
    pred_a: object,
    pred_b: object,
    returns_a: object | None = None,
    returns_b: object | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    block_length: int | None = None,
    exact_below: int = 25,
) -> ABResult:
    """Compare control A and candidate B on hard predictions (and optionally daily returns)."""
    if not 0 < alpha < 1:
        raise EvaluationInputError("alpha", f"must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise EvaluationInputError("n_boot", f"must be >= 1, got {n_boot}")
    table = mcnemar_table(y_true, pred_a, pred_b)
    n = int(table.sum())
    if n == 0:
        raise EvaluationInputError("y_true", "is empty", "A/B needs paired predictions with realised labels")
    a_right_b_wrong, a_wrong_b_right = int(table[0, 1]), int(table[1, 0])
    discordant = a_right_b_wrong + a_wrong_b_right
    exact = discordant < exact_below
    if discordant == 0:
        stat, p_mc = 0.0, 1.0
    else:
        res = mcnemar(table, exact=exact, correction=True)
        stat, p_mc = float(res.statistic), float(res.pvalue)
    acc_a = float((table[0, 0] + table[0, 1]) / n)
    acc_b = float((table[0, 0] + table[1, 0]) / n)
    odds = (a_wrong_b_right + 0.5) / (a_right_b_wrong + 0.5)
    sharpe_a = sharpe_b = diff = low = high = p_sh = math.nan
    n_days, length = 0, block_length or 0
    if (returns_a is None) != (returns_b is None):
        raise EvaluationInputError("returns_a/returns_b", "pass both or neither")
    if returns_a is not None:
        ra = np.asarray(returns_a, dtype=np.float64).ravel()
        rb = np.asarray(returns_b, dtype=np.float64).ravel()
        diff, low, high, p_sh, length = sharpe_difference_ci(ra, rb, n_boot, seed, block_length, alpha)
        n_days = int(ra.shape[0])
        if n_days >= 2:
            sharpe_a, sharpe_b = (float(v) for v in _sharpe_rows(np.vstack([ra, rb])))
    verdict, reason = _verdict(acc_b - acc_a, p_mc, low, high, alpha)
    return ABResult(
        n=n, table=table.tolist(), mcnemar_statistic=stat, mcnemar_p_value=p_mc, exact=exact,
        accuracy_a=acc_a, accuracy_b=acc_b, accuracy_difference=acc_b - acc_a,
        discordant_odds_ratio=float(odds), sharpe_a=sharpe_a, sharpe_b=sharpe_b,
        sharpe_difference=diff, sharpe_ci_low=low, sharpe_ci_high=high, sharpe_p_value=p_sh,
        n_days=n_days, n_boot=n_boot, block_length=length, alpha=alpha, verdict=verdict, reason=reason,
    )


def ab_test_frame(
    df: pl.DataFrame,
    score_a: str,
    score_b: str,
    *,
    task_type: str = "binary",
    label_col: str = "label",
    return_col: str | None = "fwd_return",
    threshold: float = 0.5,
    mode: str = "long_flat",
    cost_bps: float = 0.0,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    block_length: int | None = None,
) -> ABResult:
    """:func:`ab_test` on a frame of paired predictions, e.g. served requests joined to labels.

    ``score_a`` / ``score_b`` name columns of model output (binary P(up) or a regression
    forecast; for multiclass, list columns of probabilities). With ``return_col`` (and
    ``symbol``, ``date``) both are replayed by :func:`.backtest.backtest` to get paired daily
    returns for the Sharpe bootstrap (the last request per symbol and date sets the position);
    without it only McNemar is run. McNemar uses every labelled request.
    """
    missing = [c for c in (score_a, score_b, label_col) if c not in df.columns]
    if missing:
        raise EvaluationInputError(
            "df", f"missing columns {missing}", "join the predictions to realised labels"
        )
    labelled = df.filter(pl.col(label_col).is_not_null())
    sa = np.asarray(labelled.get_column(score_a).to_list(), dtype=np.float64)
    sb = np.asarray(labelled.get_column(score_b).to_list(), dtype=np.float64)
    y = true_classes(task_type, labelled.get_column(label_col).to_numpy())
    pa, pb = predicted_classes(task_type, sa, threshold), predicted_classes(task_type, sb, threshold)
    ra = rb = None
    if return_col is not None:
        # one position per (symbol, date): the last request of the day counts
        last = labelled.with_row_index("_i").unique(["symbol", "date"], keep="last").sort("_i")
        keep = last.get_column("_i").to_numpy()
        bt = backtest(
            last, positions=positions_from_scores(task_type, sb[keep], mode, threshold),
            champion_positions=positions_from_scores(task_type, sa[keep], mode, threshold),
            mode=mode, cost_bps=cost_bps, return_col=return_col, stress_windows=0,
        )
        ra, rb = strategy_returns_aligned(bt, CHAMPION, CANDIDATE)
    return ab_test(y, pa, pb, ra, rb, n_boot=n_boot, seed=seed, alpha=alpha, block_length=block_length)
