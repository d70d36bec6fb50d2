"""SHAP on linear models where the exact values and the importance order are known."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from mlops_assets.evaluation.errors import EvaluationInputError
from mlops_assets.evaluation.explain import explain, explain_one, save_explanation

NAMES = ["big", "negative", "small", "unused"]
W = np.array([3.0, -2.0, 0.5, 0.0])


def linear(X: np.ndarray) -> np.ndarray:
    return X @ W + 1.0


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 4)), rng.normal(size=(30, 4))


def test_linear_model_values_and_importance_order() -> None:
    background, sample = data()
    expl = explain(linear, background, sample, NAMES, max_seconds=30)
    # interventional SHAP of a linear model: w_j * (x_j - mean of the background)
    expected = W * (expl.rows - background.mean(axis=0))
    assert np.allclose(expl.values, expected, atol=1e-6)
    assert expl.global_importance["feature"].to_list() == NAMES
    assert expl.global_importance["mean_abs_shap"][-1] == pytest.approx(0.0, abs=1e-9)
    assert expl.base_value == pytest.approx(float(linear(background).mean()))
    assert expl.n_rows == 30 and not expl.truncated
    row = expl.per_row[0]
    assert row["prediction"] == pytest.approx(float(linear(expl.rows[:1])[0]))
    assert row["top_features"][0]["feature"] in {"big", "negative"}
    assert expl.summary_png[:4] == b"\x89PNG" and len(expl.summary_png) < 100_000


def test_multiclass_output_uses_the_predicted_class() -> None:
    background, sample = data()

    def proba(X: np.ndarray) -> np.ndarray:
        z = X @ W
        p1 = 1 / (1 + np.exp(-z))
        return np.stack([1 - p1, p1], axis=1)

    expl = explain(proba, background, sample[:6], NAMES)
    assert expl.values.shape == (6, 4, 2)
    assert expl.global_importance["feature"].to_list()[:2] == ["big", "negative"]
    for i, row in enumerate(expl.per_row):
        assert row["output_index"] == int(np.argmax(proba(expl.rows[i:i + 1])[0]))
        assert row["prediction"] == pytest.approx(float(proba(expl.rows[i:i + 1])[0, row["output_index"]]))


def test_explain_one_is_additive() -> None:
    background, sample = data()
    result = explain_one(linear, background, sample[3], NAMES, top_k=2)
    assert result["prediction"] == pytest.approx(float(linear(sample[3:4])[0]))
    total = result["base_value"] + sum(result["contributions"].values())
    assert total == pytest.approx(result["prediction"])
    assert result["contributions"]["unused"] == pytest.approx(0.0, abs=1e-9)
    assert len(result["top_features"]) == 2
    assert result["features"]["big"] == pytest.approx(sample[3, 0])


def test_time_budget_stops_early() -> None:
    background, sample = data()

    def slow(X: np.ndarray) -> np.ndarray:
        time.sleep(0.03)
        return linear(X)

    expl = explain(slow, background, sample, NAMES, max_seconds=0.3, batch_size=2)
    assert expl.truncated and 2 <= expl.n_rows < 30  # stopped at the budget, with at least one batch


def test_save_explanation_writes_json_and_png(tmp_path) -> None:
    background, sample = data()
    expl = explain(linear, background, sample[:5], NAMES)
    paths = save_explanation(expl, tmp_path / "explanation")
    doc = json.loads(paths["json"].read_text())
    assert doc["global_importance"][0]["feature"] == "big"
    assert len(json.loads(paths["values"].read_text())["values"]) == 5
    assert paths["png"].read_bytes() == expl.summary_png


def test_bad_inputs() -> None:
    background, sample = data()
    with pytest.raises(EvaluationInputError) as info:
        explain(linear, background, sample[:, :3], NAMES)
    assert info.value.field == "X_sample"
    with pytest.raises(EvaluationInputError, match="predict_fn"):
        explain(lambda X: np.zeros((1, 2, 3)), background, sample, NAMES)
