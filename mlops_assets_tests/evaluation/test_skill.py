"""Skill-or-luck statistics on constructed data with known answers: DSR (the paper's example), IC,
the date-block bootstrap interval, PBO; and the purged, embargoed walk-forward layout."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mlops_assets.evaluation.skill import (
    date_block_bootstrap_ci,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    fast_roc_auc,
    information_coefficient,
    probability_of_backtest_overfitting,
)
from mlops_assets.evaluation.walk_forward import (
    Fold,
    LeakingFoldLayout,
    check_fold_layout,
    walk_forward_folds,
)


def test_deflated_sharpe_matches_the_papers_worked_example() -> None:
    # Bailey & Lopez de Prado (2014), "The Deflated Sharpe Ratio", section "A numerical example":
    # N = 100 trials whose annualised Sharpe ratios have variance 1/2; the selected strategy has an
    # annualised SR of 2.5 over T = 1250 daily returns (5 years) with skewness -3 and kurtosis 10.
    # Non-annualised: SR = 2.5 / sqrt(250) = 0.1581, V = 0.5 / 250. The paper finds the expected
    # maximum SR0 = 0.1132 (non-annualised) and DSR = 0.9004.
    sr, variance = 2.5 / math.sqrt(250), 0.5 / 250
    assert expected_max_sharpe(100, variance) == pytest.approx(0.1132, abs=5e-4)
    d = deflated_sharpe_ratio(sr, 1250, -3.0, 10.0, 100, variance)
    assert d.dsr == pytest.approx(0.9004, abs=1e-3)
    assert d.psr > d.dsr  # the benchmark 0 is easier to beat than the best of 100 trials
    # one trial: no selection, DSR is the PSR against zero
    assert deflated_sharpe_ratio(sr, 1250, -3.0, 10.0, 1, variance).dsr == pytest.approx(d.psr)


def test_ic_recovers_a_known_rank_correlation_cross_sectionally() -> None:
    rng = np.random.default_rng(1)
    n_dates, n_sym, rho = 60, 200, 0.5
    z = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=n_dates * n_sym)
    dates = np.repeat(np.arange(n_dates), n_sym)
    symbols = np.tile(np.arange(n_sym), n_dates)
    ic = information_coefficient(symbols, dates, z[:, 0], z[:, 1])
    expected = 6 / math.pi * math.asin(rho / 2)  # Spearman of a bivariate normal
    assert ic.method == "cross_sectional" and ic.n == n_dates
    assert ic.mean == pytest.approx(expected, abs=0.03)
    assert ic.t_stat > 10 and ic.icir == pytest.approx(ic.mean / ic.std)
    noise = information_coefficient(symbols, dates, z[:, 0], rng.normal(size=z.shape[0]))
    assert abs(noise.mean) < 0.03 and abs(noise.t_stat) < 3.5


def test_ic_with_two_symbols_falls_back_to_time_series() -> None:
    rng = np.random.default_rng(2)
    n_dates = 500
    ret = rng.normal(size=2 * n_dates)
    score = ret + rng.normal(scale=1.0, size=ret.size)  # Pearson 0.707 -> Spearman ~0.69
    dates = np.tile(np.arange(n_dates), 2)
    symbols = np.repeat(["GSPC", "IXIC"], n_dates)
    ic = information_coefficient(symbols, dates, score, ret, min_symbols=5, window=50)
    assert ic.method == "time_series" and ic.window == 50 and "degenerate" in ic.note
    assert ic.n == 20 and ic.mean == pytest.approx(6 / math.pi * math.asin(0.7071 / 2), abs=0.06)


def _binary_sample(rng: np.random.Generator, n_dates: int, n_sym: int, signal: float):
    latent = rng.normal(size=n_dates * n_sym)
    y = (latent + rng.normal(scale=1.0, size=latent.size) > 0).astype(int)
    score = signal * latent + rng.normal(size=latent.size)
    return np.repeat(np.arange(n_dates), n_sym), y, score


def test_bootstrap_interval_covers_the_population_auc_and_is_wider_for_noise() -> None:
    rng = np.random.default_rng(3)
    _, y_big, s_big = _binary_sample(rng, 4000, 50, 1.0)
    population = fast_roc_auc(y_big, s_big)  # ~ the population AUC (200k rows)
    from sklearn.metrics import roc_auc_score
    assert population == pytest.approx(roc_auc_score(y_big, s_big))
    dates, y, s = _binary_sample(np.random.default_rng(4), 150, 10, 1.0)
    ci = date_block_bootstrap_ci(dates, y, s, fast_roc_auc, metric="roc_auc", n_boot=300)
    assert ci.low < population < ci.high and ci.n_dates == 150 and ci.block_length == 6
    _, _, noise = _binary_sample(np.random.default_rng(4), 150, 10, 0.0)
    noise_ci = date_block_bootstrap_ci(dates, y, noise, fast_roc_auc, metric="roc_auc", n_boot=300)
    assert noise_ci.low < 0.5 < noise_ci.high
    assert noise_ci.width > ci.width


def test_pbo_is_high_for_noise_candidates_and_low_with_one_real_signal() -> None:
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 0.01, size=(1000, 12))
    high = probability_of_backtest_overfitting(noise, n_splits=10)
    assert high.n_combinations == math.comb(10, 5) and high.pbo >= 0.35
    skilled = noise.copy()
    skilled[:, 3] += 0.004  # a daily Sharpe of 0.4: the in-sample winner stays the out-of-sample winner
    low = probability_of_backtest_overfitting(skilled, n_splits=10)
    assert low.pbo < 0.05 and low.pbo < high.pbo


def test_produced_walk_forward_layouts_never_leak() -> None:
    for n_dates, k, h, e in [(1000, 3, 1, 5), (420, 4, 5, 10), (200, 2, 20, 0), (5000, 8, 3, 2)]:
        folds = walk_forward_folds(n_dates, k, h, embargo=e)
        assert len(folds) == k
        check_fold_layout(folds, h, e, n_dates)
        tests = np.concatenate([f.test for f in folds])
        assert np.array_equal(tests, np.arange(folds[0].test.min(), n_dates))  # contiguous, no gaps
        for f in folds:  # brute force: every train/validation row's label window ends before the test
            a = f.test.min()
            used = np.concatenate([f.train, f.validation])
            assert np.all(used + h < a)
            assert np.all(f.train + h < f.validation.min())
            assert f.train.size > 0 and f.validation.size > 0


def test_a_leaking_layout_is_caught() -> None:
    good = walk_forward_folds(300, 2, 5, embargo=3)[0]
    a, b = good.test_span
    # a training row whose label window (5 dates) runs into the test fold
    leaky = Fold(0, np.r_[good.train, a - 3], good.validation, good.test)
    with pytest.raises(LeakingFoldLayout, match="overlaps the test fold") as exc:
        check_fold_layout([leaky], horizon=5, embargo=3)
    assert exc.value.field == "folds[0].train"
    # a validation row right after the test fold, inside purge + embargo
    after = Fold(0, good.train, np.r_[good.validation, b + 5 + 2], good.test)
    with pytest.raises(LeakingFoldLayout, match="embargo"):
        check_fold_layout([after], horizon=5, embargo=3)
    # after the embargo it is allowed (a training row may follow a test fold in other schemes)
    check_fold_layout([Fold(0, good.train, np.r_[good.validation, b + 5 + 4], good.test)], horizon=5, embargo=3)
    # train overlapping its own validation window
    inner = Fold(0, np.r_[good.train, good.validation.min() - 1], good.validation, good.test)
    with pytest.raises(LeakingFoldLayout, match="validation"):
        check_fold_layout([inner], horizon=5, embargo=3)


def test_too_few_dates_for_the_folds_is_invalid_input() -> None:
    from mlops_assets.errors import InvalidInput

    with pytest.raises(InvalidInput) as exc:
        walk_forward_folds(40, 30, 5)
    assert exc.value.field == "n_folds"
    assert stats.norm.cdf(0) == 0.5
