"""The demo run (``make demo``): the whole graph on the real instance under DAGSTER_HOME.

1. ``demo_job``: ingestion, feature store, training + registration behind the evaluation gate, drift;
2. the new model version's partition and ``evaluate_model_job`` for it (what ``model_version_sensor``
   does when the daemon runs): evaluation report, compliance gate, ``staging`` alias;
3. every template of the prompt library as a partition and ``prompt_evaluation_job`` for each (what
   ``prompt_library_sensor`` does): registered in the MLflow prompt registry and evaluated;
4. after the result, ``defs.platform.demo_llm_chain_and_kpis``: the LLM chain (``llm_chain``) when an LLM
   key is configured and its prompt approved (else what is missing), then ``platform_kpis_job``.

Runs go through ``execute_in_process`` against ``DagsterInstance.get()``, so they show in the UI's
run history afterwards (``make dev``).

How it ends: a gate that refuses is the platform doing its job, so the demo exits 0 and its last lines
say which gate refused the model and why (each failed check with value, threshold and message, from
the runs' asset check evaluations and the compliance report). It exits 1 only when the platform
itself failed: a step that raised, or a run that failed for any reason other than a gate.
"""

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.errors import DagsterAssetCheckFailedError

from mlops_assets.defs.models import MODEL_VERSIONS
from mlops_assets.defs.platform import demo_llm_chain_and_kpis
from mlops_assets.defs.prompts import PROMPT_TEMPLATES
from mlops_assets.defs.recovery import recover_crashed_runs

# Steps whose dg.Failure is a gate's refusal: staging_model raises one only when the alias mover
# (models.promotion.set_gate_alias) refuses to move `staging`.
REFUSING_STEPS = frozenset({"staging_model"})
# the refusal of a blocking check: Dagster fails the step with this error type after the step's body ran
CHECK_FAILED_ERROR = DagsterAssetCheckFailedError.__name__


@dataclass(frozen=True)
class Refusal:
    """A gate that said no: a failed blocking check (or the alias mover), with what it reported."""

    gate: str
    asset: str
    description: str = ""
    metadata: dict[str, object] = field(default_factory=dict)

    def lines(self) -> list[str]:
        from mlops_assets.evaluation.verdicts import fmt

        values = ", ".join(f"{k} {fmt(self.metadata[k])}" for k in ("metric", "value", "threshold")
                           if k in self.metadata)
        return [f"{self.gate} on {self.asset}: REFUSED" + (f" ({values})" if values else ""),
                *([f"  {self.description}"] if self.description else [])]


@dataclass
class RunOutcome:
    job: str
    run_id: str
    success: bool
    refusals: list[Refusal] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # the platform's own failures


def classify(job: str, result: dg.ExecuteInProcessResult) -> RunOutcome:
    """Split a run's failed steps into gate refusals and the platform's own failures (by error type)."""
    failed_checks: dict[str | None, list] = {}
    for event in result.all_events:
        if event.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        evaluation = event.asset_check_evaluation_data
        if not evaluation.passed and evaluation.blocking and evaluation.severity == dg.AssetCheckSeverity.ERROR:
            failed_checks.setdefault(event.step_key, []).append(evaluation)
    outcome = RunOutcome(job, result.run_id, result.success)
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        error = data.error
        if error is not None and error.cls_name == CHECK_FAILED_ERROR and failed_checks.get(event.step_key):
            outcome.refusals += [
                Refusal(e.check_name, e.asset_key.to_user_string(), e.description or "",
                        {k: getattr(v, "value", v) for k, v in (e.metadata or {}).items()})
                for e in failed_checks[event.step_key]]
        elif event.step_key in REFUSING_STEPS and data.user_failure_data is not None:
            outcome.refusals.append(Refusal("alias mover", event.step_key or "",
                                            data.user_failure_data.description or ""))
        else:
            message = (error.message if error else None) or (
                data.user_failure_data.description if data.user_failure_data else "") or "failed"
            outcome.failures.append(f"{job}: step {event.step_key} failed: {message.strip().splitlines()[0]}")
    if not result.success and not outcome.refusals and not outcome.failures:
        outcome.failures.append(f"{job}: run {result.run_id} failed")
    return outcome


def _registered_version(result: dg.ExecuteInProcessResult) -> str | None:
    """The model version this run registered (not an older one from a previous run)."""
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        if materialization.asset_key == dg.AssetKey("trained_model"):
            value = materialization.metadata.get("model_version")
            return str(value.value) if value is not None else None
    return None


def main() -> int:
    from mlops_assets.definitions import defs

    instance = dg.DagsterInstance.get()
    recover_crashed_runs(instance, echo=print)  # a run killed earlier would hold the warehouse pool for ever
    return max(run_demo(defs, instance), demo_llm_chain_and_kpis(defs, instance))  # then the LLM chain, KPIs


def run_demo(defs: dg.Definitions, instance: dg.DagsterInstance, echo: Callable[[str], None] = print) -> int:
    """Run the demo; 0 when the platform did its job (a gate may have refused the model), 1 when it failed."""
    demo = defs.resolve_job_def("demo_job").execute_in_process(instance=instance, raise_on_error=False)
    outcomes = [classify("demo_job", demo)]
    version = _registered_version(demo)
    evaluation_refused = any(r.gate == "evaluation_gate" for r in outcomes[0].refusals)
    if outcomes[0].failures:
        return _end(echo, outcomes, version, "demo_job failed; see the run in the Dagster UI (make dev)")
    if version is not None and not evaluation_refused:
        instance.add_dynamic_partitions(MODEL_VERSIONS.name, [version])
        result = defs.resolve_job_def("evaluate_model_job").execute_in_process(
            instance=instance, partition_key=version, raise_on_error=False)
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        echo(f"model version {version}: evaluation {'ok' if result.success else 'failed'}; checks {checks}")
        outcomes.append(classify("evaluate_model_job", result))
    outcomes += _evaluate_prompts(defs, instance, echo)
    note = None if version is not None or outcomes[0].refusals else "no model version was registered"
    return _end(echo, outcomes, version, note)


def _end(echo: Callable[[str], None], outcomes: list[RunOutcome], version: str | None, note: str | None) -> int:
    """The last lines: what the gates decided and why, or what failed; the exit code."""
    from mlops_assets import stores
    from mlops_assets.evaluation.verdicts import COMPLIANCE_GATE, EVALUATION_GATE, describe, version_verdicts
    from mlops_assets.settings import get_settings

    failures = [f for o in outcomes for f in o.failures] + ([note] if note else [])
    refusals = [r for o in outcomes for r in o.refusals]
    echo("")
    echo("== demo result ==")
    if version is not None:
        s = get_settings()
        tags = stores.mlflow_client(s).get_model_version(s.model.name, version).tags or {}
        verdicts = version_verdicts(tags, s.reports_dir, s.model.name, version)
        model_refused = [r for r in refusals if r.asset in ("trained_model", "model_evaluation")
                         or r.gate == "alias mover"]
        if model_refused:
            gates = sorted({r.gate for r in model_refused})
            echo(f"model {s.model.name} v{version}: REFUSED by {', '.join(gates)} - not staged, nothing to approve.")
        elif not failures:
            echo(f"model {s.model.name} v{version}: passed every gate and is {s.model.staging_alias!r}; next: "
                 f"mlops models approve {s.model.name} {version} --comment '...'")
        for line in describe(verdicts):
            echo(f"  {line}")
        for r in model_refused:
            if r.gate not in (EVALUATION_GATE, COMPLIANCE_GATE):
                for line in r.lines():
                    echo(f"  {line}")
    others = [r for r in refusals if r.asset not in ("trained_model", "model_evaluation") and r.gate != "alias mover"]
    for r in others:
        for line in r.lines():
            echo(line)
    for f in failures:
        echo(f"platform failure: {f}")
    if failures:
        echo("exit 1: the platform itself failed (not a gate); see the runs in the Dagster UI (make dev)")
        return 1
    if refusals:
        echo("exit 0: the gates refused, as they should when the evidence is not there; `mlops status` shows "
             "the same verdicts")
    return 0


def _evaluate_prompts(defs: dg.Definitions, instance: dg.DagsterInstance,
                      echo: Callable[[str], None]) -> list[RunOutcome]:
    from mlops_assets.prompts.library import load_library
    from mlops_assets.settings import get_settings

    ids = [t.id for t in load_library(get_settings().prompts_dir)]
    instance.add_dynamic_partitions(PROMPT_TEMPLATES.name, ids)
    outcomes = []
    for template_id in ids:
        result = defs.resolve_job_def("prompt_evaluation_job").execute_in_process(
            instance=instance, partition_key=template_id, raise_on_error=False)
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        echo(f"prompt {template_id}: {'ok' if result.success else 'failed'}; checks {checks}")
        outcomes.append(classify(f"prompt_evaluation_job[{template_id}]", result))
    return outcomes


if __name__ == "__main__":
    sys.exit(main())
