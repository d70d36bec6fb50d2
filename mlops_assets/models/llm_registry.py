"""Package the LLM chain as an MLflow model: the pyfunc behind ``llm_model.py`` and ``log_llm_model``.

The chain is logged as *models from code*: MLflow stores ``llm_model.py`` (which hands over
:class:`LLMChainModel`) and the ``model_config`` (:class:`~mlops_assets.models.llm.LLMModelConfig`:
prompt id and alias, checks). No weights, no secrets: the prompt is resolved from the prompt
registry when the model is loaded, the API key from the environment when it is called.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from mlops_assets.models import tags as T
from mlops_assets.models.llm import LangGraphWrapper, LLMModelConfig, LLMWrapperError, using_tracking_uri
from mlops_assets.models.registry import RegisteredModel, ensure_experiment
from mlops_assets.models.tags import ALIAS_CHALLENGER, ALIAS_PRODUCTION

MODEL_CODE_PATH = Path(__file__).with_name("llm_model.py")


class LLMChainModel(mlflow.pyfunc.PythonModel):
    """The pyfunc that ``llm_model.py`` hands to MLflow (models-from-code).

    Loaded by MLflow, it keeps the validated :class:`LLMModelConfig`; :meth:`LangGraphWrapper.load`
    reads it from there. Its own ``predict`` serves requests that carry their ``features`` (a plain
    ``mlflow models serve`` has no feature lookup), resolving the prompt from the tracking server
    in ``MLFLOW_TRACKING_URI``.
    """

    _skip_type_hint_validation = True  # requests are free-form dicts; MLflow honours this flag

    def __init__(self) -> None:
        self.config = LLMModelConfig()
        self._wrapper: LangGraphWrapper | None = None

    def load_context(self, context: Any) -> None:
        self.config = LLMModelConfig.model_validate(dict(context.model_config or {}))

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would validate inputs
        if self._wrapper is None:
            self._wrapper = LangGraphWrapper(self.config)
        if hasattr(model_input, "to_dict"):  # a pandas DataFrame from the pyfunc input schema
            model_input = model_input.to_dict(orient="records")
        records = [model_input] if isinstance(model_input, (str, Mapping)) else list(model_input)
        return [self._wrapper.predict(r) for r in records]


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in ("mlflow", "openai", "langgraph", "pydantic", "alt-profanity-check", "pyyaml"):
        try:
            pins.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:  # pragma: no cover - all are dependencies of the project
            pins.append(dist)
    return pins


def log_llm_model(
    tracking_uri: str | None,
    model_name: str,
    prompt_id: str,
    *,
    prompt_alias: str = ALIAS_PRODUCTION,
    experiment_name: str = "llm-chains",
    config: LLMModelConfig | Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    challenger_alias: str | None = ALIAS_CHALLENGER,
    artifact_location: str | None = None,
) -> RegisteredModel:
    """Log the chain (models-from-code, ``llm_model.py``) and register a new version of ``model_name``.

    Like the tabular models: a run in ``experiment_name``, a new registered version tagged
    ``wrapper=llm`` / ``task_type=llm`` / ``source=code`` plus the prompt it resolves, and the
    ``challenger`` alias; ``artifact_location`` is used when the experiment is created. The prompt
    must already exist in the prompt registry (its production alias may come later: the wrapper
    resolves it at load and on refresh). No secret is logged.
    """
    base = config.model_dump() if isinstance(config, LLMModelConfig) else dict(config or {})
    cfg = LLMModelConfig.model_validate({**base, "prompt_id": prompt_id, "prompt_alias": prompt_alias})
    client = MlflowClient(tracking_uri=tracking_uri)
    if client.get_prompt(prompt_id) is None:
        raise LLMWrapperError(
            f"prompt {prompt_id!r} is not in the MLflow prompt registry; sync the library first"
        )
    experiment_id = ensure_experiment(client, experiment_name, artifact_location)
    with using_tracking_uri(tracking_uri):
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{model_name}-{prompt_id}",
                              nested=mlflow.active_run() is not None) as run:
            mlflow.log_params({"prompt_id": prompt_id, "prompt_alias": prompt_alias, "chain": "narrative"})
            info = mlflow.pyfunc.log_model(
                name="chain", python_model=str(MODEL_CODE_PATH),
                model_config=cfg.model_dump(), registered_model_name=model_name,
                pip_requirements=_pip_requirements(),
            )
    version = str(info.registered_model_version)
    version_tags = {
        T.TAG_WRAPPER: "llm", T.TAG_TASK_TYPE: "llm", T.TAG_SOURCE: "code",
        "llm.prompt_id": prompt_id, "llm.prompt_alias": prompt_alias, **dict(tags or {}),
    }
    for key, value in version_tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    if challenger_alias:
        client.set_registered_model_alias(model_name, challenger_alias, version)
    return RegisteredModel(
        name=model_name, version=version, run_id=run.info.run_id, metrics={},
        model_uri=f"models:/{model_name}/{version}", experiment_id=experiment_id,
        logged_model_uri=info.model_uri,
    )
