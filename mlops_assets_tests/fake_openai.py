"""A small OpenAI-compatible HTTP server for tests: deterministic, local, no network.

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/moderations`` (switch it
off with ``config.moderation_enabled = False`` to mimic vLLM / Ollama, which answer 404).

Chat completions are deterministic and grounded by construction: the reply restates the
``name: value`` / ``name = value`` lines found in the prompt ("close was 187.42."), so the
groundedness checks of the platform can be tested against a real HTTP round trip. ``config.mode``
changes the behaviour:

- ``"echo"`` (default): the grounded reply above;
- ``"hallucinate"``: the same reply with the first number changed (x1.5 + 1), which must be flagged;
- ``"toxic"``: the grounded reply followed by an abusive sentence;
- ``"fixed"``: returns ``config.fixed_reply``.

A request whose system message asks for ``unsupported_claims`` (the LLM judge) is answered with
JSON: score 1.0 when every number in the OUTPUT section occurs verbatim in the CONTEXT section.

Every request is appended to ``server.requests`` (path, headers, JSON body) for assertions.

Usage::

    with FakeOpenAIServer() as server:
        client = openai.OpenAI(api_key="test-key", base_url=server.base_url)
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

_PAIR = re.compile(
    r"^\s*[-*]?\s*([A-Za-z][\w .()/%-]*?)\s*[:=]\s*"  # "- name:" or "name ="
    r"([-+]?\$?\d[\d,]*(?:\.\d+)?%?[A-Za-z]?)\s*(?:,.*)?$"  # a number, optional unit, optional tail
)
_NUM = re.compile(r"(?<![\d.])\d+(?:\.\d+)?")
_ABUSIVE = ("idiot", "stupid", "moron", "shit", "fuck", "hate you")
TOXIC_SENTENCE = "Anyone who trades this is a stupid fucking idiot."
FAKE_API_KEY = "sk-test-not-a-real-key-0123456789"  # what the test clients send; never a real key


@dataclass
class FakeOpenAIConfig:
    """Mutable behaviour of the server (tests flip it between requests)."""

    mode: str = "echo"
    fixed_reply: str = ""
    moderation_enabled: bool = True
    models: list[str] = field(default_factory=lambda: ["fake-gpt", "gpt-4o-mini"])
    required_api_key: str | None = None
    max_pairs: int = 6


def grounded_reply(prompt: str, max_pairs: int = 6) -> str:
    """Restate the ``name: value`` lines of ``prompt`` as sentences."""
    sentences = []
    for line in prompt.splitlines():
        match = _PAIR.match(line)
        if match:
            name, value = match.group(1).strip(), match.group(2)
            sentences.append(f"The {name} was {value}.")
        if len(sentences) >= max_pairs:
            break
    return " ".join(sentences) or "No figures were provided."


def _hallucinate(text: str) -> str:
    match = _NUM.search(text)
    if not match:
        return text + " The price rose 7.77% today."
    changed = float(match.group(0)) * 1.5 + 1
    return text[: match.start()] + f"{changed:.2f}" + text[match.end():]


def _judge(messages: list[dict[str, Any]]) -> str:
    user = next((m["content"] for m in messages if m.get("role") == "user"), "")
    context, _, output = user.partition("OUTPUT:")
    context_numbers = set(_NUM.findall(context))
    claims = _NUM.findall(output)
    missing = [c for c in claims if c not in context_numbers]
    score = 1.0 if not claims else 1.0 - len(missing) / len(claims)
    return json.dumps({"score": round(score, 4), "unsupported_claims": missing})


def create_app(config: FakeOpenAIConfig, requests: list[dict[str, Any]]) -> FastAPI:
    app = FastAPI(title="fake-openai")

    def _unauthorised(request: Request) -> JSONResponse | None:
        if config.required_api_key is None:
            return None
        if request.headers.get("authorization") != f"Bearer {config.required_api_key}":
            return JSONResponse({"error": {"message": "invalid api key", "type": "invalid_request_error",
                                           "code": "invalid_api_key"}}, status_code=401)
        return None

    async def _record(request: Request) -> dict[str, Any]:
        body = await request.json() if request.method == "POST" else {}
        requests.append({"path": request.url.path, "headers": dict(request.headers), "body": body})
        return body

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        await _record(request)
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                                           for m in config.models]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await _record(request)
        denied = _unauthorised(request)
        if denied is not None:
            return denied
        messages = body.get("messages", [])
        prompt = "\n".join(str(m.get("content", "")) for m in messages)
        system = " ".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
        if "unsupported_claims" in system:
            text = _judge(messages)
        elif config.mode == "fixed":
            text = config.fixed_reply
        else:
            text = grounded_reply(prompt, config.max_pairs)
            if config.mode == "hallucinate":
                text = _hallucinate(text)
            elif config.mode == "toxic":
                text = f"{text} {TOXIC_SENTENCE}"
        prompt_tokens = max(1, len(prompt) // 4)
        completion_tokens = max(1, len(text) // 4)
        return {
            "id": f"chatcmpl-fake-{len(requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-gpt"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    @app.post("/v1/moderations")
    async def moderations(request: Request) -> Any:
        body = await _record(request)
        if not config.moderation_enabled:
            return JSONResponse({"error": {"message": "Not Found", "type": "not_found"}}, status_code=404)
        inputs = body.get("input", [])
        inputs = [inputs] if isinstance(inputs, str) else inputs
        results = []
        for text in inputs:
            hit = any(word in str(text).lower() for word in _ABUSIVE)
            score = 0.97 if hit else 0.003
            categories = ["harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                          "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent",
                          "sexual", "sexual/minors", "violence", "violence/graphic"]
            scores = {c: 0.001 for c in categories} | {"harassment": score}
            results.append({"flagged": hit,
                            "categories": {c: (c == "harassment" and hit) for c in categories},
                            "category_scores": scores,
                            "category_applied_input_types": {c: ["text"] for c in categories}})
        return {"id": f"modr-fake-{len(requests)}", "model": body.get("model") or "omni-moderation-latest",
                "results": results}

    return app


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeOpenAIServer:
    """Runs the fake API with uvicorn in a background thread on a free local port."""

    def __init__(self, config: FakeOpenAIConfig | None = None) -> None:
        self.config = config or FakeOpenAIConfig()
        self.requests: list[dict[str, Any]] = []
        self.port = _free_port()
        self._server = uvicorn.Server(uvicorn.Config(
            create_app(self.config, self.requests), host="127.0.0.1", port=self.port,
            log_level="warning", access_log=False, lifespan="off",
        ))
        self._thread = threading.Thread(target=self._server.run, name="fake-openai", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 15.0) -> FakeOpenAIServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"fake OpenAI server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def reset(self) -> None:
        """Back to the default behaviour and an empty request log (between tests)."""
        fresh = FakeOpenAIConfig()
        for name in fresh.__dataclass_fields__:
            setattr(self.config, name, getattr(fresh, name))
        self.requests.clear()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
