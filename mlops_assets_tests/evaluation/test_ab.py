"""McNemar on known tables (textbook values) and the paired bootstrap of the Sharpe difference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar

from mlops_assets.evaluation.ab import ab_test, ab_test_frame, block_bootstrap_indices, mcnemar_table
from mlops_assets.evaluation.errors import EvaluationInputError


def arrays_for_table(table: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y_true, pred_a, pred_b whose correctness table is ``table`` (all labels 1)."""
    (both, a_only), (b_only, neither) = table
    a = [1] * both + [1] * a_only + [0] * b_only + [0] * neither
    b = [1] * both + [0] * a_only + [1] * b_only + [0] * neither
    return np.ones(len(a), dtype=int), np.array(a), np.array(b)


def test_agresti_presidential_approval_table() -> None:
    # Agresti, Categorical Data Analysis: 794 / 150 / 86 / 570, McNemar z^2 = 17.36 (no correction)
    table = [[794, 150], [86, 570]]
    y, a, b = arrays_for_table(table)
    assert mcnemar_table(y, a, b).tolist() == table
    assert mcnemar(table, exact=False, correction=False).statistic == pytest.approx(64**2 / 236, abs=1e-9)
    assert 64**2 / 236 == pytest.approx(17.36, abs=0.01)
    result = ab_test(y, a, b)
    assert not result.exact
    assert result.mcnemar_statistic == pytest.approx(63**2 / 236)  # continuity-corrected
    assert result.mcnemar_p_value == pytest.approx(stats.chi2.sf(63**2 / 236, df=1))
    assert result.accuracy_a == pytest.approx(944 / 1600)
    assert result.accuracy_b == pytest.approx(880 / 1600)
    assert result.verdict == "candidate_worse"  # B is the candidate and is right less often
    assert result.discordant_odds_ratio == pytest.approx(86.5 / 150.5)


def test_exact_binomial_when_discordant_counts_are_small() -> None:
    y, a, b = arrays_for_table([[30, 2], [8, 10]])
    result = ab_test(y, a, b)
    assert result.exact
    assert result.mcnemar_p_value == pytest.approx(2 * (1 + 10 + 45) / 1024)  # 2 * P(X <= 2 | 10, 1/2)
    assert result.verdict == "no_significant_difference"


def test_identical_models_have_no_difference() -> None:
    y, a, _ = arrays_for_table([[40, 0], [0, 10]])
    r = np.random.default_rng(0).normal(0, 0.01, size=100)
    result = ab_test(y, a, a, r, r, n_boot=200)
    assert result.mcnemar_p_value == 1.0
    assert result.sharpe_difference == pytest.approx(0.0)
    assert result.sharpe_ci_low == pytest.approx(0.0) and result.sharpe_ci_high == pytest.approx(0.0)
    assert result.verdict == "no_significant_difference"


def test_bootstrap_detects_a_better_return_stream() -> None:
    rng = np.random.default_rng(5)
    ra = rng.normal(0.0, 0.01, size=250)
    rb = ra + 0.003 + rng.normal(0, 0.002, size=250)
    y, a, b = arrays_for_table([[100, 5], [6, 39]])
    result = ab_test(y, a, b, ra, rb, n_boot=500, seed=1)
    def sharpe(r: np.ndarray) -> float:
        return float(np.mean(r) / np.std(r, ddof=1) * math.sqrt(252))

    reference = sharpe(rb) - sharpe(ra)
    assert result.sharpe_difference == pytest.approx(reference)
    assert 0 < result.sharpe_ci_low < reference < result.sharpe_ci_high
    assert result.verdict == "candidate_better"
    assert result.block_length == math.ceil(250 ** (1 / 3))
    # same seed, same interval
    again = ab_test(y, a, b, ra, rb, n_boot=500, seed=1)
    assert (again.sharpe_ci_low, again.sharpe_ci_high) == (result.sharpe_ci_low, result.sharpe_ci_high)


def test_conflicting_evidence_is_not_a_win() -> None:
    rng = np.random.default_rng(2)
    ra = rng.normal(0.0, 0.01, size=250)
    rb = ra - 0.004 + rng.normal(0, 0.002, size=250)
    y, a, b = arrays_for_table([[100, 5], [40, 5]])  # B more accurate, but loses money
    result = ab_test(y, a, b, ra, rb, n_boot=300)
    assert result.mcnemar_p_value < 0.05 and result.sharpe_ci_high < 0
    assert result.verdict == "no_significant_difference" and "disagree" in result.reason


def test_block_bootstrap_indices_are_circular_blocks() -> None:
    idx = block_bootstrap_indices(10, 4, 3, np.random.default_rng(0))
    assert idx.shape == (4, 10)
    steps = (idx[:, 1:3] - idx[:, 0:2]) % 10
    assert np.all(steps == 1)  # first block is consecutive (mod n)


def test_bad_inputs() -> None:
    with pytest.raises(EvaluationInputError, match="lengths differ"):
        ab_test([1, 0], [1, 0], [1])
    with pytest.raises(EvaluationInputError, match="both or neither"):
        ab_test([1, 0], [1, 0], [1, 1], returns_a=[0.1, 0.2])


def test_served_traffic_frame_matches_the_array_call() -> None:
    import datetime as dt

    import polars as pl

    rng = np.random.default_rng(11)
    n_days, symbols = 60, ["A", "B"]
    dates = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(n_days)]
    label = rng.integers(0, 2, size=n_days * 2)
    fwd = np.where(label == 1, 0.01, -0.01) + rng.normal(0, 0.002, size=label.size)
    score_b = np.clip(label * 0.6 + 0.2 + rng.normal(0, 0.15, size=label.size), 0, 1)  # mostly right
    score_a = rng.uniform(size=label.size)                                             # a coin
    log = pl.DataFrame({"symbol": np.repeat(symbols, n_days), "date": dates * 2, "label": label,
                        "fwd_return": fwd, "score_a": score_a, "score_b": score_b})
    unlabelled = log.head(3).with_columns(pl.lit(None, dtype=pl.Int64).alias("label"),
                                          pl.col("date") + pl.duration(days=365))
    repeated = log.head(2)  # the same symbol and day requested twice
    log = pl.concat([log, unlabelled, repeated])
    result = ab_test_frame(log, "score_a", "score_b", n_boot=300)
    direct = ab_test(np.r_[label, label[:2]], (np.r_[score_a, score_a[:2]] >= 0.5).astype(int),
                     (np.r_[score_b, score_b[:2]] >= 0.5).astype(int))
    assert result.n == label.size + 2  # unlabelled requests dropped, repeated ones kept
    assert result.table == direct.table
    assert result.n_days == n_days and result.sharpe_ci_low > 0
    assert result.verdict == "candidate_better"
