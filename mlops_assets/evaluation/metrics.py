"""Predictive metrics for the three task types, and the comparison table against baselines.

Task types (the ``task_type`` tag of a model version):

* ``binary``: ``y_true`` in {0, 1}; ``y_score`` is the probability of class 1, shape ``(n,)``
  (a ``(n, 2)`` array is accepted and its second column used). Class predictions use a
  threshold (0.5 by default).
* ``multiclass``: ``y_true`` is a class id in ``0..k-1``; ``y_score`` is ``(n, k)`` class
  probabilities (rows are renormalised when they sum to 1 within 1e-3).
* ``regression``: ``y_true`` and ``y_score`` are real numbers, shape ``(n,)``.

All figures come from scikit-learn. A metric that is undefined on the data (ROC AUC when
``y_true`` holds one class only) is ``nan``, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal, get_args

import numpy as np
import polars as pl
from sklearn import metrics as skm

from mlops_assets.evaluation.errors import EvaluationInputError

TaskType = Literal["binary", "multiclass", "regression"]
TASK_TYPES: tuple[str, ...] = get_args(TaskType)

# Whether a larger value is better; used by the comparison table and the compliance gate.
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "precision": True,
    "recall": True,
    "f1": True,
    "roc_auc": True,
    "log_loss": False,
    "brier": False,
    "precision_macro": True,
    "recall_macro": True,
    "f1_macro": True,
    "roc_auc_ovr": True,
    "mae": False,
    "rmse": False,
    "r2": True,
    "direction_accuracy": True,
}

METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "binary": ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier"),
    "multiclass": (
        "accuracy", "precision_macro", "recall_macro", "f1_macro", "log_loss", "roc_auc_ovr",
    ),
    "regression": ("mae", "rmse", "r2", "direction_accuracy"),
}

_RENORMALISE_TOLERANCE = 1e-3


def check_task_type(task_type: str) -> TaskType:
    """Return ``task_type`` when it is one of ``binary``, ``multiclass``, ``regression``."""
    if task_type not in TASK_TYPES:
        raise EvaluationInputError(
            "task_type", f"unknown task type {task_type!r}", f"use one of {', '.join(TASK_TYPES)}"
        )
    return task_type  # type: ignore[return-value]


def as_scores(task_type: str, y_score: object, n: int | None = None, field: str = "y_score") -> np.ndarray:
    """Validate model output for ``task_type`` and return it as a float array.

    Binary -> ``(n,)`` probabilities in [0, 1]; multiclass -> ``(n, k)`` rows summing to 1;
    regression -> ``(n,)``. ``n`` (when given) is the expected number of rows.
    """
    task = check_task_type(task_type)
    arr = np.asarray(y_score, dtype=np.float64)
    if task == "binary" and arr.ndim == 2 and arr.shape[1] == 2:
        arr = arr[:, 1]
    if task == "multiclass":
        if arr.ndim != 2 or arr.shape[1] < 2:
            raise EvaluationInputError(
                field, f"multiclass scores must have shape (n, k>=2), got {arr.shape}",
                "return one probability column per class id",
            )
    elif arr.ndim != 1:
        raise EvaluationInputError(field, f"{task} scores must have shape (n,), got {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise EvaluationInputError(field, f"has {arr.shape[0]} rows, expected {n}", "align it with y_true")
    if not np.all(np.isfinite(arr)):
        raise EvaluationInputError(field, "contains NaN or infinite values", "fix the model output")
    if task == "binary" and (arr.min(initial=0.0) < 0.0 or arr.max(initial=1.0) > 1.0):
        raise EvaluationInputError(field, "binary scores must be probabilities in [0, 1]")
    if task == "multiclass":
        sums = arr.sum(axis=1)
        if np.any(arr < 0) or np.any(np.abs(sums - 1.0) > _RENORMALISE_TOLERANCE):
            raise EvaluationInputError(
                field, "multiclass rows must be probabilities summing to 1", "apply a softmax"
            )
        arr = arr / sums[:, None]
    return arr


def as_labels(task_type: str, y_true: object, n_classes: int | None = None) -> np.ndarray:
    """Validate true labels: integers 0/1 (binary), 0..k-1 (multiclass), floats (regression)."""
    task = check_task_type(task_type)
    arr = np.asarray(y_true)
    if arr.ndim != 1:
        raise EvaluationInputError("y_true", f"must be one-dimensional, got shape {arr.shape}")
    if task == "regression":
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise EvaluationInputError("y_true", "contains NaN or infinite values", "drop unlabelled rows")
        return arr
    as_float = arr.astype(np.float64)
    if not np.all(np.isfinite(as_float)) or np.any(as_float != np.round(as_float)):
        raise EvaluationInputError("y_true", f"{task} labels must be integer class ids")
    labels = as_float.astype(np.int64)
    upper = 2 if task == "binary" else n_classes
    if labels.size and (labels.min() < 0 or (upper is not None and labels.max() >= upper)):
        raise EvaluationInputError(
            "y_true", f"labels must lie in 0..{(upper or 0) - 1}, got {labels.min()}..{labels.max()}"
        )
    return labels


def predicted_classes(task_type: str, y_score: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Hard predictions: ``score >= threshold`` (binary), argmax (multiclass),
    direction ``score > 0`` as 0/1 (regression)."""
    task = check_task_type(task_type)
    scores = np.asarray(y_score, dtype=np.float64)
    if task == "binary":
        return (scores >= threshold).astype(np.int64)
    if task == "multiclass":
        return np.argmax(scores, axis=1).astype(np.int64)
    return (scores > 0).astype(np.int64)


def true_classes(task_type: str, y_true: np.ndarray) -> np.ndarray:
    """True classes on the same scale as :func:`predicted_classes` (direction for regression)."""
    arr = np.asarray(y_true)
    if check_task_type(task_type) == "regression":
        return (arr.astype(np.float64) > 0).astype(np.int64)
    return arr.astype(np.int64)


def _safe(fn, *args, **kwargs) -> float:  # noqa: ANN001 - sklearn metric callables
    """Call a metric, mapping "undefined on this data" (ValueError) to nan."""
    try:
        return float(fn(*args, **kwargs))
    except ValueError:
        return math.nan


def compute_metrics(
    task_type: str, y_true: object, y_score: object, threshold: float = 0.5
) -> dict[str, float]:
    """Standard test-set metrics for one model's scores.

    binary: accuracy, precision, recall, f1, roc_auc, log_loss, brier (hard labels at
    ``threshold``); multiclass: accuracy, precision/recall/f1 macro, log_loss, roc_auc_ovr;
    regression: mae, rmse, r2 and direction_accuracy (sign agreement).
    """
    task = check_task_type(task_type)
    scores = as_scores(task, y_score)
    n_classes = scores.shape[1] if task == "multiclass" else None
    y = as_labels(task, y_true, n_classes)
    if y.shape[0] != scores.shape[0]:
        raise EvaluationInputError("y_score", f"has {scores.shape[0]} rows but y_true has {y.shape[0]}")
    if y.shape[0] == 0:
        raise EvaluationInputError("y_true", "is empty", "evaluate on a non-empty test split")
    if task == "binary":
        pred = predicted_classes(task, scores, threshold)
        return {
            "accuracy": float(skm.accuracy_score(y, pred)),
            "precision": float(skm.precision_score(y, pred, zero_division=0)),
            "recall": float(skm.recall_score(y, pred, zero_division=0)),
            "f1": float(skm.f1_score(y, pred, zero_division=0)),
            "roc_auc": _safe(skm.roc_auc_score, y, scores) if len(np.unique(y)) == 2 else math.nan,
            "log_loss": float(skm.log_loss(y, scores, labels=[0, 1])),
            "brier": float(skm.brier_score_loss(y, scores, pos_label=1)),
        }
    if task == "multiclass":
        labels = list(range(scores.shape[1]))
        pred = predicted_classes(task, scores)
        auc = math.nan
        if len(np.unique(y)) == len(labels):
            auc = _safe(skm.roc_auc_score, y, scores, multi_class="ovr", average="macro", labels=labels)
        return {
            "accuracy": float(skm.accuracy_score(y, pred)),
            "precision_macro": float(
                skm.precision_score(y, pred, labels=labels, average="macro", zero_division=0)
            ),
            "recall_macro": float(skm.recall_score(y, pred, labels=labels, average="macro", zero_division=0)),
            "f1_macro": float(skm.f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
            "log_loss": float(skm.log_loss(y, scores, labels=labels)),
            "roc_auc_ovr": auc,
        }
    return {
        "mae": float(skm.mean_absolute_error(y, scores)),
        "rmse": float(skm.root_mean_squared_error(y, scores)),
        "r2": _safe(skm.r2_score, y, scores) if y.shape[0] > 1 else math.nan,
        "direction_accuracy": float(np.mean((y > 0) == (scores > 0))),
    }


def compare_to_baselines(
    task_type: str, y_true: object, scores: Mapping[str, object], threshold: float = 0.5
) -> pl.DataFrame:
    """One row per model (in the order given: candidate, baselines, champion...), one column
    per metric, plus ``n`` (rows scored)."""
    if not scores:
        raise EvaluationInputError("scores", "is empty", "pass at least the candidate's scores")
    task = check_task_type(task_type)
    rows = []
    for name, score in scores.items():
        try:
            row = compute_metrics(task, y_true, score, threshold)
        except EvaluationInputError as exc:
            raise EvaluationInputError(f"scores[{name!r}]", exc.problem, exc.hint) from exc
        rows.append({"model": name, **row, "n": float(np.asarray(y_true).shape[0])})
    columns = ["model", *METRIC_NAMES[task], "n"]
    schema = {c: (pl.String if c == "model" else pl.Float64) for c in columns}
    return pl.DataFrame(rows, schema=schema)


def best_baseline_value(
    comparison: pl.DataFrame, metric: str, exclude: tuple[str, ...] = ("candidate", "champion")
) -> tuple[str, float] | None:
    """The best (name, value) of ``metric`` over rows not in ``exclude``; None when there is none."""
    if metric not in comparison.columns:
        raise EvaluationInputError("metric", f"{metric!r} is not a column of the comparison table")
    rows = comparison.filter(~pl.col("model").is_in(list(exclude))).drop_nans(metric).drop_nulls(metric)
    if rows.height == 0:
        return None
    ordered = rows.sort(metric, descending=HIGHER_IS_BETTER.get(metric, True))
    return str(ordered["model"][0]), float(ordered[metric][0])
