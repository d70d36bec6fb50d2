"""Canary guardrails: the policy, the evidence, and the verdict on it.

* **Policy**: :class:`CanaryPolicy` (the compliance policy's ``evaluation.canary_*`` settings): the
  guardrail thresholds, and the share limit, hold and check interval the lifecycle
  (``monitoring.canary``) applies.
* **Evidence**: the prediction log's closed segments (variant ``canary`` vs ``production`` rows of
  the same window: latency and predicted probabilities) and the workers' canary counters
  (:class:`CanaryCounter`: requests the canary answered and requests where its model raised; such a
  request is answered by the champion instead, so no request fails; :func:`read_counts` sums them).
* **Verdict**: :func:`evaluate` is a pure function of that evidence and the policy: error rate, p99
  latency against the champion's, and the two-sample KS shift of the canary's predicted probabilities
  against the champion's: a :class:`Verdict` of one :class:`Check` per guardrail, each undecided
  (``passed is None``) while there is too little data to judge.

Starting, rolling back and marking a canary ready are in ``monitoring.canary``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
COUNTS_DIR = "canary"  # under the serving log directory: one counters file per inference worker


@dataclass(frozen=True)
class CanaryPolicy:
    """The guardrails (settings ``evaluation.canary_*``; see docs/configuration.md)."""

    max_share: float = 0.5
    max_error_rate: float = 0.01
    max_p99_ratio: float = 2.0
    p99_slack_ms: float = 25.0
    max_ks: float = 0.3
    ks_alpha: float = 0.01
    min_requests: int = 50
    window_seconds: float = 60.0
    hold_seconds: float = 600.0
    check_seconds: float = 5.0

    @classmethod
    def from_settings(cls, s: Any) -> CanaryPolicy:
        e = s.evaluation
        return cls(e.canary_max_share, e.canary_max_error_rate, e.canary_max_p99_ratio, e.canary_p99_slack_ms,
                   e.canary_max_ks, e.canary_ks_alpha, e.canary_min_requests, e.canary_window_seconds,
                   e.canary_hold_seconds, e.canary_check_seconds)


@dataclass(frozen=True)
class Check:
    """One guardrail: ``passed`` is None while there is too little data to judge."""

    name: str
    passed: bool | None
    value: float | None
    threshold: float | None
    measured: dict[str, Any] = field(default_factory=dict)
    message: str = ""


@dataclass(frozen=True)
class Verdict:
    checks: tuple[Check, ...]
    window: dict[str, Any]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.passed is False]

    @property
    def held(self) -> bool:
        """Every guardrail judged and passed."""
        return all(c.passed is True for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"failed": [c.name for c in self.failed], "held": self.held, "window": self.window,
                "checks": [asdict(c) for c in self.checks]}


# --- the workers' canary counters ----------------------------------------------------------------


class CanaryCounter:
    """Per inference worker: requests the canary answered and those where its model raised.

    Called on the request path (plain dict updates); a daemon thread writes the counts every
    ``interval`` seconds to ``<log dir>/canary/counts-<pid>.json`` (temp file + rename). Counts are
    kept per canary *load* (``version`` + ``since``, the time the worker loaded it), so a canary
    started again is counted afresh.
    """

    def __init__(self, log_dir: str | Path, interval: float = 1.0) -> None:
        self.directory = Path(log_dir) / COUNTS_DIR
        self.path = self.directory / f"counts-{os.getpid()}.json"
        self.interval = interval
        self._counts: dict[tuple[str, str, float], list[int]] = {}
        self._written: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, name: str, version: str, since: float, error: bool) -> None:
        row = self._counts.get((name, version, since))
        if row is None:
            row = self._counts[(name, version, since)] = [0, 0]
        row[0] += 1
        if error:
            row[1] += 1

    def snapshot(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "updated": time.time(),
                "counts": [{"model_name": n, "version": v, "since": s, "requests": r, "errors": e}
                           for (n, v, s), (r, e) in list(self._counts.items())]}

    def write(self) -> None:
        data = self.snapshot()
        if self._written is not None and data["counts"] == self._written["counts"]:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)
        self._written = data

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="canary-counter", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.write()
            except OSError:
                log.exception("could not write the canary counters %s", self.path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._counts:
            try:
                self.write()
            except OSError:
                log.exception("could not write the canary counters %s", self.path)


def read_counts(log_dir: str | Path, name: str, version: str, since: float) -> tuple[int, int]:
    """(requests, errors) of canary ``name`` version ``version`` counted by workers that loaded it at
    or after ``since`` (the start of this canary), summed over every worker's file."""
    requests = errors = 0
    directory = Path(log_dir) / COUNTS_DIR
    if not directory.exists():
        return 0, 0
    for path in directory.glob("counts-*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # replaced while read: the next tick reads it
        for row in data.get("counts", []):
            if row.get("model_name") == name and str(row.get("version")) == str(version) and \
                    float(row.get("since", 0)) >= since:
                requests += int(row.get("requests", 0))
                errors += int(row.get("errors", 0))
    return requests, errors


# --- the verdict ---------------------------------------------------------------------------------------


def _read_window(log_dir: str | Path, name: str, start: float, end: float) -> Any:
    """Rows of ``name`` in closed prediction-log segments with ``start <= ts < end`` (epoch seconds)."""
    import polars as pl

    from mlops_assets.monitoring.served import list_closed_segments

    # a segment closed before the window began holds no row of it (rows are written before their file)
    paths = [p for p in list_closed_segments(log_dir) if p.stat().st_mtime >= start - 1.0]
    columns = ["request_id", "ts", "model_name", "model_version", "variant", "prediction", "probability",
               "latency_ms"]
    empty = pl.DataFrame(schema={"request_id": pl.String, "ts": pl.Float64, "model_name": pl.String,
                                 "model_version": pl.String, "variant": pl.String, "prediction": pl.Float64,
                                 "probability": pl.Float64, "latency_ms": pl.Float64})
    if not paths:
        return empty
    frames = []
    for path in paths:
        try:
            frames.append(pl.read_parquet(path, columns=columns))
        except Exception:  # noqa: BLE001 - a foreign or damaged file is not evidence
            log.warning("skipping unreadable prediction-log segment %s", path)
    if not frames:
        return empty
    frame = pl.concat(frames, how="vertical_relaxed").with_columns(
        (pl.col("ts").dt.epoch("us").cast(pl.Float64) / 1e6).alias("ts"))
    return frame.filter((pl.col("model_name") == name) & (pl.col("ts") >= start) & (pl.col("ts") < end))


def _p99(frame: Any) -> float | None:
    per_request = frame.unique("request_id")["latency_ms"]
    return None if per_request.len() == 0 else float(per_request.quantile(0.99, "higher"))


def _scores(frame: Any) -> Any:
    import numpy as np

    probability = frame["probability"].to_numpy()
    if probability.size and not np.all(np.isnan(probability)):
        return probability[~np.isnan(probability)]
    return frame["prediction"].to_numpy()


def evaluate(log_dir: str | Path, name: str, version: str, champion: str | None, since: float,
             policy: CanaryPolicy, now: float | None = None) -> Verdict:
    """Judge canary ``version`` of ``name`` against the ``champion`` version over the last
    ``policy.window_seconds`` (never before ``since``, the canary's start).

    * ``error_rate``: errors / requests from the workers' counters since the start; judged from
      ``min_requests`` requests.
    * ``p99_latency_ms``: the canary's p99 per-request latency fails when it is above both
      ``max_p99_ratio`` x and ``p99_slack_ms`` + the champion's p99 in the same window.
    * ``prediction_shift``: two-sample KS statistic of predicted probabilities (predictions for a
      regression), canary rows against champion rows of the window; fails when above ``max_ks``
      with a p-value below ``ks_alpha``.
    The last two are judged when each side has ``min_requests`` requests in the window.
    """
    from scipy.stats import ks_2samp

    now = time.time() if now is None else now
    start = max(since, now - policy.window_seconds)
    rows = _read_window(log_dir, name, start, now)
    canary = rows.filter((rows["variant"] == "canary") & (rows["model_version"] == str(version)))
    champ = rows.filter(rows["variant"] == "production")
    if champion is not None:
        champ = champ.filter(champ["model_version"] == str(champion))
    n_canary, n_champ = canary["request_id"].n_unique(), champ["request_id"].n_unique()
    enough = n_canary >= policy.min_requests and n_champ >= policy.min_requests
    checks = []

    requests, errors = read_counts(log_dir, name, version, since)
    rate = errors / requests if requests else None
    judged = requests >= policy.min_requests
    checks.append(Check("error_rate", (rate <= policy.max_error_rate) if judged else None, rate,
                        policy.max_error_rate, {"requests": requests, "errors": errors},
                        f"{errors} of {requests} canary requests raised" if requests else "no canary request yet"))

    p_canary, p_champ = _p99(canary), _p99(champ)
    if enough and p_canary is not None and p_champ is not None:
        limit = max(p_champ * policy.max_p99_ratio, p_champ + policy.p99_slack_ms)
        checks.append(Check("p99_latency_ms", p_canary <= limit, p_canary, limit,
                            {"canary_p99_ms": p_canary, "champion_p99_ms": p_champ},
                            f"canary p99 {p_canary:.1f} ms, champion {p_champ:.1f} ms"))
    else:
        checks.append(Check("p99_latency_ms", None, p_canary, None,
                            {"canary_p99_ms": p_canary, "champion_p99_ms": p_champ},
                            "waiting for enough requests on both sides"))

    if enough:
        a, b = _scores(canary), _scores(champ)
        result = ks_2samp(a, b)
        stat, pvalue = float(result.statistic), float(result.pvalue)
        shifted = stat > policy.max_ks and pvalue < policy.ks_alpha
        checks.append(Check("prediction_shift", not shifted, stat, policy.max_ks,
                            {"ks_statistic": stat, "p_value": pvalue, "ks_alpha": policy.ks_alpha,
                             "canary_mean": float(a.mean()) if a.size else None,
                             "champion_mean": float(b.mean()) if b.size else None},
                            f"KS {stat:.3f} (p={pvalue:.2g}) against the champion"))
    else:
        checks.append(Check("prediction_shift", None, None, policy.max_ks, {},
                            "waiting for enough requests on both sides"))
    window = {"start": start, "end": now, "canary_requests": n_canary, "champion_requests": n_champ,
              "champion_version": champion, "min_requests": policy.min_requests}
    return Verdict(tuple(checks), window)
