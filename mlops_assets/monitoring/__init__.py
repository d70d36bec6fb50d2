"""Drift monitoring: Evidently-exact drift verdicts computed fast, Evidently's HTML report, drift events.

* :mod:`~mlops_assets.monitoring.drift`: :func:`fast_drift`, :func:`prepare_reference`,
  :func:`summary_row` (the decision path; Evidently's default preset verdicts, exactly, in seconds);
* :mod:`~mlops_assets.monitoring.evidently_report`: :func:`evidently_drift_report` (the HTML for people;
  imports Evidently lazily, so it is not re-exported here);
* :mod:`~mlops_assets.monitoring.events`: :class:`DriftPolicy`, :func:`decide_drift_action`,
  :func:`send_alert`;
* :mod:`~mlops_assets.monitoring.plots`: :func:`drift_plot_png`.
"""

from mlops_assets.monitoring.columns import ColumnType, DriftInputError
from mlops_assets.monitoring.drift import (
    DriftResult,
    ReferenceProfile,
    fast_drift,
    prepare_reference,
    summary_row,
)
from mlops_assets.monitoring.events import (
    DriftDecision,
    DriftObservation,
    DriftPolicy,
    decide_drift_action,
    send_alert,
)

__all__ = [
    "ColumnType",
    "DriftDecision",
    "DriftInputError",
    "DriftObservation",
    "DriftPolicy",
    "DriftResult",
    "ReferenceProfile",
    "decide_drift_action",
    "fast_drift",
    "prepare_reference",
    "send_alert",
    "summary_row",
]
