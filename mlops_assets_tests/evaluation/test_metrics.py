"""Metrics against scikit-learn / numpy on fixed data, the comparison table, the plots."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from sklearn import metrics as skm

from mlops_assets.evaluation.errors import EvaluationInputError
from mlops_assets.evaluation.metrics import best_baseline_value, compare_to_baselines, compute_metrics
from mlops_assets.evaluation.plots import MAX_PNG_BYTES, figure_png, metric_figures, save_figures

Y_BIN = np.array([1, 0, 1, 1, 0, 0, 1, 0])
P_BIN = np.array([0.9, 0.2, 0.4, 0.7, 0.6, 0.1, 0.8, 0.3])


def test_binary_metrics_match_hand_counts_and_sklearn() -> None:
    m = compute_metrics("binary", Y_BIN, P_BIN)
    # hard predictions at 0.5: [1,0,0,1,1,0,1,0] -> TP=3, FP=1, FN=1, TN=3
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)
    # AUC by pair counting: positives {.9,.4,.7,.8} vs negatives {.2,.6,.1,.3}: only (.4, .6) misordered
    assert m["roc_auc"] == pytest.approx(15 / 16)
    expected_ll = -np.mean(Y_BIN * np.log(P_BIN) + (1 - Y_BIN) * np.log(1 - P_BIN))
    assert m["log_loss"] == pytest.approx(expected_ll)
    assert m["brier"] == pytest.approx(np.mean((P_BIN - Y_BIN) ** 2))


def test_binary_auc_undefined_on_one_class_is_nan() -> None:
    m = compute_metrics("binary", np.ones(4), np.array([0.6, 0.7, 0.2, 0.9]))
    assert math.isnan(m["roc_auc"])
    assert m["accuracy"] == pytest.approx(0.75)


def test_multiclass_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, size=60)
    logits = rng.normal(size=(60, 3)) + 1.5 * np.eye(3)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    m = compute_metrics("multiclass", y, proba)
    pred = proba.argmax(axis=1)
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["precision_macro"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert m["log_loss"] == pytest.approx(-np.mean(np.log(proba[np.arange(60), y])))
    assert m["roc_auc_ovr"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr"))
    assert m["roc_auc_ovr"] > 0.7


def test_regression_metrics_match_numpy() -> None:
    y = np.array([0.01, -0.02, 0.03, 0.0, -0.01])
    p = np.array([0.02, -0.01, 0.01, 0.01, 0.01])
    m = compute_metrics("regression", y, p)
    assert m["mae"] == pytest.approx(np.mean(np.abs(y - p)))
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((y - p) ** 2)))
    assert m["r2"] == pytest.approx(1 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2))
    assert m["direction_accuracy"] == pytest.approx(3 / 5)  # signs agree on rows 0, 1, 2


@pytest.mark.parametrize(
    ("task", "y", "score", "field"),
    [
        ("binary", [0, 1], [0.2, 1.3], "y_score"),
        ("binary", [0, 2], [0.2, 0.3], "y_true"),
        ("multiclass", [0, 1], [[0.5, 0.2], [0.5, 0.5]], "y_score"),
        ("regression", [0.1, 0.2], [0.1], "y_score"),
        ("ranking", [0, 1], [0.1, 0.2], "task_type"),
    ],
)
def test_bad_inputs_name_the_field(task: str, y: list, score: list, field: str) -> None:
    with pytest.raises(EvaluationInputError) as info:
        compute_metrics(task, y, score)
    assert info.value.field == field


def test_comparison_table_has_one_row_per_model_and_finds_best_baseline() -> None:
    table = compare_to_baselines(
        "binary", Y_BIN, {"candidate": P_BIN, "majority_class": np.full(8, 0.5), "momentum": 1 - P_BIN}
    )
    assert table.get_column("model").to_list() == ["candidate", "majority_class", "momentum"]
    assert table.filter(pl.col("model") == "candidate")["accuracy"].item() == pytest.approx(0.75)
    assert table.filter(pl.col("model") == "momentum")["roc_auc"].item() == pytest.approx(1 / 16)
    assert best_baseline_value(table, "roc_auc") == ("majority_class", pytest.approx(0.5))
    assert best_baseline_value(table, "log_loss")[0] == "majority_class"


def test_plots_are_small_pngs_and_full_size_files(tmp_path) -> None:
    figs = metric_figures("binary", Y_BIN, P_BIN)
    assert set(figs) == {"confusion_matrix", "roc", "precision_recall"}
    for fig in figs.values():
        png = figure_png(fig)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(png) < MAX_PNG_BYTES
    paths = save_figures(figs, tmp_path / "plots")
    assert all(p.exists() and p.stat().st_size > len(figure_png(figs[k])) for k, p in paths.items())
    assert set(metric_figures("regression", [0.1, -0.2, 0.3], [0.0, -0.1, 0.2])) == {
        "predicted_vs_actual", "residuals"
    }
    assert set(metric_figures("multiclass", [0, 1, 2], np.eye(3))) == {"confusion_matrix"}


def test_figure_png_shrinks_to_the_byte_budget() -> None:
    fig = metric_figures("binary", Y_BIN, P_BIN)["roc"]
    big = figure_png(fig, dpi=200, max_bytes=10**9)
    small = figure_png(fig, dpi=200, max_bytes=len(big) // 3)
    assert len(small) <= len(big) // 3
