"""The gate verdicts of a model version as a person reads them: which gate refused it, and why.

Read, without Dagster, from what the gates leave behind: the version's MLflow tags (the evaluation
gate: metric, value, threshold; mirrors of the governance record, good enough to *show*) and the
compliance report that the evaluation wrote next to its other files
(``<reports_dir>/evaluation/<model>/<version>/compliance.json``: every policy check with its value,
threshold and message). ``mlops status`` and the end of the demo print :func:`describe`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlops_assets.models import tags as T

EVALUATION_GATE = "evaluation_gate"
COMPLIANCE_GATE = "compliance_gate"


def fmt(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int | float):
        return f"{value:.4g}" if math.isfinite(float(value)) else str(value)
    try:
        return fmt(float(str(value)))
    except ValueError:
        return str(value)


@dataclass(frozen=True)
class CheckOutcome:
    """One failed check: its name, the value it measured, the threshold it compared with, the why."""

    name: str
    value: object = None
    threshold: object = None
    message: str = ""

    def line(self) -> str:
        return f"{self.name}: value {fmt(self.value)}, threshold {fmt(self.threshold)}" + (
            f" - {self.message}" if self.message else "")


@dataclass(frozen=True)
class GateVerdict:
    """``passed`` is None when the gate has not run for the version (yet)."""

    gate: str
    passed: bool | None
    failed: tuple[CheckOutcome, ...] = ()
    summary: str = ""

    def lines(self) -> list[str]:
        state = {True: "passed", False: "REFUSED", None: "not run"}[self.passed]
        head = f"{self.gate}: {state}" + (f" ({self.summary})" if self.summary else "")
        return [head, *(f"  {c.line()}" for c in self.failed)]


def compliance_report_path(reports_dir: Path, model_name: str, version: str | int) -> Path:
    """Where the evaluation of a version writes ``compliance.json`` (as ``defs/evaluation`` lays it out)."""
    return Path(reports_dir) / "evaluation" / model_name / str(version) / "compliance.json"


def evaluation_verdict(tags: Mapping[str, str]) -> GateVerdict:
    passed = {"true": True, "false": False}.get(tags.get(T.TAG_EVALUATION_PASSED, ""))
    metric = tags.get(T.TAG_EVALUATION_METRIC, "metric")
    value, threshold = tags.get(T.TAG_EVALUATION_VALUE), tags.get(T.TAG_EVALUATION_THRESHOLD)
    summary = f"{metric}={fmt(value)}, threshold {fmt(threshold)}" if value is not None else ""
    failed = () if passed is not False else (
        CheckOutcome(metric, value, threshold, f"{metric} must be at least the threshold"),)
    return GateVerdict(EVALUATION_GATE, passed, failed, summary)


def compliance_verdict(path: Path, tags: Mapping[str, str] | None = None) -> GateVerdict:
    """The verdict in ``compliance.json``; without the file, the ``compliance.passed`` tag (or not run)."""
    path = Path(path)
    if not path.exists():
        passed = {"true": True, "false": False}.get((tags or {}).get(T.TAG_COMPLIANCE_PASSED, ""))
        return GateVerdict(COMPLIANCE_GATE, passed, (), "no compliance report" if passed is not None else "")
    report = json.loads(path.read_text())
    checks = report.get("checks", [])
    failed = tuple(CheckOutcome(str(c.get("name")), c.get("value"), c.get("threshold"), str(c.get("message", "")))
                   for c in checks if not c.get("passed", False))
    summary = f"{len(checks) - len(failed)} of {len(checks)} checks hold"
    return GateVerdict(COMPLIANCE_GATE, bool(report.get("passed", False)), failed, summary)


def version_verdicts(tags: Mapping[str, str], reports_dir: Path, model_name: str,
                     version: str | int) -> list[GateVerdict]:
    """The evaluation gate and the compliance gate of one version, in the order they run."""
    return [evaluation_verdict(tags),
            compliance_verdict(compliance_report_path(reports_dir, model_name, version), tags)]


def describe(verdicts: list[GateVerdict]) -> list[str]:
    return [line for v in verdicts for line in v.lines()]
