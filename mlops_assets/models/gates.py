"""Gate results recorded in the governance store, re-checked against the policy in force.

The code that computes a gate calls ``record_gate`` (or ``record_evaluation`` /
``record_compliance``): the verdict, the values and the thresholds go to the governance store,
inside the audit chain, and only then to MLflow tags, which mirror them for the MLflow UI and are
never trusted. ``review_gates`` is what the alias mover (``promotion.py``) asks before it moves
an alias: it re-derives each verdict from the recorded values, applies the policy in force (a
stricter threshold, the critical checks that no waiver can cover) and the approval's waivers.
``mirror_differences`` names every tag that disagrees with the record (a laundered version).

Check names: the evaluation gate is the check ``evaluation``; the compliance gate's checks keep
their own names (``metric_vs_baseline``, ``max_drawdown``, ``drift_share``, ``fairness:...``).
Critical checks (default ``DEFAULT_CRITICAL_CHECKS``, setting ``evaluation.critical_checks``)
cannot be waived.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops_assets.governance.records import (
    Decision,
    DecisionState,
    GateRecord,
    Registration,
    normalize_identity,
)
from mlops_assets.governance.store import GovernanceStore
from mlops_assets.models import tags as T

log = logging.getLogger(__name__)

GATE_EVALUATION = "evaluation"
GATE_COMPLIANCE = "compliance"
DEFAULT_CRITICAL_CHECKS: tuple[str, ...] = (GATE_EVALUATION, "metric_vs_baseline", "max_drawdown")
WAIVER_ROLES = ("approver", "admin")


@dataclass(frozen=True)
class GatePolicy:
    """The policy in force when an alias moves.

    ``evaluation_threshold`` (when set) is the threshold the evaluation metric must meet *now*; a
    version recorded against a laxer threshold is re-checked against this one. ``critical_checks``
    cannot be waived.
    """

    compliance_required: bool = True
    critical_checks: tuple[str, ...] = DEFAULT_CRITICAL_CHECKS
    evaluation_threshold: float | None = None


def gate_policy(settings: Any) -> GatePolicy:
    """The policy from the settings (``model.gate_threshold``, ``evaluation.*``)."""
    evaluation = settings.evaluation
    return GatePolicy(compliance_required=bool(evaluation.compliance_required),
                      critical_checks=tuple(getattr(evaluation, "critical_checks", DEFAULT_CRITICAL_CHECKS)),
                      evaluation_threshold=float(settings.model.gate_threshold))


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def set_tags(client: MlflowClient, name: str, version: str, values: Mapping[str, str | None]) -> None:
    """Mirror to version tags (``None`` deletes); a failure is logged, the store stays the truth."""
    for key, value in values.items():
        try:
            if value is None:
                client.delete_model_version_tag(name, version, key)
            else:
                client.set_model_version_tag(name, version, key, value)
        except MlflowException as exc:
            if value is not None or exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                log.warning("could not mirror tag %s on %s v%s: %s", key, name, version, exc)


def record_registration(client: MlflowClient, store: GovernanceStore, name: str, version: str | int, *,
                        registered_by: str | None = None, actor: str) -> Registration | None:
    """Record who registered the version (default: its ``registered_by`` tag as the registering run
    just wrote it). Once recorded it never changes, whatever the tag says later."""
    version = str(version)
    existing = store.registration(name, version)
    if existing is not None:
        return existing
    who = registered_by or dict(client.get_model_version(name, version).tags or {}).get(T.TAG_REGISTERED_BY)
    if not who or not str(who).strip():
        return None
    return store.record_registration(name=name, version=version, registered_by=who, actor=actor)


def record_gate(client: MlflowClient, store: GovernanceStore, name: str, version: str | int, gate: str,
                passed: bool, values: Mapping[str, Any], thresholds: Mapping[str, Any], actor: str, *,
                failed: Iterable[str] | None = None, details: Mapping[str, Any] | None = None,
                mirror: Mapping[str, str | None] | None = None) -> GateRecord:
    """Record a gate's verdict in the store (audited), then mirror it to MLflow tags.

    ``failed`` names the checks that did not pass (default: the gate itself when it failed);
    ``mirror`` adds tags to write besides ``<gate>.passed``. Non-finite numbers are recorded as null.
    """
    version = str(version)
    clean_values = {k: (_finite(v) if isinstance(v, (int, float)) else v) for k, v in values.items()}
    clean_thresholds = {k: (_finite(v) if isinstance(v, (int, float)) else v) for k, v in thresholds.items()}
    failed = list(failed) if failed is not None else ([] if passed else [gate])
    record_registration(client, store, name, version, actor=actor)
    record = store.record_gate_result(name=name, version=version, gate=gate, passed=bool(passed),
                                      values=clean_values, thresholds=clean_thresholds, failed=failed,
                                      details=details, actor=actor)
    set_tags(client, name, version, {f"{gate}.passed": "true" if passed else "false", **dict(mirror or {})})
    return record


def evaluation_verdict(value: float | None, threshold: float, higher_is_better: bool) -> bool:
    number = _finite(value)
    if number is None:
        return False
    return number >= threshold if higher_is_better else number <= threshold


def record_evaluation(client: MlflowClient, store: GovernanceStore, name: str, version: str | int,
                      metric_name: str, value: float | None, threshold: float, *, higher_is_better: bool = True,
                      actor: str = "dagster") -> tuple[GateRecord, str]:
    """The evaluation gate: compare, record, mirror (``rejected`` on failure); returns (record, reason)."""
    number = _finite(value)
    passed = evaluation_verdict(number, float(threshold), higher_is_better)
    if number is None:
        reason = f"{metric_name} is missing or not finite ({value!r})"
    else:
        relation = (">=" if passed else "<") if higher_is_better else ("<=" if passed else ">")
        reason = f"{metric_name}={number:.6g} {relation} threshold {float(threshold):.6g}"
    mirror: dict[str, str | None] = {T.TAG_EVALUATION_METRIC: metric_name,
                                     T.TAG_EVALUATION_VALUE: repr(float(value) if value is not None else math.nan),
                                     T.TAG_EVALUATION_THRESHOLD: repr(float(threshold))}
    if not passed:
        mirror.update({T.TAG_REJECTED: "true", T.TAG_REJECTED_REASON: f"evaluation gate failed: {reason}"})
    else:  # a pass clears the gate's own rejection mirror, never a person's rejection
        decision = store.latest_decision("model", name, str(version))
        if decision is None or decision.state is not DecisionState.REJECTED:
            mirror.update({T.TAG_REJECTED: None, T.TAG_REJECTED_REASON: None})
    record = record_gate(client, store, name, version, GATE_EVALUATION, passed, {metric_name: number},
                         {metric_name: float(threshold)}, actor,
                         details={"metric": metric_name, "higher_is_better": higher_is_better, "reason": reason},
                         mirror=mirror)
    return record, reason


def record_compliance(client: MlflowClient, store: GovernanceStore, name: str, version: str | int,
                      report: Any, actor: str = "dagster") -> GateRecord:
    """The compliance gate from a ``ComplianceReport``: every check's value, threshold and verdict."""
    checks = [c for c in report.checks if not getattr(c, "skipped", False)]
    return record_gate(
        client, store, name, version, GATE_COMPLIANCE, bool(report.passed),
        {c.name: c.value for c in checks}, {c.name: c.threshold for c in checks}, actor,
        failed=[c.name for c in checks if not c.passed],
        details={"task_type": report.task_type,
                 "messages": {c.name: c.message for c in checks if not c.passed}})


# --- reading the record back -------------------------------------------------------------------


@dataclass
class GateReview:
    """What the record says about a version's gates under the policy in force."""

    reasons: list[str] = field(default_factory=list)      # why the gates do not pass
    evidence: dict[str, Any] = field(default_factory=dict)  # the values checked, for the checklists
    failing: list[str] = field(default_factory=list)      # checks that fail before waivers
    waived: dict[str, str] = field(default_factory=dict)  # failing checks an approval waived

    def passes(self, gate: str) -> bool:
        return bool(self.evidence.get(gate, {}).get("passed"))


def _evaluation(record: GateRecord, policy: GatePolicy) -> tuple[bool, dict[str, Any], list[str]]:
    metric = str(record.details.get("metric") or next(iter(record.values), ""))
    higher = bool(record.details.get("higher_is_better", True))
    value, recorded_threshold = record.values.get(metric), _finite(record.thresholds.get(metric))
    problems = []
    if recorded_threshold is None:
        return False, {"metric": metric, "value": value}, ["the evaluation record has no threshold"]
    if evaluation_verdict(value, recorded_threshold, higher) != record.passed:
        problems.append(f"the recorded evaluation verdict ({'pass' if record.passed else 'fail'}) does not "
                        f"follow from its values ({metric}={value}, threshold {recorded_threshold})")
    threshold = recorded_threshold
    if policy.evaluation_threshold is not None:
        threshold = (max if higher else min)(recorded_threshold, float(policy.evaluation_threshold))
    passed = evaluation_verdict(value, threshold, higher) and not problems
    evidence = {"passed": passed, "metric": metric, "value": value, "threshold": threshold,
                "recorded_threshold": recorded_threshold, "higher_is_better": higher, "record_id": record.id}
    return passed, evidence, problems


def review_gates(gates: Mapping[str, GateRecord], policy: GatePolicy, *, evaluation: bool = True,
                 waivers: Mapping[str, str] | None = None) -> GateReview:
    """Re-check the recorded gates; ``waivers`` (from an APPROVED decision) cover non-critical checks."""
    review, waivers = GateReview(), dict(waivers or {})
    critical = set(policy.critical_checks)
    failing: dict[str, str] = {}
    if evaluation:
        record = gates.get(GATE_EVALUATION)
        if record is None:
            review.reasons.append("the governance store has no evaluation result for this version (the gate "
                                  "never ran, or ran before gates were recorded): re-run its evaluation")
        else:
            passed, review.evidence[GATE_EVALUATION], problems = _evaluation(record, policy)
            review.reasons += problems
            if not passed and not problems:
                ev = review.evidence[GATE_EVALUATION]
                failing[GATE_EVALUATION] = (f"{ev['metric']}={ev['value']} against threshold {ev['threshold']}")
    if policy.compliance_required:
        record = gates.get(GATE_COMPLIANCE)
        if record is None:
            review.reasons.append("the governance store has no compliance result for this version: run its "
                                  "evaluation (model_evaluation) first")
        else:
            if record.passed != (not record.failed):
                review.reasons.append("the recorded compliance verdict does not follow from its checks "
                                      f"(failed: {record.failed or 'none'})")
            messages = record.details.get("messages", {})
            for check in record.failed:
                failing[check] = messages.get(check) or (f"value {record.values.get(check)} against threshold "
                                                         f"{record.thresholds.get(check)}")
            review.evidence[GATE_COMPLIANCE] = {
                "passed": record.passed and not record.failed, "failed": list(record.failed),
                "values": record.values, "thresholds": record.thresholds, "record_id": record.id}
    review.failing = list(failing)
    for check, why in failing.items():
        if check in waivers and check in critical:
            review.reasons.append(f"check {check!r} failed ({why}) and is critical, so its waiver does not count")
        elif check in waivers:
            review.waived[check] = waivers[check]
        else:
            review.reasons.append(f"check {check!r} failed ({why})")
    for gate in (GATE_EVALUATION, GATE_COMPLIANCE):
        if gate in review.evidence and not review.evidence[gate]["passed"]:
            mine = [c for c in failing if (c == GATE_EVALUATION) == (gate == GATE_EVALUATION)]
            review.evidence[gate]["waived"] = {c: review.waived[c] for c in mine if c in review.waived}
            review.evidence[gate]["passed_with_waivers"] = bool(mine) and all(c in review.waived for c in mine)
    return review


def gate_cleared(review: GateReview, gate: str) -> bool:
    """The gate passed, or failed only on checks that an approval waived."""
    evidence = review.evidence.get(gate, {})
    return bool(evidence.get("passed") or evidence.get("passed_with_waivers"))


def unwaivable(waivers: Iterable[str], policy: GatePolicy) -> list[str]:
    """The requested waivers that the policy forbids (critical checks)."""
    return [c for c in waivers if c in set(policy.critical_checks)]


def expected_mirror(gates: Mapping[str, GateRecord], decision: Decision | None,
                    registration: Registration | None) -> dict[str, str | None]:
    """The tags the record implies (``None``: absent); ``registered_by`` compared normalised."""
    expected: dict[str, str | None] = {}
    for gate in (GATE_EVALUATION, GATE_COMPLIANCE):
        record = gates.get(gate)
        expected[f"{gate}.passed"] = None if record is None else ("true" if record.passed else "false")
    state = decision.state if decision else None
    if state is not DecisionState.ARCHIVED:
        evaluation = gates.get(GATE_EVALUATION)
        rejected = state is DecisionState.REJECTED or (evaluation is not None and not evaluation.passed)
        expected[T.TAG_REJECTED] = "true" if rejected else None
    if registration is not None:
        expected[T.TAG_REGISTERED_BY] = registration.registered_by
    return expected


def mirror_differences(tags: Mapping[str, str], gates: Mapping[str, GateRecord], decision: Decision | None,
                       registration: Registration | None) -> list[str]:
    """Every MLflow tag that disagrees with the governance store, named with both values."""
    out = []
    for key, want in expected_mirror(gates, decision, registration).items():
        have = tags.get(key)
        if key == T.TAG_REGISTERED_BY:
            same = have is not None and normalize_identity(have) == want
        elif key == T.TAG_REJECTED:
            same = (str(have).strip().lower() == "true") == (want == "true")
        else:
            same = (None if have is None else str(have).strip().lower()) == want
        if not same:
            shown_have = "absent" if have is None else repr(have)
            shown_want = "nothing" if want is None else repr(want)
            out.append(f"MLflow tag {key!r} is {shown_have} but the governance store records {shown_want}")
    return out


def sync_mirror(client: MlflowClient, store: GovernanceStore, name: str, version: str | int) -> dict[str, str | None]:
    """Rewrite the tags from the store (after a failed mirror write); returns what was written."""
    version = str(version)
    expected = expected_mirror(store.gate_results(name, version), store.latest_decision("model", name, version),
                               store.registration(name, version))
    set_tags(client, name, version, expected)
    return expected


def configured_role(settings: Any, who: str) -> str | None:
    """The highest role the settings' API keys (``serving.api_keys``) give ``who``, compared normalised;
    ``""`` when keys are configured but none is ``who``'s, ``None`` when no keys are configured."""
    keys = dict(getattr(settings.serving, "api_keys", {}) or {})
    if not keys:
        return None
    ranks = {"viewer": 0, "approver": 1, "admin": 2}
    roles = [str(v.get("role", "")).strip().lower() for v in keys.values()
             if isinstance(v, dict) and normalize_identity(v.get("owner")) == normalize_identity(who)]
    return max(roles, key=lambda r: ranks.get(r, -1), default="")
