"""Prompt governance assets, one partition per template (dynamic partitions ``prompt_templates``).

``prompt_library_sensor`` watches the library directory (``settings.prompts_dir``): a new template
gets a partition, and each template whose content hash changed gets one run of
``prompt_evaluation_job`` (run key = id + content hash, so a content is evaluated once).

- ``prompt_templates``: loads the file, registers the version in the MLflow prompt registry
  (deduplicated by content hash, state mirrored from the governance store; a version the store has
  never seen is submitted, IN_REVIEW) and shows what a reviewer needs: the rendered first golden
  case and the diff against the version in production. Blocking check ``template_valid``.
- ``prompt_evaluations``: the evaluation (static, offline and, with an LLM backend, model checks),
  an MLflow run in ``prompt-evaluations`` and the outcome recorded for approval. Blocking checks
  per risk-level thresholds: ``static_checks``, ``toxicity``, ``groundedness``, ``golden_quality``.

Approval is a person's act (``mlops prompts approve ...``); it moves ``prompts:/<id>@production``.

- ``llm_chain``: the LangGraph chain behind ``/invoke`` (``models.llm_registry.deploy_chain``, the same
  domain function as ``mlops prompts deploy-chain``): registered with an APPROVED prompt version and
  given its serving alias; refused while the prompt version is not approved.

The sensor also skips a template whose current content the latest ``prompt_evaluations``
materialization of its partition already evaluated (e.g. by ``make demo``), so a fresh sensor cursor
does not evaluate the whole library again.
"""

import json
import warnings

import dagster as dg
import polars as pl

from mlops_assets.defs.common import FOLLOW_UPSTREAM_WHEN_GATES_PASS, OWNER_LLM, markdown_table
from mlops_assets.defs.resources import PlatformResource
from mlops_assets.prompts import policy as P

PROMPT_TEMPLATES = dg.DynamicPartitionsDefinition(name="prompt_templates")

CHECK_GROUPS: dict[str, tuple[str, ...]] = {
    "static_checks": (P.CHECK_SCHEMA, P.CHECK_UNDECLARED, P.CHECK_UNUSED, P.CHECK_MALFORMED,
                      P.CHECK_GOLDEN_INPUTS, P.CHECK_GOLDEN_SIZE, P.CHECK_TEMPLATE_CHARS,
                      P.CHECK_PROMPT_TOKENS, P.CHECK_OUTPUT_BUDGET),
    "toxicity": (P.CHECK_TEMPLATE_TOXICITY, P.CHECK_OUTPUT_TOXICITY),
    "groundedness": (P.CHECK_REFERENCE_GROUNDEDNESS, P.CHECK_REFERENCE_NUMBERS, P.CHECK_OUTPUT_GROUNDEDNESS,
                     P.CHECK_OUTPUT_NUMBERS, P.CHECK_JUDGE),
    "golden_quality": (P.CHECK_EXACT, P.CHECK_CONTAINS, P.CHECK_ROUGE, P.CHECK_BLEU),
}
CHECK_DESCRIPTIONS = {
    "static_checks": "Placeholders declared and used, golden inputs complete, golden-set size and length "
                     "budgets within the template's risk-level limits.",
    "toxicity": "Toxicity of the template, the references and the model outputs under the risk level's "
                "ceiling.",
    "groundedness": "References and outputs supported by their context: sentence similarity, every number "
                    "and date found in the context, and the LLM judge.",
    "golden_quality": "Model outputs against the golden set: contains rate, ROUGE-L, BLEU, exact match.",
}


def _partitioned_check(name: str, asset: str, description: str) -> dg.AssetCheckSpec:
    """A blocking check with one result per template partition, so a failure of one template never
    blocks another (check partitions are a Dagster preview feature, hence the silenced warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, blocking=True, partitions_def=PROMPT_TEMPLATES,
                                 description=description)


def _template(settings, template_id: str):
    from mlops_assets.prompts.records import find_template
    from mlops_assets.prompts.library import PromptLibraryError
    from mlops_assets.governance.records import GovernanceError

    try:
        return find_template(settings.prompts_dir, template_id)
    except (GovernanceError, PromptLibraryError) as exc:
        raise dg.Failure(description=f"prompt template {template_id!r}: {exc}") from None


def _checks_frame(checks) -> pl.DataFrame:
    return pl.DataFrame(
        [{"check": c.name, "passed": c.passed, "blocking": c.blocking, "value": str(c.value),
          "threshold": str(c.threshold), "message": c.message[:160]} for c in checks],
        schema={"check": pl.String, "passed": pl.Boolean, "blocking": pl.Boolean, "value": pl.String,
                "threshold": pl.String, "message": pl.String},
    )


def _code_block(text: str, language: str = "") -> dg.MetadataValue:
    return dg.MetadataValue.md(f"```{language}\n{text[:20_000]}\n```")


@dg.asset(
    partitions_def=PROMPT_TEMPLATES,
    group_name="prompts",
    owners=[OWNER_LLM],
    kinds={"mlflow", "yaml"},
    description=(
        "One prompt template of the library (the partition is its id): the file validated, the version "
        "registered in the MLflow prompt registry (deduplicated by content hash; `approval.state` mirrors "
        "the governance store, a version it has never seen is submitted for review), with its owner, risk "
        "level, content hash, a rendered golden case and the diff against the production version."
    ),
    check_specs=[_partitioned_check("template_valid", "prompt_templates",
                                    "The template's static checks hold for its risk level.")],
)
def prompt_templates(context: dg.AssetExecutionContext, platform: PlatformResource):
    from mlops_assets.prompts.evaluators import static_checks
    from mlops_assets.prompts.policy import PromptPolicy
    from mlops_assets.prompts.records import open_stores
    from mlops_assets.prompts.status import production_prompt, production_template
    from mlops_assets.prompts.library import diff_templates, render
    from mlops_assets.prompts.workflow import register_prompt_version

    s = platform.settings
    template = _template(s, context.partition_key)
    registered = register_prompt_version(s, template, actor="dagster")
    with open_stores(s) as stores:
        prod = production_prompt(stores, template.id)
        prod_template = production_template(stores, template.id)
    if prod_template is not None:
        diff = diff_templates(prod_template, template)
    elif prod is not None:
        diff = f"production serves MLflow version {prod.mlflow_version} whose full content is not on record"
    else:
        diff = "no production version yet"
    sample = template.golden_set[0]
    try:
        rendered = render(template, sample.inputs)
    except ValueError as exc:
        rendered = f"cannot render: {exc}"
    metadata = {
        "version": template.version,
        "owner": template.owner,
        "risk_level": template.risk_level,
        "policy_tags": dg.MetadataValue.json(list(template.policy_tags)),
        "content_hash": registered.content_hash,
        "mlflow_prompt": f"prompts:/{template.id}/{registered.mlflow_version}",
        "mlflow_version": registered.mlflow_version,
        "state": registered.state,
        "submitted_now": registered.submitted,
        "content_matches_submission": registered.content_matches_submission,
        "production_version": prod.semver if prod is not None and prod.semver else "none",
        "rendered_sample": _code_block(rendered),
        "diff_vs_production": _code_block(diff, "diff"),
        "file": dg.MetadataValue.path(str(template.source)),
    }
    if not registered.content_matches_submission:
        context.log.warning(f"{template.name}: the file differs from the content submitted for this version; "
                            "bump the version and submit it")
    checks = static_checks(template, PromptPolicy().for_level(template.risk_level))
    failed = [c for c in checks if c.blocking and not c.passed]
    yield dg.MaterializeResult(metadata=metadata)
    yield dg.AssetCheckResult(
        check_name="template_valid", passed=not failed,
        description="; ".join(c.message for c in failed) or f"{len(checks)} static checks passed "
                                                            f"({template.risk_level} risk thresholds)",
        metadata={"checks": markdown_table(_checks_frame(checks)),
                  "content_hash": registered.content_hash},
    )


class PromptEvaluationConfig(dg.Config):
    """Options of one evaluation run; thresholds come from the risk level (``PromptPolicy``)."""

    use_llm: bool = True  # run the golden set through the model when OPENAI_API_KEY is configured
    use_llm_judge: bool = True
    evaluated_by: str = "dagster"


def _llm_client(platform: PlatformResource, config: PromptEvaluationConfig):
    if not config.use_llm or not platform.openai_api_key:
        return None
    from openai import OpenAI

    return OpenAI(api_key=platform.openai_api_key, base_url=platform.openai_base_url, timeout=60,
                  max_retries=1)


def _group_result(name: str, evaluation) -> dg.AssetCheckResult:
    checks = [c for c in evaluation.checks if c.name in CHECK_GROUPS[name]]
    failed = [c for c in checks if c.blocking and not c.passed]
    if not checks:
        description = "not run: no LLM backend configured (offline evaluation)"
    elif failed:
        description = "; ".join(f"{c.name}: {c.message}" for c in failed)[:2000]
    else:
        description = f"{len(checks)} checks within the {evaluation.risk_level}-risk thresholds"
    return dg.AssetCheckResult(check_name=name, passed=not failed, description=description,
                               metadata={"checks": markdown_table(_checks_frame(checks)),
                                         "content_hash": evaluation.content_hash})


@dg.asset(
    partitions_def=PROMPT_TEMPLATES,
    deps=[prompt_templates],
    group_name="prompts",
    owners=[OWNER_LLM],
    kinds={"openai", "mlflow"},
    automation_condition=FOLLOW_UPSTREAM_WHEN_GATES_PASS,
    description=(
        "The evaluation of one template version (the partition): static and offline checks (toxicity, "
        "groundedness of the references) and, with an LLM backend, the golden set through the model "
        "(toxicity by moderation, groundedness, LLM judge, ROUGE-L/BLEU/contains). Logged as an MLflow run "
        "in `prompt-evaluations`; the outcome is recorded in the governance store for approval."
    ),
    check_specs=[_partitioned_check(name, "prompt_evaluations", CHECK_DESCRIPTIONS[name])
                 for name in CHECK_GROUPS],
)
def prompt_evaluations(context: dg.AssetExecutionContext, config: PromptEvaluationConfig,
                       platform: PlatformResource):
    from mlops_assets.prompts.policy import PromptPolicy
    from mlops_assets.prompts.workflow import evaluate_prompt

    s = platform.settings
    template = _template(s, context.partition_key)
    policy = PromptPolicy(use_llm_judge=config.use_llm_judge)
    client = _llm_client(platform, config)
    evaluation = evaluate_prompt(s, template, client, policy=policy, actor=config.evaluated_by)
    experiment_id = platform.mlflow_client().get_run(evaluation.mlflow_run_id).info.experiment_id
    metrics = pl.DataFrame({"metric": list(evaluation.metrics),
                            "value": [float(v) for v in evaluation.metrics.values()]})
    metadata = {
        "version": template.version,
        "content_hash": evaluation.content_hash,
        "risk_level": evaluation.risk_level,
        "passed": evaluation.passed,
        "blocking_failures": dg.MetadataValue.json([c.name for c in evaluation.blocking_failures]),
        "model_checks": bool(evaluation.cases),
        "checks": markdown_table(_checks_frame(evaluation.checks), max_rows=40),
        "metrics": markdown_table(metrics, max_rows=40),
        "scorers": dg.MetadataValue.json(dict(evaluation.scorers)),
        "mlflow_run_id": evaluation.mlflow_run_id or "",
        "mlflow_run": dg.MetadataValue.url(
            f"{s.mlflow_ui_url}/#/experiments/{experiment_id}/runs/{evaluation.mlflow_run_id}"),
        "audit_seq": evaluation.audit_seq or -1,
        "next_step": f"mlops prompts approve {template.id} {template.version} --comment '...'  "
                     "(a reviewer other than the owner and the submitter)",
    }
    if evaluation.cases:
        cases = pl.DataFrame([{"case": c.name or "", "toxicity": c.toxicity,
                               "groundedness": c.semantic_groundedness,
                               "unsupported_numbers": ", ".join(c.unsupported_numbers),
                               "judge": -1.0 if c.judge_score is None else c.judge_score,
                               "output": c.output[:120]} for c in evaluation.cases])
        metadata["cases"] = markdown_table(cases)
    yield dg.MaterializeResult(metadata=metadata)
    for name in CHECK_GROUPS:
        yield _group_result(name, evaluation)


prompt_evaluation_job = dg.define_asset_job(
    "prompt_evaluation_job", selection=dg.AssetSelection.assets(prompt_templates, prompt_evaluations),
    partitions_def=PROMPT_TEMPLATES,
    description="Register one prompt template version (the partition) and evaluate it "
                "(launched by prompt_library_sensor).",
)


def evaluated_content_hash(instance: dg.DagsterInstance, template_id: str) -> str | None:
    """The content hash the latest ``prompt_evaluations`` materialization of ``template_id`` evaluated."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=prompt_evaluations.key, asset_partitions=[template_id]), limit=1,
    ).records
    if not records:
        return None
    value = records[0].asset_materialization.metadata.get("content_hash")
    return None if value is None else str(value.value)


@dg.sensor(job=prompt_evaluation_job, minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Watches the prompt library: a new template gets a partition, and every template "
                       "whose content hash changed gets one registration + evaluation run.")
def prompt_library_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource):
    from mlops_assets.prompts.records import changed_templates, scan_library

    scan = scan_library(platform.settings.prompts_dir)
    for problem in scan.problems:
        context.log.warning(f"prompt library: {problem}")
    previous = json.loads(context.cursor) if context.cursor else {}
    changed = [tid for tid in changed_templates(previous, scan.hashes)
               if evaluated_content_hash(context.instance, tid) != scan.hashes[tid]]
    known = set(context.instance.get_dynamic_partitions(PROMPT_TEMPLATES.name))
    new = sorted(set(scan.hashes) - known)
    requests = [dg.RunRequest(run_key=f"{tid}:{scan.hashes[tid]}", partition_key=tid,
                              tags={"prompt_template": tid, "content_hash": scan.hashes[tid][:12]})
                for tid in changed]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[PROMPT_TEMPLATES.build_add_request(new)] if new else [],
        cursor=json.dumps(scan.hashes, sort_keys=True),
        skip_reason=None if requests else "no template changed",
    )


class LLMChainConfig(dg.Config):
    """Which template the chain serves; the version must be APPROVED (default: the one in production)."""

    template_id: str = "market_narrative"
    version: str | None = None
    deployed_by: str = "dagster"


@dg.asset(
    deps=[prompt_evaluations],
    group_name="prompts",
    owners=[OWNER_LLM],
    kinds={"mlflow", "openai"},
    description=(
        "The LangGraph chain the inference app serves at /invoke (online features -> the approved prompt -> "
        "an OpenAI-compatible model -> toxicity and numeric-groundedness checks): a models-from-code MLflow "
        "version of `llm.llm_model_name` registered with an APPROVED prompt version and given the serving "
        "alias through the alias mover, with the prompt approval as evidence in the deployment record. "
        "Refused while the prompt version is not approved. Same as `mlops prompts deploy-chain TEMPLATE_ID`."
    ),
)
def llm_chain(context: dg.AssetExecutionContext, config: LLMChainConfig,
              platform: PlatformResource) -> dg.MaterializeResult:
    from mlops_assets.errors import Conflict
    from mlops_assets.llm.registry import deploy_chain

    s = platform.settings
    try:
        d = deploy_chain(s, config.template_id, config.version, actor=config.deployed_by)
    except Conflict as exc:
        raise dg.Failure(description=str(exc)) from None
    return dg.MaterializeResult(metadata={
        "model_name": d.model_name,
        "chain_version": d.version,
        "alias": d.alias,
        "previous_version": d.previous_version or "none",
        "registered_now": d.registered,
        "prompt": f"{d.prompt_id} {d.prompt_version}",
        "prompt_mlflow": f"prompts:/{d.prompt_id}/{d.prompt_mlflow_version}",
        "prompt_content_hash": d.prompt_content_hash,
        "deployment_id": d.deployment_id if d.deployment_id is not None else -1,
        "mlflow_model": dg.MetadataValue.url(
            f"{s.mlflow_ui_url}/#/models/{d.model_name}/versions/{d.version}"),
        "try_it": _code_block("curl -s -X POST localhost:8080/invoke -H 'content-type: application/json' "
                              "-d '{\"symbol\": \"SYM0001\"}'", "bash"),
    })


llm_chain_job = dg.define_asset_job(
    "llm_chain_job", selection=dg.AssetSelection.assets(llm_chain),
    description="Register the LLM chain with the APPROVED prompt version and move its serving alias.",
)

defs = dg.Definitions(assets=[prompt_templates, prompt_evaluations, llm_chain],
                      jobs=[prompt_evaluation_job, llm_chain_job], sensors=[prompt_library_sensor])
