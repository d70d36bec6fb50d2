"""The demo run (``make demo``): the whole graph on the real instance under DAGSTER_HOME.

1. ``demo_job``: ingestion, feature store, training + registration behind the evaluation gate, drift;
2. the new model version's partition and ``evaluate_model_job`` for it (what ``model_version_sensor``
   does when the daemon runs): evaluation report, compliance gate, ``staging`` alias;
3. every template of the prompt library as a partition and ``prompt_evaluation_job`` for each (what
   ``prompt_library_sensor`` does): registered in the MLflow prompt registry and evaluated.

Runs go through ``execute_in_process`` against ``DagsterInstance.get()``, so they show in the UI's
run history afterwards (``make dev``).
"""

import sys

import dagster as dg

from mlops_assets.defs.models import MODEL_VERSIONS
from mlops_assets.defs.prompts import PROMPT_TEMPLATES
from mlops_assets.defs.recovery import recover_crashed_runs


def _latest_version(instance: dg.DagsterInstance) -> str | None:
    event = instance.get_latest_materialization_event(dg.AssetKey("trained_model"))
    value = event.asset_materialization.metadata.get("model_version") if event else None
    return str(value.value) if value is not None else None


def main() -> int:
    from mlops_assets.definitions import defs

    instance = dg.DagsterInstance.get()
    recover_crashed_runs(instance, echo=print)  # a run killed earlier would hold the warehouse pool for ever
    result = defs.resolve_job_def("demo_job").execute_in_process(instance=instance, raise_on_error=False)
    if not result.success:
        print("demo_job failed; see the run in the Dagster UI (make dev)", file=sys.stderr)
        return 1
    version = _latest_version(instance)
    if version is None:
        print("no model version was registered", file=sys.stderr)
        return 1
    instance.add_dynamic_partitions(MODEL_VERSIONS.name, [version])
    evaluation = defs.resolve_job_def("evaluate_model_job").execute_in_process(
        instance=instance, partition_key=version, raise_on_error=False)
    checks = {e.check_name: e.passed for e in evaluation.get_asset_check_evaluations()}
    print(f"model version {version}: evaluation {'ok' if evaluation.success else 'failed'}; checks {checks}")
    prompts_ok = _evaluate_prompts(defs, instance)
    return 0 if evaluation.success and prompts_ok else 1


def _evaluate_prompts(defs: dg.Definitions, instance: dg.DagsterInstance) -> bool:
    from mlops_assets.governance.prompts import load_library
    from mlops_assets.settings import get_settings

    ids = [t.id for t in load_library(get_settings().prompts_dir)]
    instance.add_dynamic_partitions(PROMPT_TEMPLATES.name, ids)
    ok = True
    for template_id in ids:
        result = defs.resolve_job_def("prompt_evaluation_job").execute_in_process(
            instance=instance, partition_key=template_id, raise_on_error=False)
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        print(f"prompt {template_id}: {'ok' if result.success else 'failed'}; checks {checks}")
        ok = ok and result.success
    return ok


if __name__ == "__main__":
    sys.exit(main())
