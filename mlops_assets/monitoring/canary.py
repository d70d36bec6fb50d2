"""Canary releases with automatic rollback: start, judge, roll back, mark ready.

Who decides what, and where the state lives:

* **Start** (a person, CLI or management API): :func:`start` moves the ``canary`` alias through the
  one alias mover (``promotion.promote``: recorded gates re-checked, an APPROVED decision by someone
  other than the registerer), recording the traffic share in the deployment's checklist
  (``checklist["canary"]``, bound to its audit entry). Starting consumes the approval, so the Dagster
  approval sensor does not also send the version to production: promotion stays a human act
  (``mlops models promote``), which the still-APPROVED decision allows. The share is mirrored to the
  version tag ``canary.share``, which the inference workers read at each registry poll
  (``serving.poll_seconds``) to route that share of ``/predict`` requests to the canary.
* **Evidence**: the prediction log's closed segments (variant ``canary`` vs ``production`` rows of
  the same window: latency and predicted probabilities) and the workers' canary counters
  (:class:`CanaryCounter`: requests the canary answered and requests where its model raised; such a
  request is answered by the champion instead, so no request fails).
* **Judge** (the platform): :func:`evaluate` is a pure function of that evidence and the
  :class:`CanaryPolicy` (the compliance policy's ``evaluation.canary_*`` settings): error rate,
  p99 latency against the champion's, and the two-sample KS shift of the canary's predicted
  probabilities against the champion's. :func:`tick` runs it; :class:`CanaryMonitor` calls
  :func:`tick` every ``canary_check_seconds`` in the management API process (``mlops serve`` runs it;
  no Dagster daemon needed).
* **Roll back** (actor ``platform``): a failed guardrail removes the alias through
  ``promotion.remove_alias``: an ``alias.removed`` audit entry with ``kind: rollback``, the failed
  checks and every measured value. Workers stop routing at their next poll.
* **Ready**: once every guardrail passed and the canary has run ``canary_hold_seconds``, an audit
  entry ``canary.ready`` records it (with the values). The canary keeps serving until a person
  promotes it or stops it (:func:`stop`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_assets.errors import Conflict, InvalidInput, NotFound
from mlops_assets.models import promotion as P
from mlops_assets.models import tags as T

log = logging.getLogger(__name__)
PLATFORM = "platform"  # the actor of automatic rollbacks and readiness
READY_ACTION = "canary.ready"
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


# --- start, stop, status, and the platform's tick --------------------------------------------------


@dataclass(frozen=True)
class Aliases:
    canary: str = T.ALIAS_CANARY
    production: str = T.ALIAS_PRODUCTION

    @classmethod
    def from_settings(cls, s: Any) -> Aliases:
        return cls(s.model.canary_alias, s.model.production_alias)


def _current_start(store: Any, name: str, alias: str, version: str) -> Any:
    """The deployment that put ``alias`` on ``version`` (the newest move of the alias), or None."""
    last = store.list_deployments(name, alias=alias, limit=1)
    return last[0] if last and last[0].version == version else None


def start(client: Any, store: Any, name: str, version: str | int, share: float, *, actor: str,
          compliance_required: bool, gate_policy: Any = None, policy: CanaryPolicy | None = None,
          aliases: Aliases | None = None, reason: str | None = None) -> Any:
    """Route ``share`` (0 < share <= ``policy.max_share``) of traffic to ``version``: the canary alias
    moves through the alias mover (gates and an APPROVED decision, four-eyes); returns the deployment."""
    policy, aliases, version = policy or CanaryPolicy(), aliases or Aliases(), str(version)
    try:
        share = float(share)
    except (TypeError, ValueError):
        raise InvalidInput("share", f"{share!r} is not a number") from None
    if not 0.0 < share <= policy.max_share:
        raise InvalidInput("share", f"the share must be above 0 and at most {policy.max_share} "
                                    f"(evaluation.canary_max_share); got {share}")
    champion = P.alias_target(client, name, aliases.production)
    if champion is None:
        raise Conflict("version", [f"{name} has no {aliases.production!r} version to compare a canary with"],
                       "promote a version to production first")
    if champion == version:
        raise Conflict("version", [f"version {version} already serves {aliases.production!r}"])
    running = P.alias_target(client, name, aliases.canary)
    if running is not None and running != version:
        raise Conflict("version", [f"version {running} is the running canary of {name}"],
                       f"stop it first (`mlops models canary stop {name}`)")
    details = {"canary": {"share": share, "champion_version": champion,
                          "guardrails": asdict(policy)}}
    # the mirror the workers read; set before the alias so the first poll that sees the alias has it
    client.set_model_version_tag(name, version, T.TAG_CANARY_SHARE, repr(share))
    return P.promote(client, store, name, version, alias=aliases.canary, actor=actor,
                     reason=reason or f"canary at {share:.0%} of traffic", compliance_required=compliance_required,
                     production_alias=aliases.production, policy=gate_policy, details=details)


def stop(client: Any, store: Any, name: str, *, actor: str, reason: str, aliases: Aliases | None = None) -> bool:
    """A person takes the canary off traffic (audited as ``alias.removed``, kind ``stopped``)."""
    aliases = aliases or Aliases()
    version = P.alias_target(client, name, aliases.canary)
    if version is None:
        raise NotFound("name", f"{name} has no running canary", "`mlops models canary status NAME`")
    return P.remove_alias(client, store, name, aliases.canary, version, actor=actor, reason=reason,
                          details={"kind": "stopped"}, protected_aliases=(aliases.production,))


def rollback(client: Any, store: Any, name: str, version: str, verdict: Verdict, *, deployment_id: int | None,
             aliases: Aliases | None = None, actor: str = PLATFORM) -> bool:
    """Remove the canary after a failed guardrail, recording the measured values (kind ``rollback``)."""
    aliases = aliases or Aliases()
    failed = ", ".join(f"{c.name} ({c.message})" for c in verdict.failed)
    return P.remove_alias(client, store, name, aliases.canary, version, actor=actor,
                          reason=f"canary guardrail failed: {failed}",
                          details={"kind": "rollback", "deployment_id": deployment_id,
                                   "guardrails": verdict.to_dict()},
                          protected_aliases=(aliases.production,))


def _ts(d: Any) -> float:
    ts = d.ts if d.ts.tzinfo else d.ts.replace(tzinfo=UTC)
    return ts.timestamp()


def _ready_entry(store: Any, name: str, version: str, deployment_id: int) -> Any:
    for entry in store.list_audit(limit=20, subject_kind="model", subject_id=f"{name}/{version}",
                                  action=READY_ACTION):
        if (entry.details or {}).get("deployment_id") == deployment_id:
            return entry
    return None


def _last_end(store: Any, name: str, version: str, alias: str, after: float) -> Any:
    for entry in store.list_audit(limit=20, subject_kind="model", subject_id=f"{name}/{version}",
                                  action="alias.removed"):
        ts = entry.ts if entry.ts.tzinfo else entry.ts.replace(tzinfo=UTC)
        if (entry.details or {}).get("alias") == alias and ts.timestamp() >= after:
            return entry
    return None


def status(client: Any, store: Any, name: str, log_dir: str | Path, policy: CanaryPolicy | None = None,
           aliases: Aliases | None = None, now: float | None = None, judge: bool = True) -> dict[str, Any]:
    """The canary of ``name``: ``running``, ``ready`` (held; waits for a person to promote),
    ``rolled_back``, ``stopped``, ``promoted`` or ``none``, with the live verdict while it runs."""
    policy, aliases = policy or CanaryPolicy(), aliases or Aliases()
    now = time.time() if now is None else now
    version = P.alias_target(client, name, aliases.canary)
    champion = P.alias_target(client, name, aliases.production)
    out: dict[str, Any] = {"name": name, "alias": aliases.canary, "champion_version": champion,
                           "hold_seconds": policy.hold_seconds}
    if version is None:
        last = store.list_deployments(name, alias=aliases.canary, limit=1)
        if not last:
            return {**out, "state": "none", "version": None}
        d = last[0]
        out.update(_start_fields(d))
        end = _last_end(store, name, d.version, aliases.canary, _ts(d))
        if end is not None:
            kind = (end.details or {}).get("kind") or "removed"
            state = {"rollback": "rolled_back"}.get(kind, kind)
            return {**out, "state": state, "ended": end.to_dict() if hasattr(end, "to_dict") else _entry(end)}
        state = "promoted" if champion == d.version else "removed"
        return {**out, "state": state}
    d = _current_start(store, name, aliases.canary, version)
    if d is None:
        return {**out, "state": "unrecorded", "version": version,
                "problem": "the canary alias was set outside the alias mover; the platform removes it"}
    out.update(_start_fields(d))
    out["held_seconds"] = round(now - _ts(d), 1)
    ready = _ready_entry(store, name, version, d.id)
    out["state"] = "ready" if ready is not None else "running"
    if ready is not None:
        out["ready_at"] = ready.ts.isoformat()
    if judge:
        out["verdict"] = evaluate(log_dir, name, version, champion, _ts(d), policy, now).to_dict()
    return out


def _entry(entry: Any) -> dict[str, Any]:
    return {"seq": entry.seq, "ts": entry.ts.isoformat(), "actor": entry.actor, "action": entry.action,
            "details": entry.details}


def _start_fields(d: Any) -> dict[str, Any]:
    canary = (d.checklist or {}).get("canary") or {}
    approval = (d.checklist or {}).get("approval") or {}
    return {"version": d.version, "share": canary.get("share"), "started_at": d.ts.isoformat(),
            "started_by": d.actor, "deployment_id": d.id, "approved_by": approval.get("approved_by")}


def tick(client: Any, store: Any, name: str, log_dir: str | Path, policy: CanaryPolicy | None = None,
         aliases: Aliases | None = None, now: float | None = None) -> dict[str, Any]:
    """One judgement of the running canary of ``name``: roll it back when a guardrail failed, mark it
    ready when it held for ``hold_seconds``. Returns ``{"action": none|rollback|ready|held|waiting, ...}``."""
    policy, aliases = policy or CanaryPolicy(), aliases or Aliases()
    now = time.time() if now is None else now
    version = P.alias_target(client, name, aliases.canary)
    if version is None:
        return {"action": "none"}
    champion = P.alias_target(client, name, aliases.production)
    d = _current_start(store, name, aliases.canary, version)
    if d is None:  # set by hand, never approved through the mover: take it off traffic
        removed = P.remove_alias(client, store, name, aliases.canary, version, actor=PLATFORM,
                                 reason="the canary alias was set outside the alias mover (no recorded start)",
                                 details={"kind": "rollback", "deployment_id": None},
                                 protected_aliases=(aliases.production,))
        return {"action": "rollback" if removed else "none", "version": version, "unrecorded": True}
    verdict = evaluate(log_dir, name, version, champion, _ts(d), policy, now)
    if verdict.failed:
        removed = rollback(client, store, name, version, verdict, deployment_id=d.id, aliases=aliases)
        log.warning("canary %s version %s rolled back: %s", name, version, [c.name for c in verdict.failed])
        return {"action": "rollback" if removed else "none", "version": version, "verdict": verdict.to_dict()}
    held = now - _ts(d)
    if verdict.held and held >= policy.hold_seconds:
        if _ready_entry(store, name, version, d.id) is None:
            store.append_audit(PLATFORM, READY_ACTION, "model", f"{name}/{version}",
                               {"alias": aliases.canary, "deployment_id": d.id, "held_seconds": round(held, 1),
                                "guardrails": verdict.to_dict()})
            return {"action": "ready", "version": version, "verdict": verdict.to_dict()}
        return {"action": "held", "version": version}
    return {"action": "waiting", "version": version, "verdict": verdict.to_dict()}


class CanaryMonitor:
    """Calls :func:`tick` for ``name`` every ``policy.check_seconds`` in a daemon thread; never raises."""

    def __init__(self, client_factory: Any, store_factory: Any, name: str, log_dir: str | Path,
                 policy: CanaryPolicy, aliases: Aliases) -> None:
        self._client_factory, self._store_factory = client_factory, store_factory
        self.name, self.log_dir, self.policy, self.aliases = name, log_dir, policy, aliases
        self.last: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> dict[str, Any]:
        try:
            self.last = tick(self._client_factory(), self._store_factory(), self.name, self.log_dir,
                             self.policy, self.aliases)
        except Exception as exc:  # the registry or store briefly unreachable: try again next tick
            log.exception("canary guardrail check failed")
            self.last = {"action": "error", "error": f"{type(exc).__name__}: {exc}"}
        self.last["checked_at"] = datetime.now(UTC).isoformat()
        return self.last

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="canary-monitor", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.policy.check_seconds):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


def share_of(tags: Mapping[str, str], max_share: float = 1.0) -> float | None:
    """The canary share mirrored on a version's tags (``None`` when absent or not a valid share)."""
    try:
        share = float(tags.get(T.TAG_CANARY_SHARE) or "")
    except ValueError:
        return None
    return share if 0.0 < share <= max_share else None
