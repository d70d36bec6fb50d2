"""Evaluation harness: metrics vs baselines, walk-forward skill statistics, backtest replay with
scenarios, SHAP explanations, fairness audit, A/B significance and the compliance verdict.

Plain Python (no Dagster). Import what you need from its module (``evaluation.report``,
``evaluation.compliance``, ...): the package itself imports nothing, so one light module (e.g.
``metrics``) does not pay for SHAP, Fairlearn and matplotlib.
"""
