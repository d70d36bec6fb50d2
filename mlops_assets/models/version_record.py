"""What the governance store records about one model version, and what a gate decision reads from it.

``VersionRecord`` reads a version's record once (latest decision, registration, gate results, the
audit-chain problems of its governed rows) beside its MLflow tags, and says what makes it
untrustworthy: a store that does not verify, or tags that disagree with the record (tags are a
mirror, never trusted). From a record and a ``gates.GateReview`` this module derives what
``promotion`` checks and records: the gate reasons, the approval checklist and the deployment
evidence. Nothing here moves an alias or records a decision; ``promotion`` does, and raises
``PromotionRefused`` where a version is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops_assets.governance.records import DecisionState, normalize_identity
from mlops_assets.governance.store import GovernanceStore
from mlops_assets.models import gates as G

NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


def version_tags(client: MlflowClient, name: str, version: str) -> dict[str, str] | None:
    """The version's tags, or ``None`` if the model or version does not exist."""
    try:
        return dict(client.get_model_version(name, version).tags or {})
    except MlflowException as exc:
        if exc.error_code == NOT_FOUND:
            return None
        raise


def policy_in_force(policy: G.GatePolicy | None, compliance_required: bool) -> G.GatePolicy:
    """``policy`` (default: ``GatePolicy()``) with ``compliance_required`` set."""
    return replace(policy or G.GatePolicy(), compliance_required=bool(compliance_required))


class VersionRecord:
    """Everything the store records about one version, read once, with what makes it untrustworthy."""

    def __init__(self, tags: dict[str, str], store: GovernanceStore, name: str, version: str) -> None:
        self.tags = tags
        self.decision = store.latest_decision("model", name, version)
        self.registration = store.registration(name, version)
        self.gates = store.gate_results(name, version)
        self.integrity = store.subject_problems("model", name, version)
        self.differences = G.mirror_differences(tags, self.gates, self.decision, self.registration)

    @classmethod
    def read(cls, client: MlflowClient, store: GovernanceStore, name: str,
             version: str) -> VersionRecord | None:
        """The record of ``name`` version ``version``, or ``None`` if the registry has no such version."""
        tags = version_tags(client, name, version)
        return None if tags is None else cls(tags, store, name, version)

    @property
    def waivers(self) -> dict[str, str]:
        d = self.decision
        return dict(d.waivers or {}) if d is not None and d.state is DecisionState.APPROVED else {}

    def untrusted(self) -> list[str]:
        return ([f"the governance store does not verify: {p}" for p in self.integrity]
                + [f"{d} (tags are a mirror; the record wins)" for d in self.differences])

    def retired(self) -> list[str]:
        d = self.decision
        if d is None:
            return []
        if d.state is DecisionState.ARCHIVED:
            return ["the version is archived"]
        if d.state is DecisionState.REJECTED:
            return [f"the version was rejected{f' ({d.comment})' if d.comment else ''}"]
        return []

    def approval_reasons(self) -> list[str]:
        d, reg = self.decision, self.registration
        reasons = []
        if d is None or d.state is not DecisionState.APPROVED:
            reasons.append(f"not approved in the governance store (state: {d.state.value if d else 'no decision'})")
        if reg is None:
            reasons.append("the governance store records no registerer, so the four-eyes rule cannot be checked")
        elif d is not None and d.state is DecisionState.APPROVED and \
                normalize_identity(d.actor) == reg.registered_by:
            reasons.append(f"approved by its own registerer {reg.registered_by!r} (as {d.actor!r})")
        return reasons


def mirror_tags(client: MlflowClient, name: str, version: str, values: Mapping[str, str | None]) -> None:
    """Mirror decisions to version tags (``None`` deletes); the store stays the source of truth."""
    G.set_tags(client, name, version, values)


def reviewer_checklist(record: VersionRecord, review: G.GateReview, reviewer: str,
              compliance_required: bool) -> dict[str, bool]:
    """The approval checklist of ``reviewer`` over ``record``; every item must be true."""
    state = record.decision.state if record.decision else None
    items = {
        "version_exists": True,
        "not_archived": state is not DecisionState.ARCHIVED,
        "not_rejected": state is not DecisionState.REJECTED,
        "evaluation_passed": G.gate_cleared(review, G.GATE_EVALUATION),
    }
    if compliance_required:
        items["compliance_passed"] = G.gate_cleared(review, G.GATE_COMPLIANCE)
    reg = record.registration
    items["reviewer_is_not_registerer"] = reg is not None and normalize_identity(reviewer) != reg.registered_by
    items["record_verified"] = not record.integrity
    items["mirror_matches_record"] = not record.differences
    return items


def evidence(record: VersionRecord, review: G.GateReview, approval: bool) -> dict[str, Any]:
    """The deployment checklist: the values that were checked, never a literal ``True``."""
    out: dict[str, Any] = {"gates": review.evidence, "waivers": review.waived,
                           "mirror_checked": sorted(G.expected_mirror(record.gates, record.decision,
                                                                      record.registration))}
    d, reg = record.decision, record.registration
    if approval and d is not None:
        out["approval"] = {"decision_id": d.id, "state": d.state.value, "approved_by": d.actor,
                           "registered_by": reg.registered_by if reg else None}
    return out


def gate_reasons(record: VersionRecord, policy: G.GatePolicy,
                 evaluation: bool) -> tuple[list[str], G.GateReview]:
    """Why the record does not clear its gates under ``policy`` (empty: it does), and the review."""
    review = G.review_gates(record.gates, policy, evaluation=evaluation, waivers=record.waivers)
    return record.untrusted() + record.retired() + review.reasons, review
