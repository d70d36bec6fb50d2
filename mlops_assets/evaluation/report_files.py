"""Reading the evaluation reports back: what :func:`~mlops_assets.evaluation.report.evaluate_version`
wrote for each version, by part (A/B test, fairness, scenario runs) and side by side.

The reports live in ``<reports_dir>/evaluation/<model>/<version>/evaluation_report.json`` (written by
the ``model_evaluation`` asset). Everything here reads those files only: a version without a report
is :class:`~mlops_assets.errors.NotFound` naming the version, and a report without the part asked for
(no champion, so no A/B test; no segment column, so no fairness audit) is ``NotFound`` saying why.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

from mlops_assets.errors import NotFound

REPORT_FILE = "evaluation_report.json"
RUN_HINT = "launch one with POST /api/v1/ml/evaluation/runs (or materialize model_evaluation for that version)"


@dataclass(frozen=True)
class ReportFile:
    """One version's report on disk."""

    model_name: str
    version: str
    path: Path  # the report directory

    @property
    def id(self) -> str:
        return f"{self.model_name}:{self.version}"

    @property
    def evaluated_at(self) -> str:
        return datetime.fromtimestamp((self.path / REPORT_FILE).stat().st_mtime, tz=UTC).isoformat()

    def load(self) -> dict[str, Any]:
        return json.loads((self.path / REPORT_FILE).read_text())


def evaluation_root(reports_dir: str | Path) -> Path:
    return Path(reports_dir) / "evaluation"


def find_report(reports_dir: str | Path, name: str, version: str) -> ReportFile:
    """The report of ``name`` version ``version``; ``NotFound`` naming the version when there is none."""
    path = evaluation_root(reports_dir) / name / str(version)
    if not (path / REPORT_FILE).is_file():
        raise NotFound("version", f"no evaluation report for {name} version {version}", hint=RUN_HINT)
    return ReportFile(name, str(version), path)


def list_reports(reports_dir: str | Path, model: str | None = None) -> list[ReportFile]:
    """Every report on record (of ``model``, or all), newest first."""
    root = evaluation_root(reports_dir)
    if not root.is_dir():
        return []
    paths = sorted(root.glob(f"*/*/{REPORT_FILE}"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [ReportFile(p.parent.parent.name, p.parent.name, p.parent) for p in paths
            if model is None or p.parent.parent.name == model]


def _head(report: ReportFile, doc: dict[str, Any]) -> dict[str, Any]:
    return {"id": report.id, "model_name": report.model_name, "version": report.version,
            "evaluated_at": report.evaluated_at, "passed": doc.get("passed"), "task_type": doc.get("task_type")}


def ab_test(report: ReportFile, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """The A/B test of the version against the champion it was evaluated beside."""
    doc = doc if doc is not None else report.load()
    if not doc.get("ab"):
        raise NotFound("version", f"the evaluation of {report.model_name} version {report.version} has no A/B "
                                  "test: there was no champion to compare it with",
                       hint="it runs when the model has a production version at evaluation time")
    return {**_head(report, doc), "ab": doc["ab"]}


def fairness(report: ReportFile, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fairness audit across the segment column, and the compliance checks that read it."""
    doc = doc if doc is not None else report.load()
    if not doc.get("fairness"):
        raise NotFound("version", f"the evaluation of {report.model_name} version {report.version} has no "
                                  "fairness audit", hint="set evaluation fairness limits (the policy's "
                                                         "fairness_limits) so the segment column is audited")
    checks = [c for c in (doc.get("compliance") or {}).get("checks", [])
              if str(c.get("name", "")).startswith("fairness")]
    return {**_head(report, doc), "fairness": doc["fairness"], "compliance_checks": checks}


def scenario_runs(report: ReportFile, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """The backtest's scenario runs (the full period, the stress windows, the configured scenarios)."""
    doc = doc if doc is not None else report.load()
    backtest = doc.get("backtest") or {}
    settings = {k: backtest.get(k) for k in ("mode", "cost_bps", "threshold", "horizon")}
    return {**_head(report, doc), "backtest": settings, "summary": backtest.get("summary", []),
            "scenarios": backtest.get("scenarios", [])}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(float(value)) else None


def _candidate_stats(scenario: dict[str, Any]) -> dict[str, Any]:
    rows = [r for r in scenario.get("table", []) if r.get("strategy") == "candidate"]
    return rows[0] if rows else {}


def compare(a: ReportFile, b: ReportFile) -> dict[str, Any]:
    """Two versions' reports side by side: metrics (with ``b - a``), compliance, the candidate's backtest
    statistics per scenario both ran, fairness disparities, and each one's A/B verdict."""
    da, db = a.load(), b.load()
    metrics = []
    for key in sorted(set(da.get("metrics") or {}) | set(db.get("metrics") or {})):
        va, vb = _number((da.get("metrics") or {}).get(key)), _number((db.get("metrics") or {}).get(key))
        metrics.append({"metric": key, "a": va, "b": vb,
                        "difference": None if va is None or vb is None else vb - va})

    def failed(doc: dict[str, Any]) -> list[str]:
        return [c["name"] for c in (doc.get("compliance") or {}).get("checks", [])
                if not c.get("passed") and not c.get("skipped")]

    scen_a = {s["name"]: s for s in (da.get("backtest") or {}).get("scenarios", [])}
    scen_b = {s["name"]: s for s in (db.get("backtest") or {}).get("scenarios", [])}
    scenarios = []
    for name in [n for n in scen_a if n in scen_b]:
        sa, sb = _candidate_stats(scen_a[name]), _candidate_stats(scen_b[name])
        stats = sorted(k for k in set(sa) & set(sb) if _number(sa[k]) is not None or _number(sb[k]) is not None)
        scenarios.append({"scenario": name, "kind": scen_a[name].get("kind"),
                          "stats": [{"stat": k, "a": _number(sa[k]), "b": _number(sb[k])} for k in stats]})
    disparities = {}
    fa, fb = (d.get("fairness") or {} for d in (da, db))
    for key in sorted(set(fa.get("disparities") or {}) | set(fb.get("disparities") or {})):
        disparities[key] = {"a": _number((fa.get("disparities") or {}).get(key)),
                            "b": _number((fb.get("disparities") or {}).get(key))}
    return {
        "a": _head(a, da), "b": _head(b, db), "metrics": metrics,
        "compliance": {"a": {"passed": da.get("passed"), "failed_checks": failed(da)},
                       "b": {"passed": db.get("passed"), "failed_checks": failed(db)}},
        "scenarios": scenarios, "fairness_disparities": disparities,
        "ab": {"a": (da.get("ab") or {}).get("verdict"), "b": (db.get("ab") or {}).get("verdict")},
    }
