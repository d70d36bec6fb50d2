"""The paired IC test of champion against shadow on the same labelled requests (``evaluation.shadow_ic``
through ``monitoring.shadow.compare_shadow``): a shadow that ranks the realised returns wins, identical
models tie, too few dates give no test, and a regression model gets the IC test and no McNemar."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from mlops_assets.evaluation.shadow_ic import paired_ic_test
from mlops_assets.monitoring.live_metrics import champion_vs_shadow
from mlops_assets.monitoring.shadow import (ShadowComparison, comparisons_table, shadow_evidence,
                                            write_shadow_report)


def _frames(n_dates: int, n_symbols: int, shadow_noise: float | None, *, task: str = "binary",
            seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Served outcomes (champion "1": pure noise) and shadow rows (version "2": the realised return plus
    ``shadow_noise``; None: the champion's own scores). Two requests of symbol S0 on each date."""
    rng = np.random.default_rng(seed)
    first = date(2025, 1, 6)
    rows = [(first + timedelta(days=d), f"S{k}") for d in range(n_dates) for k in range(n_symbols)]
    rows += [(first + timedelta(days=d), "S0") for d in range(n_dates)]
    n = len(rows)
    fwd_by_point = {p: rng.normal(0, 0.01) for p in set(rows)}
    fwd = np.array([fwd_by_point[p] for p in rows])
    champion = rng.normal(0, 0.01, n)
    shadow = champion.copy() if shadow_noise is None else fwd + rng.normal(0, shadow_noise, n)

    def outputs(score: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if task == "regression":
            return score, None
        prob = 1 / (1 + np.exp(-score / 0.01))
        return (prob >= 0.5).astype(float), prob

    pred_c, prob_c = outputs(champion)
    pred_s, prob_s = outputs(shadow)
    ids = [f"r{i}" for i in range(n)]
    outcomes = pl.DataFrame({
        "request_id": ids, "row": [0] * n, "symbol": [s for _, s in rows], "decision_date": [d for d, _ in rows],
        "model_name": ["m"] * n, "model_version": ["1"] * n, "variant": ["production"] * n,
        "prediction": pred_c, "probability": prob_c, "label": (fwd > 0).astype(float), "fwd_return": fwd,
        "label_status": ["labelled"] * n}, schema_overrides={"probability": pl.Float64})
    shadow_rows = pl.DataFrame({"request_id": ids, "row": [0] * n, "model_version": ["2"] * n,
                                "prediction": pred_s, "probability": prob_s},
                               schema_overrides={"probability": pl.Float64})
    return outcomes, shadow_rows


def _compare(outcomes: pl.DataFrame, shadow: pl.DataFrame, **kw: object) -> ShadowComparison:
    [c] = champion_vs_shadow(outcomes, shadow, lambda pairs, task, realised: paired_ic_test(
        pairs, task, realised, n_boot=400, **kw))
    return c


def test_a_shadow_that_ranks_the_realised_returns_beats_a_noise_champion_cross_sectionally() -> None:
    outcomes, shadow = _frames(30, 8, 0.005)
    c = _compare(outcomes, shadow)
    ic = c.ic_test
    assert ic is not None and ic.tested and ic.method == "cross_sectional"
    assert (ic.score, ic.realised, ic.n_dates, ic.n_pairs) == ("probability", "fwd_return", 30, 30 * 9)
    assert ic.ci_low > 0 and ic.p_value < 0.01 and ic.difference == pytest.approx(ic.shadow_ic - ic.champion_ic)
    # the champion's IC is the mean per-date Spearman over the symbols (S0's two requests averaged)
    points = (outcomes.group_by("symbol", "decision_date")
              .agg(pl.col("probability").mean(), pl.col("fwd_return").mean()))
    per_date = [stats.spearmanr(p["probability"], p["fwd_return"]).statistic
                for _, p in points.group_by("decision_date")]
    assert ic.champion_ic == pytest.approx(np.mean(per_date))
    assert c.test is not None and c.task == "binary"  # McNemar stays for a binary model
    assert "IC: the shadow ranks the outcomes better" in c.reason and "McNemar" in c.reason


def test_with_few_symbols_per_date_the_ic_is_the_per_symbol_time_series_one() -> None:
    outcomes, shadow = _frames(40, 2, 0.005, seed=1)
    ic = _compare(outcomes, shadow).ic_test
    assert ic is not None and ic.method == "time_series" and ic.n_dates == 40
    assert ic.ci_low > 0 and "per symbol" in ic.reason


def test_identical_models_differ_by_zero_and_the_interval_contains_zero() -> None:
    outcomes, shadow = _frames(25, 6, None, seed=2)
    ic = _compare(outcomes, shadow).ic_test
    assert ic is not None and ic.tested
    assert ic.difference == 0 and ic.ci_low <= 0 <= ic.ci_high and ic.p_value == 1.0
    assert ic.reason.startswith("no significant difference")


def test_too_few_dates_give_no_test_and_say_so() -> None:
    outcomes, shadow = _frames(5, 8, 0.005, seed=3)
    ic = _compare(outcomes, shadow).ic_test
    assert ic is not None and not ic.tested and ic.n_dates == 5
    assert ic.ci_low is None and ic.ci_high is None and ic.p_value is None
    assert "5 date(s)" in ic.reason and "fewer than the 10" in ic.reason
    more = _compare(outcomes, shadow, min_dates=5).ic_test
    assert more is not None and more.tested


def test_a_regression_model_gets_the_ic_test_and_no_mcnemar() -> None:
    outcomes, shadow = _frames(30, 8, 0.005, task="regression", seed=4)
    c = _compare(outcomes, shadow)
    assert c.task == "regression" and c.test is None
    assert c.champion_accuracy is None and c.shadow_accuracy is None
    assert c.reason.startswith("no McNemar") and "regression" in c.reason
    assert c.ic_test is not None and c.ic_test.score == "prediction" and c.ic_test.ci_low > 0
    signs = np.sign(outcomes["prediction"].to_numpy()) == np.sign(shadow["prediction"].to_numpy())
    assert c.agreement == pytest.approx(signs.mean())  # agreement of a regression model: the predicted direction


def test_without_a_forward_return_the_label_is_the_realised_value() -> None:
    outcomes, shadow = _frames(20, 8, 0.005, seed=5)
    ic = _compare(outcomes.drop("fwd_return"), shadow).ic_test
    assert ic is not None and ic.realised == "label" and ic.ci_low > 0


def test_the_ic_test_round_trips_and_shows_in_the_report_table_and_evidence(tmp_path: Path) -> None:
    outcomes, shadow = _frames(20, 6, 0.005, seed=6)
    c = _compare(outcomes, shadow)
    assert ShadowComparison.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    few = _compare(*_frames(4, 6, 0.005, seed=7))
    assert ShadowComparison.from_dict(json.loads(json.dumps(few.to_dict()))) == few
    row = comparisons_table([c, few]).row(0, named=True)
    assert (row["ic_method"], row["ic_dates"], row["ic_ci_low"]) == ("cross_sectional", 20, c.ic_test.ci_low)
    assert row["mcnemar_p_value"] == c.test.p_value
    write_shadow_report(tmp_path, "2025-02-01", [c], since="2025-01-13")
    evidence = shadow_evidence(tmp_path, "m", "2")
    assert evidence is not None and evidence["since"] == "2025-01-13"
    assert evidence["comparisons"][0]["ic_test"]["p_value"] == c.ic_test.p_value
    # without the IC test passed in, the comparison is as before: no ic_test
    [plain] = champion_vs_shadow(outcomes, shadow)
    assert plain.ic_test is None and plain.test == c.test
