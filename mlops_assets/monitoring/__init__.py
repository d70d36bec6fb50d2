"""Drift monitoring: calibrated and Evidently-exact drift verdicts, Evidently's HTML report, drift
events and episodes, and the served-traffic log reader.

Plain Python (no Dagster). Import what you need from its module (``monitoring.drift``,
``monitoring.events``, ``monitoring.served``, ...): the package itself imports nothing, so the light
users (the prediction-log writer process needs only ``monitoring.served``) do not pay for scipy and
pandas.
"""
