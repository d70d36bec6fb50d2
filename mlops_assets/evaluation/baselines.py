"""Naive baselines a candidate model has to beat.

* **Majority class** - predicts the training split's class frequencies for every row. For a
  binary task that is the constant probability ``P(label = 1)`` in training: its hard
  prediction is the majority class, its ROC AUC is 0.5 and its log loss stays finite. For
  multiclass it is the vector of class frequencies; for regression the training mean.
* **Momentum rule** (binary): "up tomorrow if the past return was positive". A hard 1/0 rule
  would make the log loss infinite, so the probability is smoothed to ``high`` (0.55) when the
  past return (``ret_5d`` by default) is > 0 and ``low`` (0.45) otherwise; a missing past return
  gives 0.5. Its hard predictions at the 0.5 threshold are exactly the momentum rule.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from mlops_assets.evaluation.errors import EvaluationInputError
from mlops_assets.evaluation.metrics import as_labels, check_task_type


def majority_class_baseline(
    y_train: object, n: int, task_type: str = "binary", n_classes: int | None = None
) -> np.ndarray:
    """Scores of the majority-class baseline for ``n`` test rows, learnt from ``y_train``.

    Returns ``(n,)`` (binary: P(class 1); regression: the mean) or ``(n, k)`` (multiclass class
    frequencies, ``k = n_classes`` or ``max(y_train) + 1``).
    """
    task = check_task_type(task_type)
    if n < 0:
        raise EvaluationInputError("n", f"must be >= 0, got {n}")
    y = as_labels(task, y_train, n_classes)
    if y.shape[0] == 0:
        raise EvaluationInputError("y_train", "is empty", "pass the training labels")
    if task == "regression":
        return np.full(n, float(np.mean(y)))
    if task == "binary":
        return np.full(n, float(np.mean(y == 1)))
    k = n_classes if n_classes is not None else int(y.max()) + 1
    freqs = np.bincount(y, minlength=k).astype(np.float64) / y.shape[0]
    return np.tile(freqs, (n, 1))


def momentum_baseline(
    df: pl.DataFrame, column: str = "ret_5d", low: float = 0.45, high: float = 0.55
) -> np.ndarray:
    """Binary momentum rule: ``high`` where ``df[column] > 0``, ``low`` where it is <= 0,
    0.5 where it is missing."""
    if column not in df.columns:
        raise EvaluationInputError(
            "column", f"{column!r} is not in the test frame", "pass momentum_column=<a past-return feature>"
        )
    if not 0.0 <= low <= 0.5 <= high <= 1.0:
        raise EvaluationInputError("low/high", f"need 0 <= low <= 0.5 <= high <= 1, got {low}, {high}")
    past = df.get_column(column).cast(pl.Float64).fill_nan(None).to_numpy()
    out = np.where(past > 0, high, low).astype(np.float64)
    out[np.isnan(past)] = 0.5
    return out
