"""Canary releases with automatic rollback: start, judge, roll back, mark ready.

This module is the lifecycle (start, stop, status, the platform's tick and its monitor thread);
the policy, the evidence and the verdict are in ``monitoring.canary_guardrails``.

Who decides what, and where the state lives:

* **Start** (a person, CLI or management API): :func:`start` moves the ``canary`` alias through the
  one alias mover (``promotion.promote``: recorded gates re-checked, an APPROVED decision by someone
  other than the registerer), recording the traffic share in the deployment's checklist
  (``checklist["canary"]``, bound to its audit entry). Starting consumes the approval, so the Dagster
  approval sensor does not also send the version to production: promotion stays a human act
  (``mlops models promote``), which the still-APPROVED decision allows. The share is mirrored to the
  version tag ``canary.share``, which the inference workers read at each registry poll
  (``serving.poll_seconds``) to route that share of ``/predict`` requests to the canary.
* **Evidence and judgement** (``monitoring.canary_guardrails``): the prediction log's closed segments
  and the workers' canary counters, judged by ``canary_guardrails.evaluate`` against the
  ``CanaryPolicy`` (the compliance policy's ``evaluation.canary_*`` settings): error rate, p99 latency
  against the champion's, and the KS shift of the canary's predicted probabilities against the
  champion's. :func:`tick` runs it; :class:`CanaryMonitor` calls :func:`tick` every
  ``canary_check_seconds`` in the management API process (``mlops serve`` runs it; no Dagster daemon
  needed).
* **Roll back** (actor ``platform``): a failed guardrail removes the alias through
  ``promotion.remove_alias``: an ``alias.removed`` audit entry with ``kind: rollback``, the failed
  checks and every measured value. Workers stop routing at their next poll.
* **Ready**: once every guardrail passed and the canary has run ``canary_hold_seconds``, an audit
  entry ``canary.ready`` records it (with the values). The canary keeps serving until a person
  promotes it or stops it (:func:`stop`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_assets.errors import Conflict, InvalidInput, NotFound
from mlops_assets.models import promotion as P
from mlops_assets.models import tags as T
from mlops_assets.monitoring.canary_guardrails import CanaryPolicy, Verdict, evaluate

log = logging.getLogger(__name__)
PLATFORM = "platform"  # the actor of automatic rollbacks and readiness
READY_ACTION = "canary.ready"


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
