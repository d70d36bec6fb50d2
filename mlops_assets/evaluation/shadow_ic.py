"""The paired IC test of a champion against its shadow on the same labelled live requests.

``monitoring.shadow.compare_shadow`` pairs every served prediction with the shadow model's on the same
feature vector; this module judges the pairs whose outcome is known, with the statistics the promotion
gate uses (``evaluation.skill``), so a trading model is compared on what matters to it: how well its
score ranks the realised forward returns, not whether its hard labels are right.

* **score**: the logged ``probability`` (P(up)) of a binary model, falling back to its ``prediction``
  where no probability was logged; the ``prediction`` of a regression model.
* **realised**: the forward return ``live_outcomes.join_outcomes`` gives (the training dataset's own
  ``forward_labels``), else the label.
* **points**: one per symbol and decision date (requests of one symbol on one date share the realised
  value; their scores are averaged), so a busy symbol does not count as many symbols.
* **IC**: as ``skill.information_coefficient`` decides it. With at least ``min_symbols`` symbols per
  date (median) the per-date cross-sectional Spearman IC (``skill.ic_series``), averaged over the dates
  where both models have one; with fewer a per-date rank correlation is degenerate, so a time-series
  IC: per symbol, the Spearman correlation over its dates, averaged over the symbols (skill's 63-date
  windows would not fill on weeks of live traffic, so the window is the whole sample).
* **the test**: IC_shadow - IC_champion with the percentile interval of ``skill.date_block_bootstrap_ci``
  (a circular block bootstrap of whole dates); the statistic takes both models' scores on the same
  resampled dates, so the draws are paired. p-value: twice the share of draws on the other side of
  zero (two-sided; 1 when the difference is 0). Below ``min_dates`` dates, or with an undefined IC,
  there is no test and the reason says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import polars as pl
from scipy import stats

from mlops_assets.evaluation.skill import date_block_bootstrap_ci, ic_series
from mlops_assets.monitoring.shadow import DATE, REALISED, SYMBOL, IcTest

MIN_DATES = 10
F64 = pl.Float64


def _score(task: str, suffix: str) -> pl.Expr:
    pred = pl.col(f"prediction{suffix}").cast(F64)
    if task == "binary":
        return pl.col(f"probability{suffix}").cast(F64).fill_nan(None).fill_null(pred)
    return pred


def _rank_ic(score: np.ndarray, realised: np.ndarray) -> float:
    if score.size < 3 or np.ptp(score) == 0 or np.ptp(realised) == 0:
        return math.nan
    return float(np.corrcoef(stats.rankdata(score), stats.rankdata(realised))[0, 1])


def _per_symbol_ic(codes: np.ndarray, score: np.ndarray, realised: np.ndarray) -> float:
    values = np.array([_rank_ic(score[codes == k], realised[codes == k]) for k in np.unique(codes)])
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


def _points(labelled: pl.DataFrame, task: str) -> tuple[pl.DataFrame, int]:
    """(one row per symbol and date: champion score ``c``, shadow score ``s``, realised ``r``; pairs used)."""
    rows = labelled.select(pl.col(SYMBOL), pl.col(DATE), _score(task, "").alias("c"),
                           _score(task, "_shadow").alias("s"), pl.col(REALISED).cast(F64).alias("r"))
    rows = rows.drop_nulls().filter(pl.col("c").is_finite() & pl.col("s").is_finite() & pl.col("r").is_finite())
    points = rows.group_by(SYMBOL, DATE).agg(pl.col("c").mean(), pl.col("s").mean(), pl.col("r").mean())
    return points.sort(DATE, SYMBOL), rows.height


def paired_ic_test(labelled: pl.DataFrame, task: str, realised: str = "fwd_return", *, min_dates: int = MIN_DATES,
                   min_symbols: int = 5, n_boot: int = 1000, alpha: float = 0.05, block_length: int | None = None,
                   seed: int = 0) -> IcTest:
    """The paired IC test (module docstring) on one version pair's labelled pairs.

    ``labelled``: ``compare_shadow``'s labelled pairs (``prediction``, ``probability`` and their
    ``_shadow`` twins, ``monitoring.shadow.SYMBOL``, ``DATE`` and ``REALISED``); ``task``: ``binary``
    or ``regression``; ``realised``: the name of what ``REALISED`` holds (``fwd_return`` or ``label``).
    """
    has_prob = task == "binary" and labelled["probability"].cast(F64).fill_nan(None).drop_nulls().len() > 0
    score = "probability" if has_prob else "prediction"
    points, n_pairs = _points(labelled, task)
    level = 1 - alpha

    def untested(method: str | None, n_dates: int, ics: tuple[float, float], why: str) -> IcTest:
        c, s = ics
        return IcTest(method, score, realised, n_dates, n_pairs, c, s, s - c, None, None, level, None, n_boot,
                      None, min_dates, why)

    if points.is_empty():
        return untested(None, 0, (math.nan, math.nan),
                        "no test: no labelled pair has a decision date, finite scores and a realised value")
    dates, symbols = points[DATE].to_numpy(), points[SYMBOL].to_numpy()
    c, s, r = (points[k].to_numpy() for k in ("c", "s", "r"))
    median = int(np.median(np.unique(dates, return_counts=True)[1]))
    stat: Callable[[np.ndarray, np.ndarray], float]
    if median >= min_symbols:
        method = "cross_sectional"
        _, ic_c, keys_c, _ = ic_series(symbols, dates, c, r, min_symbols=min_symbols)
        _, ic_s, keys_s, _ = ic_series(symbols, dates, s, r, min_symbols=min_symbols)
        units, i, j = np.intersect1d(keys_c, keys_s, return_indices=True)
        y, x = ic_c[i], ic_s[j]  # one row per date: the two models' ICs of that date

        def stat(a: np.ndarray, b: np.ndarray) -> float:
            return float(np.mean(b) - np.mean(a)) if a.size else math.nan

        ics = (float(y.mean()) if y.size else math.nan, float(x.mean()) if x.size else math.nan)
        how = f"mean per-date cross-sectional Spearman IC over {median} symbols (median)"
    else:
        method = "time_series"
        codes = np.unique(symbols, return_inverse=True)[1]
        units, y, x = dates, np.column_stack([codes, r]), np.column_stack([c, s])

        def stat(a: np.ndarray, b: np.ndarray) -> float:
            return _per_symbol_ic(a[:, 0], b[:, 1], a[:, 1]) - _per_symbol_ic(a[:, 0], b[:, 0], a[:, 1])

        ics = (_per_symbol_ic(codes, c, r), _per_symbol_ic(codes, s, r))
        how = (f"time-series Spearman IC per symbol over its dates, mean over {codes.max() + 1} symbol(s): only "
               f"{median} symbol(s) per date (median), fewer than {min_symbols}")
    n_dates = int(np.unique(units).size)
    if n_dates < min_dates:
        return untested(method, n_dates, ics, f"no test: {n_dates} date(s) with labelled pairs, fewer than the "
                                              f"{min_dates} the date-block bootstrap needs ({how})")
    if not all(math.isfinite(v) for v in ics):
        return untested(method, n_dates, ics, "no test: an IC is undefined (constant scores or realised values) "
                                              f"({how})")
    draws: list[float] = []

    def recorded(a: np.ndarray, b: np.ndarray) -> float:
        draws.append(stat(a, b))
        return draws[-1]

    interval = date_block_bootstrap_ci(units, y, x, recorded, metric="ic_difference", n_boot=n_boot, alpha=alpha,
                                       block_length=block_length, seed=seed)
    boot = np.asarray(draws[1:])  # the first call is the point estimate, the rest the bootstrap draws
    boot = boot[np.isfinite(boot)]
    diff = interval.value
    p = min(1.0, 2 * min(float(np.mean(boot <= 0)), float(np.mean(boot >= 0)))) if boot.size else math.nan
    verdict = ("the shadow ranks the outcomes better" if interval.low > 0 else
               "the shadow ranks the outcomes worse" if interval.high < 0 else "no significant difference")
    shown = f"p<{1 / boot.size:.2g}" if p == 0 else f"p={p:.3g}"  # no draw on the other side of zero
    reason = (f"{verdict}: IC({score} vs {realised}) shadow {ics[1]:.3f} - champion {ics[0]:.3f} = {diff:+.3f}, "
              f"{level:.0%} interval [{interval.low:+.3f}, {interval.high:+.3f}], {shown} over {n_dates} dates "
              f"and {n_pairs} pairs ({how}; paired circular block bootstrap of whole dates, "
              f"block {interval.block_length}, {n_boot} draws)")
    return IcTest(method, score, realised, n_dates, n_pairs, ics[0], ics[1], diff, interval.low, interval.high,
                  level, p, n_boot, interval.block_length, min_dates, reason)
