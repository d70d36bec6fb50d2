"""Fairness figures on a constructed case with known group rates."""

from __future__ import annotations

import numpy as np
import pytest

from mlops_assets.evaluation.errors import EvaluationInputError
from mlops_assets.evaluation.fairness import fairness_audit, severity_for


def constructed_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three groups of 10 rows.

    a: 5 positives (4 predicted 1), 5 negatives (1 predicted 1): TPR .8, FPR .2, selection .5, accuracy .8
    b: 5 positives (2 predicted 1), 5 negatives (3 predicted 1): TPR .4, FPR .6, selection .5, accuracy .4
    c: 4 positives (1 predicted 1), 6 negatives (0 predicted 1): TPR .25, FPR 0, selection .1, accuracy .7
    """
    y = np.array([1] * 5 + [0] * 5 + [1] * 5 + [0] * 5 + [1] * 4 + [0] * 6)
    p = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0, 0]
                 + [1, 1, 0, 0, 0, 1, 1, 1, 0, 0]
                 + [1, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    groups = np.array(["a"] * 10 + ["b"] * 10 + ["c"] * 10)
    return y, p, groups


def test_group_rates_and_disparities() -> None:
    y, p, g = constructed_case()
    report = fairness_audit(y, p, g, policy={}, sensitive_name="regime", min_group_size=5)
    rows = {r["group"]: r for r in report.by_group.to_dicts()}
    assert rows["a"]["recall"] == pytest.approx(0.8)
    assert rows["b"]["false_positive_rate"] == pytest.approx(0.6)
    assert rows["c"]["selection_rate"] == pytest.approx(0.1)
    assert rows["c"]["false_negative_rate"] == pytest.approx(0.75)
    assert rows["b"]["accuracy"] == pytest.approx(0.4)
    assert rows["a"]["count"] == 10
    d = report.disparities
    assert d["demographic_parity_difference"] == pytest.approx(0.5 - 0.1)
    assert d["disparate_impact_ratio"] == pytest.approx(0.1 / 0.5)
    assert d["equal_opportunity_difference"] == pytest.approx(0.8 - 0.25)
    assert d["equalized_odds_difference"] == pytest.approx(max(0.8 - 0.25, 0.6 - 0.0))
    assert d["accuracy_difference"] == pytest.approx(0.8 - 0.4)
    assert report.overall["selection_rate"] == pytest.approx(11 / 30)
    assert report.checks == [] and report.severity == "ok"


def test_severity_per_threshold() -> None:
    y, p, g = constructed_case()
    policy = {
        "demographic_parity_difference": 0.45,   # 0.40 > 0.8 * 0.45 -> warn
        "disparate_impact_ratio": 0.8,           # 0.20 < 0.80 -> fail
        "equal_opportunity_difference": 1.0,     # 0.55 <= 0.8 -> ok
        "equalized_odds_difference": 0.5,        # 0.60 > 0.50 -> fail
    }
    report = fairness_audit(y, p, g, policy=policy, min_group_size=20)
    severities = {c.metric: c.severity for c in report.checks}
    assert severities == {
        "demographic_parity_difference": "warn",
        "disparate_impact_ratio": "fail",
        "equal_opportunity_difference": "ok",
        "equalized_odds_difference": "fail",
    }
    di = next(c for c in report.checks if c.metric == "disparate_impact_ratio")
    assert (di.value, di.threshold) == (pytest.approx(0.2), 0.8)
    assert report.severity == "fail" and not report.passed
    assert report.small_groups == ["a", "b", "c"]


def test_ratio_warn_zone_and_undefined_values() -> None:
    assert severity_for("disparate_impact_ratio", 0.83, 0.8).severity == "warn"   # gap .17 > .16
    assert severity_for("disparate_impact_ratio", 0.95, 0.8).severity == "ok"
    assert severity_for("equalized_odds_difference", float("nan"), 0.1).severity == "warn"


def test_bad_inputs() -> None:
    y, p, g = constructed_case()
    with pytest.raises(EvaluationInputError) as info:
        fairness_audit(y, p + 1, g)
    assert info.value.field == "y_pred"
    with pytest.raises(EvaluationInputError, match="unknown fairness metrics"):
        fairness_audit(y, p, g, policy={"parity": 0.1})
    with pytest.raises(EvaluationInputError, match="lengths differ"):
        fairness_audit(y, p, g[:-1])


def test_group_without_positives_does_not_fake_a_gap() -> None:
    y, p, g = constructed_case()
    # group d: 10 negatives, 2 predicted positive -> FPR .2, no TPR
    y = np.r_[y, np.zeros(10, dtype=int)]
    p = np.r_[p, [1, 1] + [0] * 8]
    g = np.r_[g, ["d"] * 10]
    report = fairness_audit(y, p, g, policy={"equal_opportunity_difference": 1.0})
    assert report.degenerate_groups == ["d"]
    rows = {r["group"]: r for r in report.by_group.to_dicts()}
    assert np.isnan(rows["d"]["recall"]) and rows["d"]["false_positive_rate"] == pytest.approx(0.2)
    # TPR gap over a, b, c only (Fairlearn alone would report 0.8 - 0 for d)
    assert report.disparities["equal_opportunity_difference"] == pytest.approx(0.8 - 0.25)
    assert report.disparities["equalized_odds_difference"] == pytest.approx(0.6)
