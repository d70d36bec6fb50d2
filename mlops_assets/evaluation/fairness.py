"""Fairness audit of hard predictions across the groups of any categorical column.

For a trading model the default segment is the volatility ``regime``: a model that is right
in calm markets and systematically wrong (or always "long") in stressed ones fails the same
audit a credit model would fail across demographic groups. Figures come from **Fairlearn**:

* per group (``MetricFrame``): count, accuracy, precision, recall, false_positive_rate,
  false_negative_rate, selection_rate (share predicted 1);
* disparities: ``demographic_parity_difference`` (max - min selection rate),
  ``disparate_impact_ratio`` (min / max selection rate, Fairlearn's
  ``demographic_parity_ratio``), ``equalized_odds_difference`` (worst of the TPR and FPR gaps),
  ``equal_opportunity_difference`` (TPR gap), ``accuracy_difference``.

A group without positive labels has no true positive rate (one without negatives no false
positive rate), but Fairlearn reports 0 for it, which would show a spurious gap of up to 1.
Such groups are listed in ``degenerate_groups``, their undefined rates are ``nan`` in the table,
and the TPR/FPR-based disparities are computed by Fairlearn on the rows of the other groups
(``nan`` when fewer than two groups remain).

The policy maps a disparity name to its threshold. Ratios are lower bounds (fail below), the
others upper bounds (fail above). Severity is ``fail`` beyond the threshold, ``warn`` within
``warn_margin`` (20 %) of it - measured on the gap to parity, so a ratio threshold of 0.8 warns
below 0.84 - and ``ok`` otherwise; an undefined value (a group without positives) is ``warn``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl
from fairlearn import metrics as flm
from sklearn.metrics import accuracy_score, precision_score, recall_score

from mlops_assets.evaluation.errors import EvaluationInputError

Severity = Literal["ok", "warn", "fail"]
RATIO_METRICS: frozenset[str] = frozenset({"disparate_impact_ratio"})
DISPARITY_METRICS: tuple[str, ...] = (
    "demographic_parity_difference",
    "disparate_impact_ratio",
    "equalized_odds_difference",
    "equal_opportunity_difference",
    "accuracy_difference",
)
DEFAULT_FAIRNESS_LIMITS: dict[str, float] = {
    "demographic_parity_difference": 0.2,
    "disparate_impact_ratio": 0.8,
    "equalized_odds_difference": 0.2,
    "equal_opportunity_difference": 0.2,
}
GROUP_METRICS: tuple[str, ...] = (
    "accuracy", "precision", "recall", "false_positive_rate", "false_negative_rate", "selection_rate",
)
_SEVERITY_RANK = {"ok": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True)
class FairnessCheck:
    """One disparity against its policy threshold."""

    metric: str
    value: float
    threshold: float
    severity: Severity
    message: str


@dataclass
class FairnessReport:
    """``by_group``: one row per group (``group``, ``count`` + ``GROUP_METRICS``); ``overall``:
    the same metrics on all rows; ``disparities``: the figures in ``DISPARITY_METRICS``."""

    sensitive_name: str
    by_group: pl.DataFrame
    overall: dict[str, float]
    disparities: dict[str, float]
    checks: list[FairnessCheck] = field(default_factory=list)
    small_groups: list[str] = field(default_factory=list)
    degenerate_groups: list[str] = field(default_factory=list)

    @property
    def severity(self) -> Severity:
        """The worst severity over the checks (``ok`` when there is no check)."""
        worst = max((c.severity for c in self.checks), key=_SEVERITY_RANK.__getitem__, default="ok")
        return worst  # type: ignore[return-value]

    @property
    def passed(self) -> bool:
        return self.severity != "fail"

    def to_dict(self) -> dict[str, object]:
        return {
            "sensitive_name": self.sensitive_name,
            "severity": self.severity,
            "by_group": self.by_group.to_dicts(),
            "overall": self.overall,
            "disparities": self.disparities,
            "checks": [c.__dict__ for c in self.checks],
            "small_groups": self.small_groups,
            "degenerate_groups": self.degenerate_groups,
        }


def _binary(name: str, values: object) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise EvaluationInputError(name, f"must be one-dimensional, got shape {arr.shape}")
    as_float = arr.astype(np.float64)
    if not np.all(np.isin(as_float, (0.0, 1.0))):
        raise EvaluationInputError(
            name, "must hold 0/1 values", "binarise first (threshold a probability, one-vs-rest a class)"
        )
    return as_float.astype(np.int64)


def severity_for(metric: str, value: float, threshold: float, warn_margin: float = 0.2) -> FairnessCheck:
    """Grade one disparity against its threshold (see the module docstring)."""
    is_ratio = metric in RATIO_METRICS
    bound = "minimum" if is_ratio else "maximum"
    if value is None or not math.isfinite(value):
        return FairnessCheck(metric, math.nan, threshold, "warn", f"{metric} is undefined on this data")
    gap, limit = (1.0 - value, 1.0 - threshold) if is_ratio else (value, threshold)
    if gap > limit + 1e-12:
        severity: Severity = "fail"
    elif gap > limit * (1.0 - warn_margin):
        severity = "warn"
    else:
        severity = "ok"
    message = f"{metric} = {value:.4f} ({bound} {threshold:g}): {severity}"
    return FairnessCheck(metric, float(value), float(threshold), severity, message)


def _metric_frame(y: np.ndarray, p: np.ndarray, groups: np.ndarray) -> flm.MetricFrame:
    pos = {"pos_label": 1}
    metrics = {
        "count": flm.count,
        "accuracy": accuracy_score,
        "precision": functools.partial(precision_score, zero_division=0),
        "recall": functools.partial(recall_score, zero_division=0),
        "false_positive_rate": functools.partial(flm.false_positive_rate, **pos),
        "false_negative_rate": functools.partial(flm.false_negative_rate, **pos),
        "selection_rate": functools.partial(flm.selection_rate, **pos),
        "true_positive_rate": functools.partial(flm.true_positive_rate, **pos),
    }
    return flm.MetricFrame(metrics=metrics, y_true=y, y_pred=p, sensitive_features=groups)


def fairness_audit(
    y_true: object,
    y_pred: object,
    sensitive: object,
    policy: dict[str, float] | None = None,
    sensitive_name: str = "regime",
    warn_margin: float = 0.2,
    min_group_size: int = 30,
) -> FairnessReport:
    """Audit 0/1 predictions across the groups of ``sensitive`` (any categorical values).

    ``policy`` maps names in ``DISPARITY_METRICS`` to thresholds (``DEFAULT_FAIRNESS_LIMITS``
    when None). Groups with fewer than ``min_group_size`` rows are listed in ``small_groups``:
    their rates are noisy, read their disparities with care.
    """
    y, p = _binary("y_true", y_true), _binary("y_pred", y_pred)
    groups = np.asarray(sensitive).astype(str)
    if not (y.shape[0] == p.shape[0] == groups.shape[0]):
        raise EvaluationInputError(
            "sensitive",
            f"lengths differ: y_true {y.shape[0]}, y_pred {p.shape[0]}, sensitive {groups.shape[0]}",
        )
    if y.shape[0] == 0:
        raise EvaluationInputError("y_true", "is empty")
    limits = dict(DEFAULT_FAIRNESS_LIMITS if policy is None else policy)
    unknown = sorted(set(limits) - set(DISPARITY_METRICS))
    if unknown:
        raise EvaluationInputError(
            "policy", f"unknown fairness metrics {unknown}", f"use {list(DISPARITY_METRICS)}"
        )
    no_pos = {str(g) for g in np.unique(groups) if not np.any(y[groups == g] == 1)}
    no_neg = {str(g) for g in np.unique(groups) if not np.any(y[groups == g] == 0)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-division and single-class warnings from small groups
        mf = _metric_frame(y, p, groups)
        by_group = mf.by_group
        disparities = {
            "demographic_parity_difference": float(
                flm.demographic_parity_difference(y, p, sensitive_features=groups)
            ),
            "disparate_impact_ratio": float(flm.demographic_parity_ratio(y, p, sensitive_features=groups)),
            "equalized_odds_difference": _on_groups(
                flm.equalized_odds_difference, y, p, groups, exclude=no_pos | no_neg
            ),
            "equal_opportunity_difference": _on_groups(
                flm.equal_opportunity_difference, y, p, groups, exclude=no_pos
            ),
            "accuracy_difference": float(mf.difference(method="between_groups")["accuracy"]),
        }
    names = [str(g) for g in by_group.index]
    columns = {m: by_group[m].astype(float).to_numpy().copy() for m in GROUP_METRICS}
    undefined_rates = (("recall", no_pos), ("false_negative_rate", no_pos), ("false_positive_rate", no_neg))
    for metric, undefined in undefined_rates:
        columns[metric][[n in undefined for n in names]] = np.nan
    table = pl.DataFrame({"group": names, "count": by_group["count"].astype(float).to_numpy(), **columns})
    overall = {m: float(mf.overall[m]) for m in ("count", *GROUP_METRICS)}
    checks = [severity_for(m, disparities[m], t, warn_margin) for m, t in limits.items()]
    small = table.filter(pl.col("count") < min_group_size).get_column("group").to_list()
    return FairnessReport(sensitive_name, table, overall, disparities, checks, small, sorted(no_pos | no_neg))


def _on_groups(
    metric: Callable[..., float], y: np.ndarray, p: np.ndarray, groups: np.ndarray, exclude: set[str]
) -> float:
    """A Fairlearn disparity on the rows of the groups not in ``exclude``; nan with < 2 groups."""
    keep = ~np.isin(groups, sorted(exclude))
    if len(np.unique(groups[keep])) < 2:
        return math.nan
    return float(metric(y[keep], p[keep], sensitive_features=groups[keep]))
