"""Gate results and registrations of the governance store (a repository mixed into ``GovernanceStore``).

The code that computes a gate (the evaluation threshold, the compliance verdict) records it here,
inside the audit chain, *before* it mirrors the outcome to MLflow tags; the alias mover reads these
rows and never trusts the tags. The latest result per (model, version, gate) is in force. A version's
registerer is recorded once: a second, different registerer is a ``Conflict``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlops_assets.errors import Conflict
from mlops_assets.governance.audit import normalize_details
from mlops_assets.governance.decisions import text_arg
from mlops_assets.governance.records import GateRecord, Registration, normalize_identity
from mlops_assets.governance.tables import GateResultRow, RegistrationRow


class GateRepository:
    """``gate_results`` and ``registrations``; needs ``_transaction``, ``_read`` and ``_append_row``."""

    _transaction: Any
    _read: Any
    _append_row: Any

    def record_gate_result(self, *, name: str, version: str | int, gate: str, passed: bool,
                           values: Mapping[str, Any], thresholds: Mapping[str, Any],
                           failed: Iterable[str] = (), details: Mapping[str, Any] | None = None,
                           actor: str) -> GateRecord:
        """Record one verdict of ``gate`` on a version, with the values and thresholds it compared."""
        name, version = text_arg(name, "name"), text_arg(version, "version")
        gate, actor = text_arg(gate, "gate"), text_arg(actor, "actor")
        clean = normalize_details({"values": dict(values), "thresholds": dict(thresholds),
                                   "failed": [str(f) for f in failed], "details": dict(details or {})})

        def work(s: Session) -> GateRecord:
            row = GateResultRow(name=name, version=version, gate=gate, passed=bool(passed),
                                values=clean["values"], thresholds=clean["thresholds"], failed=clean["failed"],
                                details=clean["details"], actor=actor, ts=datetime.now(UTC))
            s.add(row)
            s.flush()
            self._append_row(s, row, actor, f"gate.{gate}", "model", f"{name}/{version}",
                             {"gate_result_id": row.id, "passed": row.passed, **clean})
            return GateRecord.from_row(row)

        return self._transaction(work)

    def gate_results(self, name: str, version: str | int) -> dict[str, GateRecord]:
        """The latest result of each gate recorded for the version (``{}`` when none)."""
        query = (select(GateResultRow).where(GateResultRow.name == str(name),
                                             GateResultRow.version == str(version))
                 .order_by(GateResultRow.id))
        rows = self._read(lambda s: [GateRecord.from_row(r) for r in s.execute(query).scalars()])
        return {r.gate: r for r in rows}

    def record_registration(self, *, name: str, version: str | int, registered_by: str,
                            actor: str) -> Registration:
        """Record who registered a version (normalised); idempotent for the same person."""
        name, version = text_arg(name, "name"), text_arg(version, "version")
        who, actor = normalize_identity(text_arg(registered_by, "registered_by")), text_arg(actor, "actor")

        def work(s: Session) -> Registration:
            query = select(RegistrationRow).where(RegistrationRow.name == name, RegistrationRow.version == version)
            existing = s.execute(query).scalars().first()
            if existing is not None:
                if existing.registered_by != who:
                    raise Conflict("registered_by", f"{name} version {version} was registered by "
                                   f"{existing.registered_by!r}; it cannot be re-registered as {who!r}")
                return Registration.from_row(existing)
            row = RegistrationRow(name=name, version=version, registered_by=who, actor=actor,
                                  ts=datetime.now(UTC))
            s.add(row)
            s.flush()
            self._append_row(s, row, actor, "model.registered", "model", f"{name}/{version}",
                             {"registered_by": who})
            return Registration.from_row(row)

        return self._transaction(work)

    def registration(self, name: str, version: str | int) -> Registration | None:
        query = select(RegistrationRow).where(RegistrationRow.name == str(name),
                                              RegistrationRow.version == str(version))
        row = self._read(lambda s: s.execute(query).scalars().first())
        return Registration.from_row(row) if row else None
