"""Shadow scoring in the prediction-log writer process: a second model scored on the served vectors.

The writer process (``predlog_writer.py``) already receives every served record, off the request
path and at idle CPU priority. With a shadow alias configured (``serving.shadow_alias``, default
``challenger``; empty turns it off) it also:

* polls the registry for that alias every ``poll_seconds`` (one ``get_model_version_by_alias`` call)
  in a daemon thread, and loads the version it points to *by number* through the inference app's own
  loader (``loaded.load_model``: the same fast path the app would serve it with), again when the
  alias moves; until a version is loaded, or when loading fails, there is no shadow model;
* after each served segment is written (the served rows come first, always), scores the segment's
  feature vectors with the shadow model in one batch and writes the rows as the sibling segment
  ``shadow-<token>-<pid>-<seq>.parquet`` (the prediction log's schema; the same request ids and row
  numbers, ``variant="shadow"``, the shadow model's name, version and alias, ``latency_ms`` the
  batch's scoring time per row).

The shadow model sees exactly the vectors the served model saw: each of its features is taken by name
from the served vector (a feature the served model does not use is missing, NaN, which the model
imputes, and the segment's ``feature_names`` say which were given). Records served by the shadow
version itself (a challenger traffic split) are not scored again.

**Catch-up** (``predlog_backfill.py``). The writer runs at idle priority, so under saturating load it
gets no CPU: the worker then writes its segments itself (the fallback), without shadow rows, and the
segments closed before the shadow model was loaded have none either. Whenever its pipe is empty the
writer scores such served segments later, one per step, from the served segment's own
``feature_names``/``feature_values`` (exactly the served vectors), and writes the sibling with a
create-if-absent (a hard link of a finished file): several writers on one log directory write at
most one sibling per segment, and a reader never sees a partial one. So the client never waits for
shadow scoring, and every served row within ``catch_up_hours`` gets its shadow score once the
machine has idle CPU. A caught-up row records the version that scored it, which is the alias's
version *at catch-up time*: if the alias moved in between, it differs from the one the alias pointed
to when the request was served.

Nothing here can cost a served row: a failure to poll, load, score or write is reported to the worker
as missing shadow rows (counted) and logged once per distinct problem on stderr.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SHADOW_VARIANT = "shadow"


@dataclass(frozen=True)
class ShadowConfig:
    """What the writer process needs to find the shadow model (passed to it as JSON)."""

    model_name: str
    alias: str
    tracking_uri: str
    poll_seconds: float = 5.0
    # catch-up (predlog_backfill.py): served segments closed without a shadow sibling are scored later,
    # if modified within catch_up_hours (0 turns catch-up off) and at least catch_up_settle_seconds ago
    # (the normal path writes its own sibling right after the served segment); at most
    # catch_up_segments per pass (one directory listing)
    catch_up_hours: float = 24.0
    catch_up_settle_seconds: float = 10.0
    catch_up_segments: int = 8

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ShadowConfig:
        return cls(**json.loads(text))

    @classmethod
    def from_settings(cls, settings: Any) -> ShadowConfig | None:
        """``serving.shadow_alias`` of ``settings.model.name`` (None when the setting is empty)."""
        alias = (getattr(settings.serving, "shadow_alias", "") or "").strip()
        if not alias:
            return None
        return cls(settings.model.name, alias, settings.mlflow_tracking_uri, settings.serving.poll_seconds,
                   catch_up_hours=settings.serving.shadow_catch_up_hours)


class ShadowScorer:
    """The shadow model of one writer process (see the module docstring)."""

    def __init__(self, config: ShadowConfig, *, client: Any = None) -> None:
        self.config = config
        self.model: Any = None  # serving.inference.loaded.LoadedModel, once loaded
        self.problem: str | None = "the shadow model is not loaded yet"
        self._client = client
        self._logged: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> ShadowScorer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shadow-poller", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def note(self, problem: str) -> None:
        """Log ``problem`` once (the writer's stderr is the worker's)."""
        if problem not in self._logged:
            self._logged.add(problem)
            print(f"prediction-log writer: shadow scoring: {problem}", file=sys.stderr, flush=True)

    # -- the poller -------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - never let the poller die; reported as missing rows
                self.problem = f"{type(exc).__name__}: {exc}"
                self.note(self.problem)
            self._stop.wait(self.config.poll_seconds)

    def poll(self) -> None:
        """Load the version the alias points to now, if it is not the loaded one."""
        cfg = self.config
        if self._client is None:
            from mlflow import MlflowClient

            from mlops_assets.settings import use_mlflow_tracking_uri

            # the model load itself (load_wrapper) reads the process-wide tracking URI: this process's own
            use_mlflow_tracking_uri(cfg.tracking_uri)
            self._client = MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
        try:
            version = self._client.get_model_version_by_alias(cfg.model_name, cfg.alias)
        except Exception as exc:  # noqa: BLE001 - MLflow raises RESOURCE_DOES_NOT_EXIST as MlflowException
            self.model = None
            self.problem = f"{cfg.model_name}@{cfg.alias} is not in the registry ({type(exc).__name__})"
            self.note(self.problem)
            return
        current = self.model
        if current is not None and current.version == str(version.version):
            return
        from serving.inference.loaded import load_model

        try:
            self.model = load_model(self._client, cfg.model_name, version, cfg.alias, SHADOW_VARIANT)
            self.problem = None
        except Exception as exc:  # noqa: BLE001 - a broken version must not stop the served rows
            self.model = None
            self.problem = (f"cannot load {cfg.model_name} version {version.version} ({cfg.alias}): "
                            f"{type(exc).__name__}: {exc}")
            self.note(self.problem)

    # -- scoring ----------------------------------------------------------------------------------------
    def score(self, records: list) -> tuple[list, int, str | None]:
        """Shadow records for ``records`` (packed): ``(shadow records, rows left unscored, problem)``."""
        from serving.inference.predlog_format import pack_arrays, rows_of

        model = self.model
        eligible = [r for r in records if not (r[3] == getattr(model, "name", None)
                                               and r[4] == getattr(model, "version", None))]
        if not eligible:
            return [], 0, None
        if model is None:
            return [], rows_of(eligible), self.problem or "no shadow model"
        try:
            groups: dict[tuple[str, ...], list] = {}
            for record in eligible:
                groups.setdefault(record[9], []).append(record)
            out = []
            for names, group in groups.items():
                counts = [len(r[8]) for r in group]
                x = np.frombuffer(b"".join(r[10] for r in group), dtype=np.float64).reshape(sum(counts), len(names))
                xs, predictions, probabilities, per_row_ms = score_vectors(model, names, x)
                ends = np.cumsum(counts)
                starts = ends - np.asarray(counts)
                for record, a, b in zip(group, starts, ends):
                    out.append(pack_arrays(
                        (record[0], record[1], per_row_ms, model.name, model.version, model.alias, SHADOW_VARIANT,
                         record[7], record[8], model.features),
                        xs[a:b], predictions[a:b], None if probabilities is None else probabilities[a:b],
                        record[13]))
            return out, 0, None
        except Exception as exc:  # noqa: BLE001 - counted as missing shadow rows, never a lost served row
            problem = f"scoring with {model.name} version {model.version} failed: {type(exc).__name__}: {exc}"
            self.note(problem)
            return [], rows_of(eligible), problem


def score_vectors(model: Any, names: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
    """Score the served vectors ``x`` (float64, one column per name in ``names``) with ``model``:
    ``(its inputs, predictions, probabilities or None, scoring time per row in ms)``. Each of the
    model's features is taken by name (one it does not find is NaN, which the model imputes); the
    served values are float32 widened to float64, so narrowing them back is exact."""
    position = {n: i for i, n in enumerate(names)}
    columns = [position.get(f, -1) for f in model.features]
    xs = np.full((x.shape[0], len(columns)), np.nan, dtype=np.float32)
    for j, i in enumerate(columns):
        if i >= 0:
            xs[:, j] = x[:, i]
    started = time.perf_counter()
    predictions, probabilities = model.predict(xs)
    per_row_ms = (time.perf_counter() - started) * 1000.0 / max(len(xs), 1)
    return xs, np.asarray(predictions), None if probabilities is None else np.asarray(probabilities), per_row_ms
