"""Platform KPIs: the success measures of the project, computed from what the platform records.

Inputs are gathered once (:func:`collect_model_versions` from the MLflow registry and runs,
:func:`collect_governance_facts` from the governance store's audit log) and passed with the
warehouse's ``feature_catalog`` rows and the LLM usage summary to the pure :func:`compute_kpis`,
which returns a tidy frame (``kpi, value, unit, as_of, detail``): one row per measure, so an asset
can append it to a history table and a trend builds up. :func:`platform_kpis` does both steps.

Scope: LLM chain versions (``task_type`` ``llm``) are governed through their prompts, so the
feature, metadata, evaluation and cadence measures count the tabular model versions only.
A *release* is a registered model version.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
from mlflow.exceptions import MlflowException

from mlops_assets.models import tags as T

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlops_assets.governance.store import GovernanceStore
    from mlops_assets.settings import Settings

log = logging.getLogger(__name__)
KPI_SCHEMA: dict[str, pl.DataType] = {"kpi": pl.String(), "value": pl.Float64(), "unit": pl.String(),
                                      "as_of": pl.Datetime("us", "UTC"), "detail": pl.String()}
CADENCE_TOLERANCE = 1.5  # a gap up to 1.5 x the configured period still keeps the cadence
LINEAGE_TAGS = (T.TAG_FEATURES, T.TAG_FEATURE_VIEWS)
REQUIRED_TAGS = (T.TAG_REGISTERED_BY, T.TAG_TASK_TYPE, T.TAG_EVALUATION_PASSED, T.TAG_EVALUATION_METRIC,
                 T.TAG_EVALUATION_VALUE)


@dataclass(frozen=True)
class ModelVersionFacts:
    """What the KPIs need to know about one registered model version."""

    name: str
    version: str
    created_at: datetime
    tags: dict[str, str]
    run_id: str | None = None
    evaluations: int = 0      # evaluation runs recorded on the version's training run
    explained: bool = False   # an evaluation with SHAP explanations is among its artifacts

    @property
    def is_llm(self) -> bool:
        return self.tags.get(T.TAG_TASK_TYPE) == "llm" or self.tags.get(T.TAG_WRAPPER) == "llm"

    @property
    def features(self) -> list[str]:
        try:
            value = json.loads(self.tags.get(T.TAG_FEATURES, "[]"))
        except ValueError:
            return []
        return [str(f) for f in value] if isinstance(value, list) else []


@dataclass(frozen=True)
class GovernanceFacts:
    """Lead times and caught violations from the audit log."""

    prompt_lead_times_h: list[float] = field(default_factory=list)
    model_lead_times_h: list[float] = field(default_factory=list)
    rejections: int = 0
    failed_prompt_evaluations: int = 0


def missing_metadata(tags: dict[str, str]) -> list[str]:
    """Required tags a version lacks (lineage is satisfied by feature lineage or an import source)."""
    missing = [t for t in REQUIRED_TAGS if not tags.get(t)]
    if not all(tags.get(t) for t in LINEAGE_TAGS) and not tags.get(T.TAG_IMPORTED_FROM):
        missing.append("lineage")
    return missing


# --- collection ------------------------------------------------------------------------------


def _evaluation_artifacts(client: MlflowClient, run_id: str, version: str) -> tuple[int, bool]:
    run = client.get_run(run_id)
    eval_keys = sorted(k for k in run.data.metrics if k.startswith("eval_"))
    count = len(client.get_metric_history(run_id, eval_keys[0])) if eval_keys else 0
    files = {f.path.rsplit("/", 1)[-1] for f in client.list_artifacts(run_id, f"evaluation/v{version}")}
    if files and count == 0:
        count = 1
    return count, "explanation" in files


def collect_model_versions(client: MlflowClient,
                           model_names: Sequence[str] | None = None) -> list[ModelVersionFacts]:
    """Every version of ``model_names`` (default: every registered model), with its evaluation artifacts."""
    found, token = [], None
    while True:
        page = client.search_model_versions(max_results=1000, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            break
    facts = []
    for mv in found:
        if model_names is not None and mv.name not in model_names:
            continue
        tags = dict(mv.tags or {})
        evaluations, explained = (0, False)
        if mv.run_id and tags.get(T.TAG_TASK_TYPE) != "llm":
            try:
                evaluations, explained = _evaluation_artifacts(client, mv.run_id, str(mv.version))
            except MlflowException as exc:  # a deleted run or unreachable artifacts: counted as not evaluated
                log.warning("KPIs: cannot read the evaluations of %s v%s: %s", mv.name, mv.version, exc)
        facts.append(ModelVersionFacts(mv.name, str(mv.version),
                                       datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC), tags,
                                       mv.run_id, evaluations, explained))
    return sorted(facts, key=lambda f: (f.name, int(f.version) if f.version.isdigit() else 0))


def _lead_times(store: GovernanceStore, kind: str) -> list[float]:
    submitted: dict[str, list[datetime]] = {}
    for entry in store.list_audit(limit=None, subject_kind=kind, action="decision.in_review"):
        submitted.setdefault(entry.subject_id, []).append(entry.ts)
    hours = []
    for entry in store.list_audit(limit=None, subject_kind=kind, action="decision.approved"):
        before = [ts for ts in submitted.get(entry.subject_id, []) if ts <= entry.ts]
        if before:
            hours.append((entry.ts - max(before)).total_seconds() / 3600.0)
    return hours


def collect_governance_facts(store: GovernanceStore) -> GovernanceFacts:
    failed = {(e.subject_id, e.details.get("content_hash"))
              for e in store.list_audit(limit=None, subject_kind="prompt", action="prompt.evaluated")
              if not e.details.get("passed", True)}
    return GovernanceFacts(
        prompt_lead_times_h=_lead_times(store, "prompt"), model_lead_times_h=_lead_times(store, "model"),
        rejections=len(store.list_audit(limit=None, action="decision.rejected")),
        failed_prompt_evaluations=len(failed),
    )


# --- the measures ------------------------------------------------------------------------------


def _row(kpi: str, value: float | None, unit: str, detail: str = "") -> dict[str, Any]:
    return {"kpi": kpi, "value": None if value is None else float(value), "unit": unit, "detail": detail}


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _feature_kpis(versions: list[ModelVersionFacts], catalog: pl.DataFrame | None) -> list[dict[str, Any]]:
    if catalog is None or catalog.is_empty() or "feature" not in catalog.columns:
        return [_row("models_using_shared_features", None, "models", "no feature catalog yet"),
                _row("share_versions_using_shared_features", None, "share", "no feature catalog yet"),
                _row("feature_time_to_first_use", None, "days", "no feature catalog yet")]
    shared = set(catalog["feature"].drop_nulls().to_list())
    using = [v for v in versions if shared.intersection(v.features)]
    created = {}
    if "created_at" in catalog.columns:
        first = catalog.group_by("feature").agg(pl.col("created_at").min()).drop_nulls()
        created = {r["feature"]: r["created_at"] for r in first.iter_rows(named=True)}
    first_use: dict[str, datetime] = {}
    for v in versions:
        for f in shared.intersection(v.features):
            first_use[f] = min(first_use.get(f, v.created_at), v.created_at)
    days = [max(0.0, (first_use[f] - created[f]).total_seconds() / 86400.0)
            for f in first_use if f in created]
    models = sorted({v.name for v in using})
    return [
        _row("models_using_shared_features", len(models), "models", ", ".join(models)),
        _row("share_versions_using_shared_features", _share(len(using), len(versions)), "share",
             f"{len(using)} of {len(versions)} versions use catalog features"),
        _row("feature_time_to_first_use", _median(days), "days",
             f"median over {len(days)} used of {len(shared)} catalog features"),
    ]


def _cadence_kpis(versions: list[ModelVersionFacts], period_days: float,
                  as_of: datetime) -> list[dict[str, Any]]:
    gaps: list[float] = []
    overdue = 0
    limit = period_days * CADENCE_TOLERANCE
    by_model: dict[str, list[datetime]] = {}
    for v in versions:
        by_model.setdefault(v.name, []).append(v.created_at)
    for stamps in by_model.values():
        stamps.sort()
        gaps += [(b - a).total_seconds() / 86400.0 for a, b in zip(stamps, stamps[1:])]
        if (as_of - stamps[-1]).total_seconds() / 86400.0 > limit:
            overdue += 1  # an open gap that already missed the cadence
    kept = sum(g <= limit for g in gaps)
    return [
        _row("retraining_cadence_kept", _share(kept, len(gaps) + overdue), "share",
             f"{kept} of {len(gaps)} gaps within {CADENCE_TOLERANCE} x {period_days:g} days; "
             f"{overdue} model(s) overdue"),
        _row("retraining_median_gap", _median(gaps), "days", f"{len(gaps)} gaps between versions"),
        _row("retraining_period", period_days, "days", "configured retraining period (model.retrain_cron)"),
    ]


def _violation_kpis(versions: list[ModelVersionFacts], governance: GovernanceFacts) -> list[dict[str, Any]]:
    failed_gates = sum(v.tags.get(T.TAG_EVALUATION_PASSED) == "false" for v in versions)
    failed_compliance = sum(v.tags.get(T.TAG_COMPLIANCE_PASSED) == "false" for v in versions)
    total = governance.rejections + failed_gates + failed_compliance + governance.failed_prompt_evaluations
    return [
        _row("policy_violations_caught", total, "count",
             f"{governance.rejections} rejections, {failed_gates} failed evaluation gates, "
             f"{failed_compliance} failed compliance, {governance.failed_prompt_evaluations} failed prompt "
             "evaluations"),
        _row("violations_rejections", governance.rejections, "count"),
        _row("violations_failed_gates", failed_gates, "count"),
        _row("violations_failed_compliance", failed_compliance, "count"),
        _row("violations_failed_prompt_evaluations", governance.failed_prompt_evaluations, "count"),
    ]


def _usage_kpis(usage: pl.DataFrame | None) -> list[dict[str, Any]]:
    if usage is None or usage.is_empty():
        return [_row("llm_calls", 0, "calls", "no usage logged")]
    calls = int(usage["calls"].sum())
    return [
        _row("llm_calls", calls, "calls", f"{usage.height} template versions served"),
        _row("llm_success_rate", _share(int(usage["succeeded"].sum()), calls), "share"),
        _row("llm_flagged_share", _share(int(usage["flagged"].sum()), calls), "share"),
        _row("llm_worst_latency_p95", usage["latency_p95_ms"].max(), "ms",
             "highest p95 over template versions"),
    ]


def compute_kpis(versions: Sequence[ModelVersionFacts], catalog: pl.DataFrame | None,
                 governance: GovernanceFacts, usage_summary: pl.DataFrame | None = None, *,
                 retrain_period_days: float, as_of: datetime | None = None) -> pl.DataFrame:
    """The KPI rows (see the module doc) as a frame with :data:`KPI_SCHEMA`."""
    if retrain_period_days <= 0:
        raise ValueError(f"retrain_period_days must be > 0, got {retrain_period_days}")
    as_of = (as_of or datetime.now(UTC)).astimezone(UTC)
    tabular = [v for v in versions if not v.is_llm]
    complete = [v for v in tabular if not missing_metadata(v.tags)]
    evaluated = [v for v in tabular if v.evaluations > 0]
    rows = _feature_kpis(tabular, catalog)
    rows += [
        _row("share_versions_complete_metadata", _share(len(complete), len(tabular)), "share",
             f"{len(complete)} of {len(tabular)} versions carry lineage, task_type and evaluation tags"),
        _row("evaluations_per_release", _share(sum(v.evaluations for v in tabular), len(tabular)),
             "evaluations/version", f"{len(evaluated)} of {len(tabular)} versions evaluated"),
        _row("share_releases_with_explanations", _share(sum(v.explained for v in tabular), len(tabular)),
             "share", "versions whose evaluation includes SHAP explanations"),
    ]
    rows += _cadence_kpis(tabular, retrain_period_days, as_of)
    rows += [
        _row("prompt_approval_lead_time", _median(governance.prompt_lead_times_h), "hours",
             f"median submit -> approve over {len(governance.prompt_lead_times_h)} prompt approvals"),
        _row("model_approval_lead_time", _median(governance.model_lead_times_h), "hours",
             f"median review -> approve over {len(governance.model_lead_times_h)} model approvals"),
    ]
    rows += _violation_kpis(tabular, governance)
    rows += _usage_kpis(usage_summary)
    return pl.DataFrame([{**r, "as_of": as_of} for r in rows], schema=KPI_SCHEMA)


def platform_kpis(settings: Settings, catalog: pl.DataFrame | None,
                  usage_summary: pl.DataFrame | None = None, *, retrain_period_days: float = 7.0,
                  as_of: datetime | None = None,
                  model_names: Sequence[str] | None = None) -> pl.DataFrame:
    """Collect from the MLflow registry and the governance store of ``settings``; :func:`compute_kpis`."""
    from mlops_assets import stores

    client = stores.mlflow_client(settings)
    store = stores.governance_store(settings)
    try:
        governance = collect_governance_facts(store)
    finally:
        store.close()
    return compute_kpis(collect_model_versions(client, model_names), catalog, governance, usage_summary,
                        retrain_period_days=retrain_period_days, as_of=as_of)


# --- reading the history back (the management API) ---------------------------------------------

HISTORY_READ_MODEL = "platform_kpis_history"  # the read-model platform_kpis exports after each point


def kpi_trend(history: pl.DataFrame, points: int = 30) -> list[dict[str, Any]]:
    """Per KPI (in the order of the latest point): its latest value, unit and detail, the previous value,
    the change, a direction (``up``, ``down``, ``flat`` or null without two numbers), and the last
    ``points`` values of its trend (``[{as_of, value}]``, oldest first)."""
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    if history.is_empty():
        return []
    history = history.sort("as_of")
    out = []
    for (kpi,), rows in history.group_by("kpi", maintain_order=True):
        latest = rows.row(-1, named=True)
        numbers = rows.filter(pl.col("value").is_not_null())["value"].to_list()
        previous = rows.row(-2, named=True)["value"] if rows.height > 1 else None
        change = None if previous is None or latest["value"] is None else latest["value"] - previous
        direction = None if change is None else "up" if change > 0 else "down" if change < 0 else "flat"
        out.append({"kpi": kpi, "value": latest["value"], "unit": latest["unit"], "detail": latest["detail"],
                    "as_of": latest["as_of"], "previous": previous, "change": change, "direction": direction,
                    "points": rows.height, "min": min(numbers) if numbers else None,
                    "max": max(numbers) if numbers else None,
                    "trend": [{"as_of": r["as_of"], "value": r["value"]}
                              for r in rows.tail(points).select("as_of", "value").iter_rows(named=True)]})
    order = {k: i for i, k in enumerate(history.filter(pl.col("as_of") == history["as_of"].max())["kpi"])}
    return sorted(out, key=lambda r: (order.get(r["kpi"], len(order)), r["kpi"]))
