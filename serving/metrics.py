"""Prometheus metrics of the serving apps (prometheus-client).

With ``PROMETHEUS_MULTIPROC_DIR`` set (an empty directory, the same for every worker, created
before the workers start), every worker writes its values to memory-mapped files there and
``/metrics`` adds them up across workers (``MultiProcessCollector``); without it the values live
in this process. Labelled children are cached so the request path does one dict lookup and one
increment per metric.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class ServingMetrics:
    """The counters and histograms of one app (``prefix`` distinguishes the two apps)."""

    def __init__(self, prefix: str = "mlops_serving") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(f"{prefix}_requests_total",
                                "HTTP requests by endpoint, status and model version",
                                ["endpoint", "method", "status", "model_version"], registry=r)
        self.latency = Histogram(f"{prefix}_request_latency_seconds", "Request latency by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter(f"{prefix}_errors_total",
                              "Requests answered with an error, by endpoint and reason",
                              ["endpoint", "reason"], registry=r)
        self.predictions = Counter(f"{prefix}_predictions_total",
                                   "Served instances by model version and variant",
                                   ["model_name", "model_version", "variant"], registry=r)
        self.swaps = Counter(f"{prefix}_model_swaps_total", "Model or snapshot swaps, by what was swapped",
                             ["kind", "version"], registry=r)
        self.log_dropped = Counter(f"{prefix}_log_rows_dropped_total",
                                   "Prediction-log rows lost because a segment could not be written",
                                   registry=r)
        self.ready = Gauge(f"{prefix}_ready", "1 when this worker can serve predictions",
                           registry=r, multiprocess_mode="livemin")
        self._requests: dict[tuple[str, str, int, str], Any] = {}
        self._latency: dict[str, Any] = {}
        self._errors: dict[tuple[str, str], Any] = {}
        self._predictions: dict[tuple[str, str, str], Any] = {}

    # -- cheap recorders for the request path ---------------------------------------------------
    def observe_request(self, endpoint: str, method: str, status: int, model_version: str,
                        seconds: float) -> None:
        key = (endpoint, method, status, model_version)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(endpoint, method, str(status), model_version)
        child.inc()
        hist = self._latency.get(endpoint)
        if hist is None:
            hist = self._latency[endpoint] = self.latency.labels(endpoint)
        hist.observe(seconds)
        if status >= 400:
            reason = str(status)
            ekey = (endpoint, reason)
            err = self._errors.get(ekey)
            if err is None:
                err = self._errors[ekey] = self.errors.labels(endpoint, reason)
            err.inc()

    def count_predictions(self, model_name: str, model_version: str, variant: str, n: int) -> None:
        key = (model_name, model_version, variant)
        child = self._predictions.get(key)
        if child is None:
            child = self._predictions[key] = self.predictions.labels(model_name, model_version, variant)
        child.inc(n)

    # -- exposition ----------------------------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        """The text exposition (summed over workers in multiprocess mode) and its content type."""
        if multiprocess_mode():
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def mark_process_dead() -> None:
    """Drop this worker's live gauges from the multiprocess directory (call at shutdown)."""
    if multiprocess_mode():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())
