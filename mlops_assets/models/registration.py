"""Registering model versions: train-and-register, the evaluation gate's verdict, model import.

Every trained model becomes a NEW registered version (so every evaluation is on record) with
lineage tags on both the run and the version, and takes the ``challenger`` alias; a model trained
elsewhere is imported by URI the same way. ``apply_gate`` records the evaluation verdict of a new
version. Moving ``staging``/``production`` is the job of ``promotion`` (which re-checks the gate);
nothing here touches those aliases. Reading the registry (aliases, versions, experiments) is
``registry``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import mlflow
import polars as pl
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict, Field

from mlops_assets.models import tags as T
from mlops_assets.models.registry import RegistryError, ensure_experiment
from mlops_assets.settings import use_mlflow_tracking_uri


class Lineage(BaseModel):
    """Where a model version came from; extra keys become ``lineage.<key>`` tags."""

    model_config = ConfigDict(extra="allow")

    registered_by: str = Field(min_length=1, description="person or pipeline registering the model")
    feature_views: dict[str, str] = Field(default_factory=dict, description="view name -> version")
    dataset_fingerprint: str | None = None
    dagster_run_id: str | None = None

    def tags(self, features: Sequence[str]) -> dict[str, str]:
        out = {
            T.TAG_REGISTERED_BY: self.registered_by,
            T.TAG_FEATURE_VIEWS: json.dumps(self.feature_views, sort_keys=True),
            T.TAG_FEATURES: json.dumps(list(features)),
        }
        if self.dataset_fingerprint:
            out[T.TAG_DATASET_FINGERPRINT] = self.dataset_fingerprint
        if self.dagster_run_id:
            out[T.TAG_DAGSTER_RUN_ID] = self.dagster_run_id
        for key, value in (self.model_extra or {}).items():
            out[f"lineage.{key}"] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return out


@dataclass(frozen=True)
class RegisteredModel:
    """A registered version and how it got there (what a Dagster asset turns into metadata)."""

    name: str
    version: str
    run_id: str | None
    metrics: dict[str, float]
    model_uri: str
    loss_curve: list[dict[str, float]] = field(default_factory=list)
    experiment_id: str | None = None
    logged_model_uri: str | None = None
    best_epoch: int | None = None
    duration_s: float | None = None


@dataclass(frozen=True)
class GateResult:
    """Outcome of ``apply_gate`` as tagged on the version."""

    passed: bool
    metric_name: str
    value: float
    threshold: float
    higher_is_better: bool
    reason: str


def dataset_fingerprint(data: pl.DataFrame) -> str:
    """sha256 over the schema and the CSV text of the frame (stable across processes/versions)."""
    digest = hashlib.sha256(str(list(data.schema.items())).encode())
    digest.update(data.write_csv().encode())
    return digest.hexdigest()


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(name)
        except MlflowException as race:  # registered concurrently
            if race.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise


def train_and_register(
    dataset: pl.DataFrame,
    features: Sequence[str],
    config: Any,
    tracking_uri: str,
    experiment_name: str,
    model_name: str,
    lineage: Mapping[str, Any] | Lineage,
    *,
    run_name: str | None = None,
    artifact_location: str | None = None,
    challenger_alias: str = T.ALIAS_CHALLENGER,
) -> RegisteredModel:
    """Train the Lightning MLP, evaluate it on ``test``, log the pyfunc, register a new version.

    The run (in ``experiment_name``, created with ``artifact_location`` when missing) and the new
    version carry the lineage tags; the version also ``source=trained``, ``task_type`` and
    ``wrapper=lightning``, and takes ``challenger_alias``. ``config`` is a ``TrainConfig`` or a
    dict of its fields. Sets the process-wide MLflow tracking URI to ``tracking_uri``.
    """
    from mlops_assets.models.lightning import PytorchLightningWrapper, TrainConfig

    config = config if isinstance(config, TrainConfig) else TrainConfig.model_validate(dict(config))
    lineage = lineage if isinstance(lineage, Lineage) else Lineage.model_validate(dict(lineage))
    if not lineage.dataset_fingerprint:
        lineage = lineage.model_copy(update={"dataset_fingerprint": dataset_fingerprint(dataset)})
    use_mlflow_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment_id = ensure_experiment(client, experiment_name, artifact_location)
    tags = {**lineage.tags(features), T.TAG_TASK_TYPE: config.task_type, T.TAG_SOURCE: "trained",
            T.TAG_WRAPPER: PytorchLightningWrapper.name}
    wrapper = PytorchLightningWrapper(list(features), tracking_uri=tracking_uri,
                                      experiment_name=experiment_name)
    nested = mlflow.active_run() is not None  # e.g. inside a tuning or pipeline parent run
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags, nested=nested) as run:
        result = wrapper.train(dataset, config)
        metrics = {**result.metrics, **wrapper.evaluate(dataset, config)}
        info = wrapper.log_model(extra_metadata={"registered_model_name": model_name})
    _ensure_registered_model(client, model_name)
    version = client.create_model_version(model_name, source=info.model_uri, run_id=run.info.run_id,
                                          tags=tags, model_id=info.model_id)
    client.set_registered_model_alias(model_name, challenger_alias, version.version)
    return RegisteredModel(
        name=model_name, version=str(version.version), run_id=run.info.run_id, metrics=metrics,
        model_uri=f"models:/{model_name}/{version.version}", loss_curve=result.loss_curve,
        experiment_id=experiment_id, logged_model_uri=info.model_uri, best_epoch=result.best_epoch,
        duration_s=result.duration_s,
    )


def apply_gate(client: MlflowClient, name: str, version: str | int, metric_name: str, value: float | None,
               threshold: float, higher_is_better: bool = True, *, store: Any = None,
               actor: str = "dagster") -> GateResult:
    """Compare ``value`` with ``threshold``, record the verdict, and mirror it as tags on the version.

    With ``store`` (a ``GovernanceStore``) the verdict, value and threshold are recorded there first,
    inside the audit chain, with the version's registerer (``gates.record_evaluation``): the only
    record the alias mover accepts. Without one only the tags are written (the alias mover then
    refuses the version: tags are a mirror, never trusted). Tags: ``evaluation.passed``/``metric``/
    ``value``/``threshold``; on failure also ``rejected=true`` and ``rejected.reason``. A missing or
    non-finite value fails. A pass does not clear an earlier rejection (that may be a person's).
    """
    number = float(value) if value is not None else float("nan")
    version = str(version)
    if store is not None:
        from mlops_assets.models.gates import record_evaluation

        record, reason = record_evaluation(client, store, name, version, metric_name, value, threshold,
                                           higher_is_better=higher_is_better, actor=actor)
        return GateResult(record.passed, metric_name, number, float(threshold), higher_is_better, reason)
    if not math.isfinite(number):
        passed, reason = False, f"{metric_name} is missing or not finite ({value!r})"
    else:
        passed = number >= threshold if higher_is_better else number <= threshold
        relation = (">=" if passed else "<") if higher_is_better else ("<=" if passed else ">")
        reason = f"{metric_name}={number:.6g} {relation} threshold {threshold:.6g}"
    for key, tag_value in {
        T.TAG_EVALUATION_PASSED: "true" if passed else "false",
        T.TAG_EVALUATION_METRIC: metric_name,
        T.TAG_EVALUATION_VALUE: repr(number),
        T.TAG_EVALUATION_THRESHOLD: repr(float(threshold)),
    }.items():
        client.set_model_version_tag(name, version, key, tag_value)
    if not passed:
        client.set_model_version_tag(name, version, T.TAG_REJECTED, "true")
        client.set_model_version_tag(name, version, T.TAG_REJECTED_REASON,
                                     f"evaluation gate failed: {reason}")
    return GateResult(passed, metric_name, number, float(threshold), higher_is_better, reason)


def _logged_model_of_run(client: MlflowClient, run_id: str, artifact_path: str) -> tuple[str, str | None]:
    """(source, model_id) for ``runs:/<run_id>/<artifact_path>`` in MLflow 3 or 2 layouts."""
    run = client.get_run(run_id)
    for output in (run.outputs.model_outputs if run.outputs else []) or []:
        logged = client.get_logged_model(output.model_id)
        if logged.name == artifact_path:
            return f"models:/{logged.model_id}", logged.model_id
    if any(a.path == f"{artifact_path}/MLmodel" for a in client.list_artifacts(run_id, artifact_path)):
        return f"{run.info.artifact_uri}/{artifact_path}", None  # MLflow 2 style run artifact
    raise RegistryError("source_model_uri", f"no model {artifact_path!r} was logged in run {run_id}")


def _resolve_source(client: MlflowClient, source_model_uri: str) -> tuple[str, str | None, str | None]:
    """(source, run_id, model_id) to register for any model URI."""
    if source_model_uri.startswith("runs:/"):
        run_id, _, artifact_path = source_model_uri[len("runs:/"):].partition("/")
        source, model_id = _logged_model_of_run(client, run_id, artifact_path.strip("/") or "model")
        return source, run_id, model_id
    if source_model_uri.startswith("models:/"):
        body = source_model_uri[len("models:/"):]
        if "@" in body:
            src = client.get_model_version_by_alias(*body.split("@", 1))
        elif "/" in body:
            src = client.get_model_version(*body.split("/", 1))
        else:  # models:/<logged model id>
            logged = client.get_logged_model(body)
            return source_model_uri, logged.source_run_id, logged.model_id
        return src.source, src.run_id, getattr(src, "model_id", None)
    return source_model_uri, None, None


def import_external_model(
    client: MlflowClient,
    source_model_uri: str,
    model_name: str,
    registered_by: str,
    *,
    task_type: str = "binary",
    description: str | None = None,
    extra_tags: Mapping[str, str] | None = None,
    challenger_alias: str | None = T.ALIAS_CHALLENGER,
) -> RegisteredModel:
    """Register a pyfunc model trained elsewhere as a new version of ``model_name``.

    Tags: ``source=imported``, ``lineage.imported_from``, ``registered_by``, ``task_type``,
    ``wrapper`` (the model's ``model_config["wrapper"]``, else ``pyfunc``) and the feature list
    from its signature. It takes ``challenger_alias`` (``None`` to skip) so that it goes through
    the same evaluation and approval as a trained model. The global MLflow tracking URI must
    point at the store that holds the source model (it is read to check the pyfunc flavor).
    """
    from mlflow.models import get_model_info

    if not registered_by:
        raise RegistryError("registered_by", "say who imports the model")
    try:
        info = get_model_info(source_model_uri)
    except MlflowException as err:
        raise RegistryError("source_model_uri", f"cannot read {source_model_uri}: {err.message}") from err
    pyfunc_conf = info.flavors.get("python_function")
    if pyfunc_conf is None:
        raise RegistryError("source_model_uri", f"{source_model_uri} has no python_function flavor; "
                            f"flavors: {sorted(info.flavors)}")
    wrapper_name = ((pyfunc_conf.get("config") or {}).get("wrapper")) or "pyfunc"
    schema = info.signature.inputs if info.signature is not None else None
    features = list(schema.input_names()) if schema is not None and schema.has_input_names() else []
    source, run_id, model_id = _resolve_source(client, source_model_uri)
    tags = {
        **Lineage(registered_by=registered_by).tags(features),
        T.TAG_SOURCE: "imported",
        T.TAG_IMPORTED_FROM: source_model_uri,
        T.TAG_TASK_TYPE: task_type,
        T.TAG_WRAPPER: wrapper_name,
        **dict(extra_tags or {}),
    }
    _ensure_registered_model(client, model_name)
    version = client.create_model_version(model_name, source=source, run_id=run_id, tags=tags,
                                          description=description, model_id=model_id)
    if challenger_alias:
        client.set_registered_model_alias(model_name, challenger_alias, version.version)
    return RegisteredModel(name=model_name, version=str(version.version), run_id=run_id, metrics={},
                           model_uri=f"models:/{model_name}/{version.version}", logged_model_uri=source)


__all__ = [
    "GateResult", "Lineage", "RegisteredModel", "apply_gate", "dataset_fingerprint", "import_external_model",
    "train_and_register",
]
