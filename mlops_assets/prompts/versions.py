"""Every version of one prompt template, and usage that other services report for a version.

:func:`template_versions` is the version history the front end shows: each version the library file,
the governance store or the MLflow prompt registry knows, oldest first, with its state
(:func:`~.status.prompt_status`), every decision about it, its submissions, every evaluation (the
latest one summarised) and the moves of ``production`` to it.

:func:`log_usage` appends one call that another service made with a template version to the LLM usage
log the inference app keeps (``<serving log dir>/llm``), so ``/usage`` and the KPIs count it. The
version must be known (in the library file, or submitted or decided in the store): otherwise
``NotFound`` and nothing is written.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mlops_assets.errors import NotFound
from mlops_assets.prompts import records as R
from mlops_assets.prompts.records import KIND, open_stores
from mlops_assets.prompts.status import prompt_status
from mlops_assets.prompts.usage import UsageRecord, append_usage, read_usage, summarise_usage, usage_log_dir

if TYPE_CHECKING:
    from mlops_assets.settings import Settings


def _library_version(settings: Settings, template_id: str) -> str | None:
    from mlops_assets.prompts.library import PromptLibraryError

    try:
        return R.find_template(settings.prompts_dir, template_id).version
    except (NotFound, PromptLibraryError):
        return None


def template_versions(settings: Settings, template_id: str) -> list[dict[str, Any]]:
    """One row per known version of ``template_id``, oldest first; ``NotFound`` when none is known."""
    rows = [r for r in prompt_status(settings) if r["template_id"] == template_id]
    if not rows:
        raise NotFound("template_id", f"no prompt template {template_id!r} in the library or the governance store",
                       hint="list them at /api/v1/prompt-governance/templates")
    with open_stores(settings) as s:
        deployments = R.deployments(s.store, template_id)
        for row in rows:
            version = row["version"]
            row["decisions"] = [d.to_dict() for d in s.store.decision_history(KIND, template_id, version)]
            row["submissions"] = [{k: v for k, v in sub.to_dict().items() if k != "template_id"}
                                  for sub in R.submissions(s.store, template_id) if sub.version == version]
            evaluations = R.evaluations(s.store, template_id, version)
            row["evaluations"] = {"count": len(evaluations),
                                  "passed": sum(e.passed for e in evaluations),
                                  "latest": row.pop("last_evaluation")}
            row["production_moves"] = [d.to_dict() for d in deployments if d.version == version]
    return rows


def known_version(settings: Settings, template_id: str, version: str) -> None:
    """``NotFound`` unless the library file holds ``version`` or the store has submitted or decided it."""
    if _library_version(settings, template_id) == version:
        return
    with open_stores(settings) as s:
        if s.store.latest_decision(KIND, template_id, version) is not None or \
                R.latest_submission(s.store, template_id, version) is not None:
            return
    raise NotFound("version", f"prompt template {template_id!r} has no version {version!r} in the library or "
                              "the governance store", hint="its versions are listed at "
                                                           f"/api/v1/prompt-governance/templates/{template_id}/versions")


def log_usage(settings: Settings, template_id: str, version: str, *, prompt_tokens: int,
              completion_tokens: int, latency_ms: float, caller: str, status: str = "ok",
              llm_latency_ms: float | None = None, cost_usd: float | None = None, model: str | None = None,
              request_id: str | None = None, flags: tuple[str, ...] = (), error: str | None = None) -> UsageRecord:
    """Append one call of ``template_id`` ``version`` by ``caller`` to the usage log (after
    :func:`known_version`); returns the record written."""
    known_version(settings, template_id, version)
    http_status = {"ok": 200, "blocked": 200}.get(status, 502)
    record = UsageRecord(ts=time.time(), request_id=request_id, template_id=template_id, template_version=version,
                         prompt_mlflow_version=None, model=model, status=status, http_status=http_status,
                         latency_ms=float(latency_ms), llm_latency_ms=llm_latency_ms,
                         prompt_tokens=int(prompt_tokens), completion_tokens=int(completion_tokens),
                         flags=tuple(flags), error=error, cost_usd=cost_usd, caller=caller)
    append_usage(usage_log_dir(settings.serving_log_dir), [record])
    return record


def version_usage(settings: Settings, template_id: str, version: str) -> dict[str, Any]:
    """The usage summary of one version (:func:`~.usage.summarise_usage`), with the reported cost and the
    calls per caller (``/invoke`` calls have no caller: counted as ``inference``)."""
    import polars as pl

    known_version(settings, template_id, version)
    usage = read_usage(usage_log_dir(settings.serving_log_dir)).filter(
        (pl.col("template_id") == template_id) & (pl.col("template_version") == version))
    summary = summarise_usage(usage).to_dicts()
    callers = (usage.with_columns(pl.col("caller").fill_null("inference"))
               .group_by("caller").agg(pl.len().alias("calls"), pl.col("cost_usd").sum().alias("cost_usd"))
               .sort("caller").to_dicts()) if usage.height else []
    return {"template_id": template_id, "version": version, "summary": summary[0] if summary else None,
            "cost_usd": float(usage["cost_usd"].sum()) if usage.height else 0.0, "callers": callers}
