"""Package the LLM chain as an MLflow model: the pyfunc behind ``llm_model.py`` and ``log_llm_model``.

The chain is logged as *models from code*: MLflow stores ``llm_model.py`` (which hands over
:class:`LLMChainModel`) and the ``model_config`` (:class:`~mlops_assets.llm.chain.LLMModelConfig`:
prompt id and alias, checks). No weights, no secrets: the prompt is resolved from the prompt
registry when the model is loaded, the API key from the environment when it is called.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from mlops_assets.models import tags as T
from mlops_assets.llm.chain import LangGraphWrapper, LLMModelConfig, LLMWrapperError, using_tracking_uri
from mlops_assets.models.registration import RegisteredModel
from mlops_assets.models.registry import ensure_experiment
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
    with using_tracking_uri(tracking_uri), mlflow.start_run(
            experiment_id=experiment_id, run_name=f"{model_name}-{prompt_id}",
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


# --- deploying the chain: the approved prompt behind the serving alias ---------------------------


@dataclass(frozen=True)
class ChainDeployment:
    """What :func:`deploy_chain` did: the chain version behind the serving alias and the prompt it serves."""

    model_name: str
    version: str
    alias: str
    previous_version: str | None
    registered: bool  # a new chain version was logged
    moved: bool  # the serving alias moved (False: it already served this chain for this prompt version)
    prompt_id: str
    prompt_version: str
    prompt_mlflow_version: int
    prompt_content_hash: str
    deployment_id: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _default_prompt_version(settings: Any, template_id: str) -> str:
    """The version serving ``prompts:/<id>@production`` if any, else the library file's version."""
    from mlops_assets.prompts.records import open_stores
    from mlops_assets.prompts.status import production_prompt
    from mlops_assets.prompts.workflow import current_template

    with open_stores(settings) as s:
        prod = production_prompt(s, template_id)
    if prod is not None and prod.semver:
        return str(prod.semver)
    return current_template(settings, template_id).version


def chain_prompt_state(settings: Any, template_id: str, version: str | None = None) -> tuple[str, str]:
    """``(version, state)`` of the prompt version :func:`deploy_chain` would serve (state ``never submitted``
    when the governance store has no decision about it)."""
    from mlops_assets.prompts.records import KIND, open_stores

    version = str(version) if version else _default_prompt_version(settings, template_id)
    with open_stores(settings) as s:
        decision = s.store.latest_decision(KIND, template_id, version)
    return version, decision.state.value if decision else "never submitted"


def deploy_chain(settings: Any, template_id: str, version: str | None = None, *, actor: str,
                 reason: str | None = None,
                 config: LLMModelConfig | Mapping[str, Any] | None = None) -> ChainDeployment:
    """Serve the LangGraph chain with an APPROVED version of ``template_id``: how ``/invoke`` is enabled.

    1. The gate: the prompt version (default: the one serving the prompt's ``production`` alias,
       else the library file's version) must be APPROVED in the governance store; otherwise
       :class:`~mlops_assets.models.promotion.PromotionRefused` (a ``Conflict``) names its state and
       the command to approve it, and nothing is written.
    2. ``prompts:/<id>@production`` is confirmed on that version through the prompt workflow's one
       production move (:func:`~mlops_assets.prompts.approval.promote_prompt`: re-checks the
       approval and the evaluation, audited, idempotent).
    3. A chain version of ``settings.llm.llm_model_name`` is logged (models-from-code, tags naming
       the prompt version and content hash) unless the version serving the alias already names them.
    4. The serving alias (``settings.serving_alias``, the one the inference app loads) moves through
       the alias mover of :mod:`~mlops_assets.models.promotion` (set, record the deployment with the
       prompt evidence, put back if recording fails).
    """
    from mlops_assets.prompts.records import KIND, open_stores
    from mlops_assets.governance.records import DecisionState
    from mlops_assets.prompts.approval import promote_prompt
    from mlops_assets.models import promotion as P

    version = str(version) if version else _default_prompt_version(settings, template_id)
    name, alias = settings.llm.llm_model_name, settings.serving_alias
    action = "deploy the LLM chain with prompt"
    with open_stores(settings) as s:
        decision = s.store.latest_decision(KIND, template_id, version)
    if decision is None or decision.state is not DecisionState.APPROVED:
        state = decision.state.value if decision else "never submitted"
        why = (f"prompt {template_id} version {version} is {state}, not APPROVED; a reviewer other than "
               f"its owner and submitter approves it with `mlops prompts approve {template_id} {version} "
               f"--comment '...'`, then run `mlops prompts deploy-chain {template_id}` again")
        raise P.PromotionRefused(action, template_id, version, [why])
    prompt = promote_prompt(settings, template_id, version, actor=actor,
                            reason=reason or f"served by the LLM chain {name}@{alias}")
    wanted = {"llm.prompt_id": template_id, "llm.prompt_version": version,
              "llm.prompt_content_hash": prompt.content_hash}
    with open_stores(settings) as s:
        previous = P.alias_target(s.client, name, alias)
        if previous is not None:
            tags = s.client.get_model_version(name, previous).tags or {}
            serving = P.already_serving(s.store, name, alias, previous)
            if serving is not None and all(tags.get(k) == v for k, v in wanted.items()):
                return ChainDeployment(name, previous, alias, serving.previous_version, False, False,
                                       template_id, version, prompt.mlflow_version, prompt.content_hash,
                                       serving.id)
        sqlite = settings.mlflow_tracking_uri.startswith("sqlite")
        chain = log_llm_model(settings.mlflow_tracking_uri, name, template_id, config=config,
                              tags={**wanted, "llm.prompt_mlflow_version": str(prompt.mlflow_version)},
                              challenger_alias=None,
                              artifact_location=str(settings.artifacts_dir) if sqlite else None)
        checklist = {"prompt": {"template_id": template_id, "version": version, "state": decision.state.value,
                                "approved_by": decision.actor, "decision_id": decision.id,
                                "mlflow_version": prompt.mlflow_version, "content_hash": prompt.content_hash,
                                "production_audit_seq": prompt.audit_seq}}
        deployment = P.move_alias(s.client, s.store, name=name, alias=alias, version=chain.version,
                                  previous=previous, actor=actor,
                                  reason=reason or f"LLM chain with prompt {template_id} {version}",
                                  checklist=checklist, kind="promotion", consume_approval=False)
    return ChainDeployment(name, chain.version, alias, previous, True, True, template_id, version,
                           prompt.mlflow_version, prompt.content_hash, deployment.id)
