"""The demo run (``make demo``): the whole graph on the real instance under DAGSTER_HOME.

1. ``demo_job``: ingestion, feature store, training + registration behind the evaluation gate, drift;
2. the new model version's partition and ``evaluate_model_job`` for it (what ``model_version_sensor``
   does when the daemon runs): evaluation report, compliance gate, ``staging`` alias.

Runs go through ``execute_in_process`` against ``DagsterInstance.get()``, so they show in the UI's
run history afterwards (``make dev``).
"""

import sys

import dagster as dg

from mlops_assets.defs.models import MODEL_VERSIONS


def _latest_version(instance: dg.DagsterInstance) -> str | None:
    event = instance.get_latest_materialization_event(dg.AssetKey("trained_model"))
    value = event.asset_materialization.metadata.get("model_version") if event else None
    return str(value.value) if value is not None else None


def main() -> int:
    from mlops_assets.definitions import defs

    instance = dg.DagsterInstance.get()
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
    return 0 if evaluation.success else 1


if __name__ == "__main__":
    sys.exit(main())
