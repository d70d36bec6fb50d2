"""The poller that loads what the inference app serves and swaps it in.

``Runtime.state`` is the :class:`~serving.inference.state.ServingState` served right now
(``state.py``: the state, the compatibility rule, the choice of pair and the routing of a request).
Every ``poll_seconds`` a daemon thread (one per worker process) asks the registry which version
holds the serving alias and whether the online snapshot on disk changed; it loads anything new
*beside* what is served, checks that model and snapshot belong together (``state.compatibility``),
and only then swaps, by one reference assignment. A refused snapshot leaves the previous one in use;
a new model version with no matching snapshot waits (the old one keeps serving). The choice itself
is the pure function ``state.plan``.

The same poll reads the ``canary`` alias (``model.canary_alias``): a version holding it, compatible
with the snapshot in use, is loaded beside the champion with the share of traffic mirrored on its tag
``canary.share`` (written by ``mlops_assets.monitoring.canary.start``); ``state.choose`` routes a
request to it with that probability. When the alias goes (a rollback), the next poll drops it.
The LLM chain holding the serving alias is loaded by the same poll.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from mlops_assets.models import tags as T
from mlops_assets.monitoring.canary import share_of
from mlops_assets.models.registry import get_version_by_alias
from mlops_assets.models.wrapper import load_wrapper
from serving.inference.loaded import LoadedLLM, LoadedModel, OnlineVectors, load_model
from serving.inference.state import ServingState, compatibility, plan

log = logging.getLogger("serving.inference.runtime")
LLM_KEY_MISSING = ("OPENAI_API_KEY is not set (setting llm.api_key): the LLM chain cannot call a model; set "
                   "it in the inference app's environment (any non-empty value for a local OpenAI-compatible "
                   "server, with OPENAI_BASE_URL / llm.base_url pointing to it)")


@dataclass(frozen=True)
class RuntimeConfig:
    model_name: str
    alias: str
    online_dir: Path
    poll_seconds: float = 5.0
    startup_wait_seconds: float = 30.0
    challenger_alias: str = T.ALIAS_CHALLENGER
    challenger_percent: float = 0.0
    canary_alias: str = T.ALIAS_CANARY
    canary_max_share: float = 0.5
    llm_model_name: str | None = None
    tracking_uri: str | None = None
    llm_api_key: Any = None  # a pydantic SecretStr (its repr hides the value)
    llm_base_url: str | None = None

    @classmethod
    def from_settings(cls, s: Any) -> RuntimeConfig:
        return cls(model_name=s.model.name, alias=s.serving_alias, online_dir=Path(s.online_dir),
                   poll_seconds=s.serving.poll_seconds, startup_wait_seconds=s.serving.startup_wait_seconds,
                   challenger_alias=s.model.challenger_alias,
                   challenger_percent=s.serving.challenger_traffic_percent,
                   canary_alias=s.model.canary_alias, canary_max_share=s.evaluation.canary_max_share,
                   llm_model_name=s.llm.llm_model_name, tracking_uri=s.mlflow_tracking_uri,
                   llm_api_key=s.llm.api_key, llm_base_url=s.llm.base_url)


class SnapshotWatcher:
    """Hands out a freshly loaded store whenever the published snapshot changes (never mutates one in use).

    Cheap when nothing changed: one ``stat`` of the manifest. When the manifest file changed, it is
    read and compared on (data version, feature view versions, feature names), so a republication
    that only changes the view versions (same data bytes, same content version) is seen too.
    """

    def __init__(self, directory: Path, factory: Callable[[Path], Any]) -> None:
        self.directory, self.factory = directory, factory
        self._signature: tuple[int, int, int] | None = None
        self._identity: tuple | None = None

    @staticmethod
    def identity(manifest: dict[str, Any]) -> tuple:
        views = json.dumps(manifest.get("feature_view_versions") or {}, sort_keys=True)
        return manifest.get("version"), views, tuple(manifest.get("feature_names") or ())

    def poll(self) -> Any:
        """A new loaded store if the published snapshot changed since the last call, else None."""
        from mlops_assets.features.atomic import manifest_path, read_manifest
        from mlops_assets.features.online import SNAPSHOT_NAME

        path = manifest_path(self.directory, SNAPSHOT_NAME)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} does not exist; materialize the online_features asset") from None
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        if signature == self._signature:
            return None
        if self.identity(read_manifest(self.directory, SNAPSHOT_NAME)) == self._identity:
            self._signature = signature
            return None
        fresh = self.factory(self.directory)
        fresh.load()
        self._signature, self._identity = signature, self.identity(fresh.manifest)
        return fresh


def _default_store_factory(directory: Path) -> Any:
    from mlops_assets.features.online import OnlineFeatureStore

    return OnlineFeatureStore(directory)


class Runtime:
    """Holds the ``ServingState`` of one worker and polls for new versions."""

    def __init__(self, config: RuntimeConfig, client_factory: Callable[[], Any],
                 store_factory: Callable[[Path], Any] | None = None,
                 on_swap: Callable[[str, str], None] | None = None) -> None:
        self.config = config
        self._client_factory = client_factory
        self._client: Any = None
        self._watcher = SnapshotWatcher(Path(config.online_dir), store_factory or _default_store_factory)
        self._on_swap = on_swap or (lambda kind, version: None)
        self.state = ServingState()
        self._newest: Any = None
        self._pending: LoadedModel | None = None
        self._loaded: dict[tuple[str, str], LoadedModel] = {}  # (variant, version) -> last loaded
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._polled = threading.Event()  # set once the first poll has finished, whatever it found
        self._thread: threading.Thread | None = None

    # -- loading ----------------------------------------------------------------------------------
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _load_model(self, alias: str, variant: str, warnings: list[str]) -> tuple[bool, LoadedModel | None]:
        """(alias set?, the loaded model for the version holding ``alias``)."""
        version = get_version_by_alias(self.client(), self.config.model_name, alias)
        if version is None:
            return False, None
        return True, self._load_version(version, alias, variant, warnings)

    def _load_version(self, version: Any, alias: str, variant: str, warnings: list[str]) -> LoadedModel | None:
        name = self.config.model_name
        key = (variant, str(version.version))
        if key in self._loaded:
            return self._loaded[key]
        try:
            model = load_model(self.client(), name, version, alias, variant)
        except Exception as exc:  # a broken artifact must not stop the poller
            log.exception("could not load %s version %s", name, version.version)
            warnings.append(f"could not load {name} version {version.version} ({alias}): {exc}")
            return None
        self._loaded = {k: v for k, v in self._loaded.items() if k[0] != variant}
        self._loaded[key] = model
        return model

    def _poll_snapshot(self, warnings: list[str]) -> str | None:
        try:
            fresh = self._watcher.poll()
        except Exception as exc:
            if self._newest is None:
                return f"no online feature snapshot in {self.config.online_dir}: {exc}"
            warnings.append(f"could not read the online snapshot: {exc}")
            return None
        if fresh is not None:
            self._newest = fresh
        return None

    def _load_llm(self, current: LoadedLLM | None, warnings: list[str],
                  problems: list[str] | None = None) -> LoadedLLM | None:
        """The chain holding the serving alias; ``problems`` gets what keeps /invoke from answering."""
        name, problems = self.config.llm_model_name, [] if problems is None else problems
        if not name:
            problems.append("the LLM chain is switched off: setting llm.llm_model_name is empty")
            return None
        if not self._llm_environ().get("OPENAI_API_KEY", "").strip():
            problems.append(LLM_KEY_MISSING)
        try:
            version = get_version_by_alias(self.client(), name, self.config.alias)
            if version is None:
                problems.append(f"no version of the LLM chain {name!r} has alias {self.config.alias!r}: "
                                "approve a version of its prompt (`mlops prompts approve TEMPLATE_ID "
                                "VERSION`), then run `mlops prompts deploy-chain TEMPLATE_ID` (for example "
                                "market_narrative)")
                return None
            if current is not None and current.version == str(version.version):
                if hasattr(current.wrapper, "refresh"):
                    current.wrapper.refresh()
                return current
            wrapper = load_wrapper(f"models:/{name}/{version.version}", self.client(),
                                   feature_lookup=self.lookup_features, tracking_uri=self.config.tracking_uri,
                                   environ=self._llm_environ())
            return LoadedLLM(name, str(version.version), self.config.alias, wrapper)
        except Exception as exc:
            warnings.append(f"LLM chain {name}@{self.config.alias} not available: {exc}")
            if current is None:
                problems.append(f"LLM chain {name}@{self.config.alias} could not be loaded: {exc}")
            return current

    def _llm_environ(self) -> dict[str, str]:
        """The process environment plus the LLM credentials from the settings (never logged)."""
        env = dict(os.environ)
        if self.config.llm_api_key is not None:
            env["OPENAI_API_KEY"] = self.config.llm_api_key.get_secret_value()
        if self.config.llm_base_url:
            env["OPENAI_BASE_URL"] = self.config.llm_base_url
        return env

    def lookup_features(self, entity: str) -> dict[str, Any] | None:
        """The online feature row of ``entity`` in the snapshot in use (the LLM chain's lookup)."""
        snapshot = self.state.snapshot
        return None if snapshot is None else snapshot.lookup(entity)

    # -- one poll ---------------------------------------------------------------------------------
    def refresh(self) -> ServingState:
        """Poll once and swap what changed; returns the state now served. Never raises."""
        with self._lock:
            try:
                return self._refresh()
            except Exception as exc:  # e.g. the registry database is unreachable
                log.exception("poll failed")
                old = self.state
                problems = old.problems if old.model is None else ()
                self.state = replace(old, problems=problems, polled_at=time.time(),
                                     warnings=(f"poll failed, still serving what was loaded: {exc}",))
                return self.state
            finally:
                self._polled.set()

    def wait_first_poll(self, timeout: float | None = None) -> bool:
        """Block until the first poll has finished (a model loaded, or the reasons it is not); False on
        timeout. The app's startup waits for it, so a worker accepts connections only after it has looked
        at the registry once: with several workers behind one socket, a starting worker never answers
        503 while its siblings are serving (uvicorn starts accepting after the lifespan startup)."""
        return self._polled.wait(self.config.startup_wait_seconds if timeout is None else timeout)

    def _refresh(self) -> ServingState:
        old, cfg = self.state, self.config
        warnings: list[str] = []
        alias_set, candidate = self._load_model(cfg.alias, "production", warnings)
        current = old.model
        is_new = candidate is not None and (current is None or candidate.version != current.version)
        pending = candidate if is_new else None
        snapshot_problem = self._poll_snapshot(warnings)
        model, snapshot, problems, plan_warnings = plan(current, pending, old.snapshot, self._newest)
        warnings += plan_warnings
        if model is None:
            problems = [f"no version of model {cfg.model_name!r} has alias {cfg.alias!r} yet: register one "
                        "and promote it" if not alias_set else
                        f"model {cfg.model_name!r}@{cfg.alias} could not be loaded"]
        elif not alias_set:
            warnings.append(f"alias {cfg.alias!r} is no longer set on {cfg.model_name!r}; still serving "
                            f"version {model.version}")
        if snapshot_problem and snapshot is None:
            problems = [snapshot_problem, *[p for p in problems if "no online feature snapshot" not in p]]
        challenger, challenger_online = self._challenger(model, snapshot, old, warnings)
        canary, canary_online, canary_share = self._canary(model, snapshot, old, warnings)
        llm_problems: list[str] = []
        llm = self._load_llm(old.llm, warnings, llm_problems)
        online = old.online if (model is old.model and snapshot is old.snapshot) else (
            OnlineVectors(snapshot, model.features) if model is not None and snapshot is not None else None)
        state = ServingState(model=model, challenger=challenger, snapshot=snapshot, online=online,
                             challenger_online=challenger_online, canary=canary, canary_online=canary_online,
                             canary_share=canary_share, llm=llm, problems=tuple(problems),
                             llm_problems=tuple(llm_problems),
                             warnings=tuple(warnings), polled_at=time.time())
        self.state = state  # the swap: one reference assignment
        swapped = False
        if model is not None and model is not old.model:
            log.info("serving %s version %s (%s)", model.name, model.version, model.alias)
            self._on_swap("model", model.version)
            swapped = True
        if snapshot is not None and snapshot is not old.snapshot:
            log.info("serving online snapshot %s", snapshot.version)
            self._on_swap("snapshot", str(snapshot.version))
            swapped = True
        if swapped or llm is not old.llm:
            # Hundreds of thousands of long-lived objects (torch, MLflow, the snapshot) would make every
            # full garbage collection pause requests for ~0.1-0.3 s; freezing moves them out of its reach.
            gc.freeze()
        return state

    def _challenger(self, model: LoadedModel | None, snapshot: Any, old: ServingState, warnings: list[str]
                    ) -> tuple[LoadedModel | None, OnlineVectors | None]:
        cfg = self.config
        off = cfg.challenger_percent <= 0 or cfg.challenger_alias == cfg.alias
        if off or model is None or snapshot is None:
            return None, None
        _, challenger = self._load_model(cfg.challenger_alias, "challenger", warnings)
        if challenger is None or challenger.version == model.version:
            return None, None
        reasons = compatibility(challenger, snapshot)
        if reasons:
            warnings.append(f"challenger version {challenger.version} gets no traffic: " + "; ".join(reasons))
            return None, None
        if challenger is old.challenger and snapshot is old.snapshot:
            return challenger, old.challenger_online
        return challenger, OnlineVectors(snapshot, challenger.features)

    def _canary(self, model: LoadedModel | None, snapshot: Any, old: ServingState, warnings: list[str]
                ) -> tuple[LoadedModel | None, OnlineVectors | None, float]:
        """The version holding the canary alias, its vectors and its share; (None, None, 0) when there is
        none, it is the champion, it has no valid share tag, or it does not fit the snapshot."""
        cfg, none = self.config, (None, None, 0.0)
        if model is None or snapshot is None or cfg.canary_alias in (cfg.alias, cfg.challenger_alias):
            return none
        version = get_version_by_alias(self.client(), cfg.model_name, cfg.canary_alias)
        if version is None:  # no canary (or rolled back): forget it, so a restart loads and counts afresh
            self._loaded = {k: v for k, v in self._loaded.items() if k[0] != "canary"}
            return none
        if str(version.version) == model.version:
            return none
        share = share_of(dict(version.tags or {}), cfg.canary_max_share)
        if share is None:
            warnings.append(f"canary version {version.version} gets no traffic: its tag {T.TAG_CANARY_SHARE!r} "
                            f"is missing or not within (0, {cfg.canary_max_share}]; start it with "
                            "`mlops models canary NAME VERSION --share S`")
            return none
        canary = self._load_version(version, cfg.canary_alias, "canary", warnings)
        if canary is None:
            return none
        reasons = compatibility(canary, snapshot)
        if reasons:
            warnings.append(f"canary version {canary.version} gets no traffic: " + "; ".join(reasons))
            return none
        if canary is old.canary and snapshot is old.snapshot:
            return canary, old.canary_online, share
        return canary, OnlineVectors(snapshot, canary.features), share

    # -- the poller thread ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="serving-poller", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        self.refresh()
        while not self._stop.wait(self.config.poll_seconds):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
