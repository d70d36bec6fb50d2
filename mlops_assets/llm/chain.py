"""The LLM wrapper: a LangGraph chain that writes the daily market narrative from served features.

``LangGraphWrapper`` follows the ``ModelWrapper`` method names (``train``, ``evaluate``, ``load``,
``predict``). ``predict`` runs a LangGraph ``StateGraph`` with four nodes:

``lookup_features`` (the injected ``feature_lookup(symbol)``, e.g. the online-store lookup of the
serving app, or features passed in the request) -> ``render_prompt`` (the approved template,
resolved from ``prompts:/<prompt_id>@production``) -> ``call_model`` (an OpenAI-compatible chat
completion; model, temperature and max_tokens from the prompt version's model config) ->
``check_output`` (toxicity and numeric groundedness against the features context).

Every answer names the prompt version it used. A flagged answer (toxic, or quoting a number the
features do not support) is withheld (``output=None``, ``blocked=True``) unless the model config
sets ``block_on_flags: false``.

The chain is logged to MLflow as a models-from-code pyfunc (``llm_model.py``, logged by
:func:`mlops_assets.llm.registry.log_llm_model`) whose ``model_config``
(:class:`LLMModelConfig`) names the prompt and the checks; ``load(model_uri)``
brings it back and resolves the prompt, ``refresh()`` re-resolves the alias (serving calls it on
every poll). The API key comes from ``OPENAI_API_KEY`` and is never stored in MLflow or answers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, TypedDict

import mlflow
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, ConfigDict, Field

from mlops_assets.prompts.chat import chat_complete, client_from_env
from mlops_assets.prompts.golden import as_cases, golden_metrics
from mlops_assets.prompts.groundedness import check_numeric_claims
from mlops_assets.prompts.registry import RegisteredPrompt, load_production_prompt
from mlops_assets.prompts.library import render_text
from mlops_assets.prompts.toxicity import score_toxicity
from mlops_assets.models.tags import ALIAS_PRODUCTION
from mlops_assets.settings import use_mlflow_tracking_uri

from mlops_assets.errors import MessageError, MessageInput, NotFound

FeatureLookup = Callable[[str], Mapping[str, Any] | None]
AS_OF_KEYS = ("as_of", "date", "event_timestamp", "timestamp")
FLAG_TOXIC = "toxic"
FLAG_UNGROUNDED = "ungrounded_numbers"


class LLMWrapperError(MessageInput):
    """The wrapper cannot answer: not loaded, misconfigured, or a bad request (see the message)."""
    subject = "llm"


class FeatureNotFoundError(MessageError, NotFound):
    """The feature lookup has no row for the symbol (serving answers 404, field ``symbol``)."""

    def __init__(self, message: str) -> None:
        super().__init__("symbol", message)


class LLMModelConfig(BaseModel):
    """The ``model_config`` logged with the chain (no secrets, no machine-specific paths)."""

    model_config = ConfigDict(extra="forbid")
    wrapper: Literal["llm"] = "llm"  # read by models.wrapper.load_wrapper to pick this class
    prompt_id: str = "market_narrative"
    prompt_alias: str = ALIAS_PRODUCTION
    require_approved_prompt: bool = True
    toxicity_threshold: float = Field(default=0.5, ge=0, le=1)
    use_moderation: bool = Field(default=False, description="/moderations per answer (one more round trip)")
    numeric_rel_tolerance: float = Field(default=0.0, ge=0, le=0.5)
    block_on_flags: bool = True
    system_prompt: str | None = None
    request_timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=1, ge=0)


class NarrativeState(TypedDict, total=False):
    symbol: str
    features: dict[str, Any]
    extra_variables: dict[str, Any]
    prompt: RegisteredPrompt
    context: str
    prompt_text: str
    output: str
    model: str
    usage: dict[str, int]
    llm_latency_ms: float
    flags: list[str]
    checks: dict[str, Any]


def format_number(value: float) -> str:
    """Positional notation with at most 6 significant digits (no exponent; readable by the checks)."""
    if not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "0"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    digits = max(0, 6 - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}".rstrip("0").rstrip(".")


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return format_number(float(value))
    if hasattr(value, "isoformat"):
        return value.isoformat()[:10] if type(value).__name__ == "date" else value.isoformat()
    return str(value)


def as_of_of(features: Mapping[str, Any]) -> str:
    """The snapshot date of a feature row (first of as_of/date/event_timestamp/timestamp), else 'latest'."""
    for key in AS_OF_KEYS:
        if features.get(key) is not None:
            return _value_text(features[key])[:10]
    return "latest"


def format_features(features: Mapping[str, Any]) -> str:
    """One ``- name: value`` line per feature, sorted by name (symbol and date keys excluded)."""
    skip = {"symbol", *AS_OF_KEYS}
    items = sorted(features.items())
    return "\n".join(f"- {k}: {_value_text(v)}" for k, v in items if k not in skip and v is not None)


def narrative_context(symbol: str, features: Mapping[str, Any]) -> str:
    """The text the answer must be grounded in: symbol, snapshot date and the feature lines."""
    return f"symbol: {symbol}\nas_of: {as_of_of(features)}\n{format_features(features)}"


@contextmanager
def using_tracking_uri(tracking_uri: str | None) -> Iterator[None]:
    """Point MLflow's process-wide tracking URI at ``tracking_uri`` for a block, then restore it.

    ``pyfunc.load_model("models:/...")`` and ``log_model`` take no URI argument. With ``None`` the
    current setting (``MLFLOW_TRACKING_URI``) is used unchanged. The registry URI follows the
    tracking URI unless one was set explicitly (one MLflow store is the platform default).
    """
    if not tracking_uri:
        yield
        return
    previous = mlflow.get_tracking_uri() if mlflow.tracking.is_tracking_uri_set() else None
    use_mlflow_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        use_mlflow_tracking_uri(previous)


class LangGraphWrapper:
    """LLM wrapper with the ``ModelWrapper`` method names; see the module docstring."""

    def __init__(
        self,
        config: LLMModelConfig | Mapping[str, Any] | None = None,
        *,
        feature_lookup: FeatureLookup | None = None,
        llm_client: Any = None,
        tracking_uri: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """``feature_lookup(symbol)`` returns the latest feature row (or None); ``llm_client`` is an
        ``openai.OpenAI`` (default: built from ``OPENAI_API_KEY``/``OPENAI_BASE_URL`` in ``environ``
        on first use); ``tracking_uri`` is the MLflow store holding the model and the prompts
        (default: the process-wide ``MLFLOW_TRACKING_URI``)."""
        if not isinstance(config, LLMModelConfig):
            config = LLMModelConfig.model_validate(dict(config or {}))
        self.config = config
        self.feature_lookup = feature_lookup
        self.tracking_uri = tracking_uri
        self.model_uri: str | None = None
        self._client = llm_client
        self._environ = environ
        self._prompt: RegisteredPrompt | None = None
        self._graph = self._build_graph()

    # --- ModelWrapper methods -----------------------------------------------------------------
    def train(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "LangGraphWrapper is not trained: change the prompt in prompts/, get it approved, and promote "
            "the prompt version to the production alias; log the chain with log_llm_model()"
        )

    def load(self, model_uri: str) -> LangGraphWrapper:
        """Load the chain's model config from an MLflow model and resolve its production prompt."""
        with using_tracking_uri(self.tracking_uri):
            chain = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
        config = getattr(chain, "config", None)
        if not isinstance(config, LLMModelConfig):
            raise LLMWrapperError(f"{model_uri} is not an LLM chain logged with log_llm_model() (no config)")
        self.config = config
        self.model_uri = model_uri
        self._prompt = None
        self.refresh()
        return self

    def refresh(self) -> bool:
        """Re-resolve ``prompts:/<id>@<alias>``; True when the prompt version changed."""
        prompt = load_production_prompt(
            self.tracking_uri, self.config.prompt_id, alias=self.config.prompt_alias,
            require_approved=self.config.require_approved_prompt,
        )
        if prompt.model_parameters is None:
            raise LLMWrapperError(
                f"prompt {prompt.uri} has no model_config (model name); re-register it with sync_prompt()"
            )
        changed = self._prompt is None or prompt.mlflow_version != self._prompt.mlflow_version
        self._prompt = prompt
        return changed

    def predict(self, input: str | Mapping[str, Any]) -> dict[str, Any]:
        """Answer one request: ``"AAPL"`` or ``{"symbol": ..., "features"?: {...}, "variables"?: {...}}``."""
        start = time.perf_counter()
        request = {"symbol": input} if isinstance(input, str) else dict(input)
        symbol = str(request.get("symbol") or "").strip()
        if not symbol:
            raise LLMWrapperError("the request needs a non-empty `symbol`")
        state: NarrativeState = {
            "symbol": symbol, "prompt": self.prompt, "extra_variables": dict(request.get("variables") or {}),
        }
        if request.get("features") is not None:
            state["features"] = dict(request["features"])
        final = self._graph.invoke(state)
        prompt = final["prompt"]
        blocked = bool(final["flags"]) and self.config.block_on_flags
        return {
            "symbol": symbol,
            "output": None if blocked else final["output"],
            "blocked": blocked,
            "flags": final["flags"],
            "checks": final["checks"],
            "prompt_id": prompt.name,
            "prompt_version": prompt.semver,
            "prompt_mlflow_version": prompt.mlflow_version,
            "prompt_uri": prompt.uri,
            "prompt_content_hash": prompt.content_hash,
            "model": final["model"],
            "model_uri": self.model_uri,
            "usage": final["usage"],
            "llm_latency_ms": final["llm_latency_ms"],
            "latency_ms": round((time.perf_counter() - start) * 1000.0, 2),
        }

    def evaluate(
        self, golden_set: Sequence[Any], config: Mapping[str, Any] | None = None
    ) -> dict[str, float]:
        """Run golden cases (``inputs`` as template variables) through the production prompt and model.

        ``config``: ``log_to_mlflow`` (default True: log when a run is active), ``prefix`` for metric
        names (default ``"golden"``). Returns quality (exact/contains/ROUGE-L/BLEU), numeric support,
        toxicity, latency and token metrics.
        """
        options = {"log_to_mlflow": True, "prefix": "golden", **dict(config or {})}
        cases = as_cases(golden_set)
        if not cases:
            raise LLMWrapperError("golden_set is empty; pass at least one case")
        prompt, client = self.prompt, self.client
        outputs, numeric, latencies, tokens = [], [], [], 0
        for case in cases:
            text = render_text(prompt.template, case.inputs, template_name=prompt.uri)
            result = chat_complete(client, text, prompt.model_parameters, system=self.config.system_prompt)
            outputs.append(result.text)
            numeric.append(check_numeric_claims(
                result.text, case.grounding_context(), self.config.numeric_rel_tolerance
            ))
            latencies.append(result.latency_ms)
            tokens += result.total_tokens
        tox = score_toxicity(outputs, threshold=self.config.toxicity_threshold)
        metrics = dict(golden_metrics(outputs, cases))
        metrics.update({
            "numeric_support_rate": sum(r.support_rate for r in numeric) / len(numeric),
            "unsupported_numbers": float(sum(len(r.unsupported) for r in numeric)),
            "toxicity_max": tox.max_score,
            "latency_ms_mean": sum(latencies) / len(latencies),
            "total_tokens": float(tokens),
        })
        metrics = {f"{options['prefix']}.{k}": round(float(v), 6) for k, v in metrics.items()}
        if options["log_to_mlflow"] and mlflow.active_run() is not None:
            mlflow.log_metrics(metrics)
            mlflow.set_tags({"llm.prompt_id": prompt.name, "llm.prompt_version": str(prompt.semver),
                             "llm.prompt_mlflow_version": str(prompt.mlflow_version)})
        return metrics

    # --- helpers ------------------------------------------------------------------------------
    @property
    def prompt(self) -> RegisteredPrompt:
        if self._prompt is None:
            self.refresh()
        assert self._prompt is not None
        return self._prompt

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = client_from_env(
                self._environ, timeout_s=self.config.request_timeout_s, max_retries=self.config.max_retries
            )
        return self._client

    def __repr__(self) -> str:  # never shows the client (it holds the API key)
        version = self._prompt.mlflow_version if self._prompt else None
        prompt = f"{self.config.prompt_id}@{self.config.prompt_alias}"
        return f"LangGraphWrapper(prompt={prompt}, version={version})"

    def _build_graph(self) -> Any:
        graph = StateGraph(NarrativeState)
        graph.add_node("lookup_features", self._lookup_features)
        graph.add_node("render_prompt", self._render_prompt)
        graph.add_node("call_model", self._call_model)
        graph.add_node("check_output", self._check_output)
        graph.add_edge(START, "lookup_features")
        graph.add_edge("lookup_features", "render_prompt")
        graph.add_edge("render_prompt", "call_model")
        graph.add_edge("call_model", "check_output")
        graph.add_edge("check_output", END)
        return graph.compile(name="market_narrative_chain")

    def _lookup_features(self, state: NarrativeState) -> dict[str, Any]:
        if state.get("features") is not None:
            return {}
        if self.feature_lookup is None:
            raise LLMWrapperError(
                "no feature_lookup configured: pass one to the wrapper or `features` in the request"
            )
        row = self.feature_lookup(state["symbol"])
        if not row:
            raise FeatureNotFoundError(f"no features for symbol {state['symbol']!r} in the online store")
        return {"features": dict(row)}

    def _render_prompt(self, state: NarrativeState) -> dict[str, Any]:
        features, symbol = state["features"], state["symbol"]
        variables = {k: _value_text(v) for k, v in features.items()}
        variables.update(symbol=symbol, as_of=as_of_of(features), features=format_features(features))
        variables.update(state.get("extra_variables") or {})
        prompt = state["prompt"]
        text = render_text(prompt.template, variables, template_name=prompt.uri)
        return {"prompt_text": text, "context": narrative_context(symbol, features)}

    def _call_model(self, state: NarrativeState) -> dict[str, Any]:
        prompt = state["prompt"]
        result = chat_complete(
            self.client, state["prompt_text"], prompt.model_parameters, system=self.config.system_prompt
        )
        return {
            "output": result.text, "model": result.model, "usage": result.usage(),
            "llm_latency_ms": result.latency_ms,
        }

    def _check_output(self, state: NarrativeState) -> dict[str, Any]:
        moderation = self.client if self.config.use_moderation else None
        tox = score_toxicity([state["output"]], moderation, threshold=self.config.toxicity_threshold)
        numeric = check_numeric_claims(state["output"], state["context"], self.config.numeric_rel_tolerance)
        flags = ([FLAG_TOXIC] if tox.any_flagged else []) + ([FLAG_UNGROUNDED] if numeric.unsupported else [])
        checks = {
            "toxicity": {"score": round(tox.max_score, 4), "scorer": tox.scorer, "threshold": tox.threshold,
                         "fallback_reason": tox.fallback_reason},
            "numeric_groundedness": {"claims": numeric.claims, "unsupported": numeric.unsupported,
                                     "support_rate": round(numeric.support_rate, 4)},
        }
        return {"flags": flags, "checks": checks}
