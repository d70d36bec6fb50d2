"""One chat-completion call to an OpenAI-compatible backend, and the client built from the environment.

Any backend that speaks the OpenAI API works: OpenAI itself, vLLM, Ollama, LiteLLM, a test server.
``OPENAI_API_KEY`` is required (local backends accept any non-empty value, e.g. ``EMPTY``) and
``OPENAI_BASE_URL`` selects the backend. The key is only ever handed to the ``openai`` client; it is
never returned, logged or written to MLflow.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlops_assets.prompts.library import ModelParameters

from mlops_assets.errors import MessageInput

ENV_API_KEY = "OPENAI_API_KEY"
ENV_BASE_URL = "OPENAI_BASE_URL"


class LLMConfigError(MessageInput):
    """The LLM backend is not configured (names the missing setting)."""
    subject = "llm"


@dataclass(frozen=True)
class ChatResult:
    """The text of one completion, the model that answered, token usage and latency."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    latency_ms: float

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


def client_from_env(
    environ: Mapping[str, str] | None = None, *, timeout_s: float = 30.0, max_retries: int = 1
) -> Any:
    """An ``openai.OpenAI`` client from ``OPENAI_API_KEY`` and (optionally) ``OPENAI_BASE_URL``."""
    from openai import OpenAI

    env = os.environ if environ is None else environ
    api_key = env.get(ENV_API_KEY, "").strip()
    if not api_key:
        raise LLMConfigError(
            f"{ENV_API_KEY} is not set: set it to your provider's key (any non-empty value such as "
            f"EMPTY for a local vLLM/Ollama backend, with {ENV_BASE_URL} pointing to it)"
        )
    base_url = env.get(ENV_BASE_URL, "").strip() or None
    return OpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=max_retries)


def as_model_parameters(params: ModelParameters | Mapping[str, Any]) -> ModelParameters:
    """Accept a :class:`ModelParameters` or a mapping with the same keys."""
    if isinstance(params, ModelParameters):
        return params
    return ModelParameters.model_validate(dict(params))


def chat_complete(
    client: Any,
    prompt: str,
    model_parameters: ModelParameters | Mapping[str, Any],
    *,
    system: str | None = None,
) -> ChatResult:
    """Send ``prompt`` as the user message with the template's model, temperature and max_tokens."""
    params = as_model_parameters(model_parameters)
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    start = time.perf_counter()
    response = client.chat.completions.create(
        model=params.model,
        messages=messages,
        temperature=params.temperature,
        max_tokens=params.max_tokens,
    )
    latency_ms = (time.perf_counter() - start) * 1000.0
    if not response.choices:
        raise ValueError(f"model {params.model!r} returned no choices")
    usage = response.usage
    return ChatResult(
        text=(response.choices[0].message.content or "").strip(),
        model=response.model or params.model,
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        total_tokens=int(getattr(usage, "total_tokens", 0) or 0),
        latency_ms=round(latency_ms, 2),
    )
