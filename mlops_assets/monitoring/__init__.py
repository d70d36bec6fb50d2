"""Drift monitoring: Evidently-exact drift verdicts computed fast, Evidently's HTML report, drift events.

* :mod:`~mlops_assets.monitoring.drift`: :func:`fast_drift`, :func:`prepare_reference`,
  :func:`summary_row` (the decision path; Evidently's default preset verdicts, exactly, in seconds);
* :mod:`~mlops_assets.monitoring.evidently_report`: :func:`evidently_drift_report` (the HTML for people;
  imports Evidently lazily, so it is not re-exported here);
* :mod:`~mlops_assets.monitoring.events`: :class:`DriftPolicy`, :func:`decide_drift_action`,
  :func:`send_alert`;
* :mod:`~mlops_assets.monitoring.plots`: :func:`drift_plot_png`.
"""

from mlops_assets.lazy import lazy_exports

# Exports are loaded on first use (PEP 562): the drift modules import scipy and pandas (~1.5 s),
# which the light users of this package (the prediction-log writer process needs only
# ``monitoring.served``) must not pay for.
_EXPORTS = {
    "ColumnType": "columns",
    "DriftInputError": "columns",
    "DriftResult": "drift",
    "ReferenceProfile": "drift",
    "fast_drift": "drift",
    "prepare_reference": "drift",
    "summary_row": "drift",
    "DriftDecision": "events",
    "DriftObservation": "events",
    "DriftPolicy": "events",
    "decide_drift_action": "events",
    "send_alert": "events",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
