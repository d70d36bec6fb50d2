"""Replay a served request: rebuild its feature vector and prediction and check they match the log.

``replay(request_id, settings)`` (and ``mlops replay REQUEST_ID``):

1. finds every row of the request in the prediction log's closed segments
   (:mod:`mlops_assets.monitoring.served`): entity, the feature names and the exact values fed to
   the model, model name and version, online snapshot version, prediction and probability;
2. opens that snapshot version as it was published (:meth:`OnlineFeatureStore.at_version`, within
   the retention policy; outside it: ``NotFound`` naming the policy) and rebuilds each row's vector
   the way the inference app does (the entity's online values in the model's feature order, as
   float32; a missing value is NaN, which the model imputes), then compares it with the logged
   vector **bitwise** (NaN equals NaN);
3. loads that model version from the registry by number (``load_wrapper``), scores the rebuilt
   rows as one batch, the shape the app scored, and compares: the predicted label exactly, the
   probability bitwise, or, by default, within :data:`FAST_PATH_TOLERANCE`.

Why a tolerance for the probability by default: the inference app scores the MLP through a compiled
numpy forward pass (``serving/inference/fastpath.py``) that it admits only when it agrees with the
model's own ``predict_array`` within ``atol=1e-5, rtol=1e-4``; torch and numpy sum float32 products
in different orders, so the last bits can differ. That bound is the app's contract, so it is the
replay's. ``exact=True`` demands bitwise equality, and a ``scorer`` that scores like the app (the
management API can pass one built on the app's own loader) makes the replay bitwise; the result
says whether it was (``bitwise``).

Values the request supplied: a row without an entity took every feature from the request, so the
logged values *are* its input (the model check still applies). An instance with an entity and
request ``features`` overrides some values; the log marks them when the segment has the
``request_features`` column (:data:`OVERRIDES_COLUMN`, the names the request supplied for that row):
those values are taken from the log. Without the column a logged value that differs from the
snapshot is reported as a mismatch, since an override and a tampered value cannot be told apart.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from mlops_assets.errors import Conflict, InvalidInput, NotFound
from mlops_assets.features.atomic import Retention
from mlops_assets.features.online import OnlineFeatureStore, online_retention
from mlops_assets.monitoring.served import NAMES_COLUMN, VALUES_COLUMN, list_closed_segments

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlops_assets.settings import Settings

OVERRIDES_COLUMN = "request_features"  # optional List(String): feature names the request supplied
FAST_PATH_TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}  # serving's numpy fast path admission bound
Scorer = Callable[[Any, np.ndarray], tuple[np.ndarray, "np.ndarray | None"]]


@dataclass(frozen=True)
class Mismatch:
    """One value the replay did not reproduce: ``field`` is a feature name, ``prediction``,
    ``probability`` or ``features`` (the model's feature list)."""

    row: int
    entity: str | None
    field: str
    logged: Any
    replayed: Any
    reason: str


@dataclass(frozen=True)
class ReplayResult:
    request_id: str
    model_name: str
    model_version: str
    snapshot_version: str | None
    feature_view_versions: dict[str, str]
    rows: int
    request_supplied_rows: list[int]      # rows without an entity: every value came from the request
    overridden: dict[int, list[str]]      # row -> feature names the log marks as request-supplied
    mismatches: list[Mismatch]
    bitwise: bool                         # features, labels and probabilities all bitwise equal
    max_probability_diff: float
    tolerance: dict[str, float] | None    # None: probabilities had to be bitwise equal
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def reproduced(self) -> bool:
        return not self.mismatches

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reproduced": self.reproduced}

    def describe(self) -> str:
        head = (f"request {self.request_id}: {self.rows} row(s), model {self.model_name} v{self.model_version}, "
                f"snapshot {self.snapshot_version or '-'} {self.feature_view_versions or ''}".rstrip())
        if self.reproduced:
            how = "bitwise" if self.bitwise else (
                f"labels exactly, probabilities within {self.tolerance} (max diff {self.max_probability_diff:.3g})")
            lines = [head, f"REPRODUCED ({how})"]
        else:
            lines = [head, f"MISMATCH: {len(self.mismatches)} value(s) not reproduced"]
            lines += [f"  row {m.row} ({m.entity or 'no entity'}) {m.field}: logged {m.logged!r}, "
                      f"replayed {m.replayed!r}: {m.reason}" for m in self.mismatches]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def reference_scorer(wrapper: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Score through the wrapper's own ``predict`` (the model's reference forward pass)."""
    result = wrapper.predict(x)
    return np.asarray(result.predictions), result.probabilities


def logged_probability(probabilities: np.ndarray | None, n: int) -> np.ndarray:
    """What the log stores of ``probabilities``: P(class 1) for binary, the top class's probability
    for multiclass, NaN for none (the prediction-log format's rule)."""
    if probabilities is None:
        return np.full(n, np.nan)
    p = np.asarray(probabilities, dtype=np.float64)
    return p.max(axis=1) if p.ndim == 2 else p.reshape(-1)


def _same_bits(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _plain(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


class Replayer:
    """Replays requests against one log, one snapshot directory and one registry, caching the
    snapshot versions and model versions it opened (the benchmark replays thousands)."""

    def __init__(self, log_dir: Path | str, online_dir: Path | str, client: MlflowClient | None,
                 retention: Retention, *, scorer: Scorer | None = None, exact: bool = False) -> None:
        self.log_dir, self.online_dir = Path(log_dir), Path(online_dir)
        self.client, self.retention = client, retention
        self.scorer = scorer or reference_scorer
        self.exact = exact
        self._models: dict[tuple[str, str], Any] = {}
        self._snapshots: dict[str, OnlineFeatureStore] = {}

    @classmethod
    def from_settings(cls, settings: Settings, client: MlflowClient | None = None, **kwargs: Any) -> Replayer:
        if client is None:
            from mlops_assets.stores import mlflow_client

            client = mlflow_client(settings)
        retention = online_retention(settings.features.online_retention_versions,
                                     settings.features.online_retention_days)
        return cls(settings.serving_log_dir, settings.online_dir, client, retention, **kwargs)

    # -- the pieces -----------------------------------------------------------------------------------
    def logged_rows(self, request_id: str) -> pl.DataFrame:
        """The request's logged rows in row order; ``NotFound`` for an id no closed segment holds."""
        if not isinstance(request_id, str) or not request_id.strip():
            raise InvalidInput("request_id", "give the request id the app returned (non-empty text)")
        paths = list_closed_segments(self.log_dir)
        rows = pl.DataFrame()
        if paths:
            scans = [pl.scan_parquet(p).filter(pl.col("request_id") == request_id)
                     .with_columns(pl.lit(p.name).alias("segment")) for p in paths]
            rows = pl.concat(scans, how="diagonal_relaxed").collect().sort("row")
        if rows.height == 0:
            raise NotFound("request_id", f"{request_id!r} is in no closed segment of the prediction log "
                           f"({len(paths)} segment(s))", "a request is logged when its segment closes "
                           "(every few seconds); check the id the app returned")
        if rows["row"].n_unique() != rows.height:
            raise Conflict("request_id", f"{request_id!r} is logged more than once (segments "
                           f"{sorted(set(rows['segment']))}); replay cannot tell which request to reproduce")
        for column in ("model_name", "model_version", "snapshot_version"):
            if rows[column].n_unique() > 1:
                raise Conflict(column, f"rows of {request_id!r} disagree on {column}")
        return rows

    def snapshot(self, version: str) -> OnlineFeatureStore:
        store = self._snapshots.get(version)
        if store is None:
            store = self._snapshots[version] = OnlineFeatureStore.at_version(
                self.online_dir, version, self.retention)
        return store

    def model(self, name: str, version: str, features: list[str]) -> Any:
        key = (name, version)
        wrapper = self._models.get(key)
        if wrapper is None:
            from mlops_assets.models.wrapper import load_wrapper

            try:
                if self.client is not None:
                    self.client.get_model_version(name, version)
            except Exception as exc:  # noqa: BLE001 - MLflow raises RESOURCE_DOES_NOT_EXIST as MlflowException
                raise NotFound("model_version", f"{name} version {version} is not in the registry "
                               f"({type(exc).__name__})", "it was deleted; the request cannot be replayed") from None
            wrapper = load_wrapper(f"models:/{name}/{version}", self.client)
            if getattr(wrapper, "features", None) is None:  # as the inference app does
                wrapper.features = list(features)
            self._models[key] = wrapper
        return wrapper

    # -- the replay -----------------------------------------------------------------------------------
    def replay(self, request_id: str) -> ReplayResult:
        started = time.perf_counter()
        rows = self.logged_rows(request_id)
        first = rows.row(0, named=True)
        name, version, snapshot_version = first["model_name"], first["model_version"], first["snapshot_version"]
        features = list(first[NAMES_COLUMN] or [])
        mismatches: list[Mismatch] = []
        notes: list[str] = []
        entities = rows["entity"].to_list()
        logged_x = np.array([[np.nan if v is None else v for v in (vals or [])] for vals in rows[VALUES_COLUMN].to_list()],
                            dtype=np.float64).reshape(rows.height, len(features))
        marked = (rows[OVERRIDES_COLUMN].to_list() if OVERRIDES_COLUMN in rows.columns
                  else [None] * rows.height)
        overridden = {i: list(m) for i, m in enumerate(marked) if m}
        for i, names in enumerate(rows[NAMES_COLUMN].to_list()):
            if list(names or []) != features:
                mismatches.append(Mismatch(i, entities[i], "features", list(names or []), features,
                                           "rows of one request name different feature lists"))
        store, view_versions = None, {}
        if any(e is not None for e in entities):
            if snapshot_version is None:
                raise NotFound("snapshot_version", f"{request_id!r} looked up entities but the log names no "
                               "snapshot version")
            store = self.snapshot(snapshot_version)
            view_versions = store.feature_view_versions
        if OVERRIDES_COLUMN not in rows.columns and store is not None:
            notes.append(f"the log does not mark request-supplied values ('{OVERRIDES_COLUMN}'): a value "
                         "that differs from the snapshot counts as a mismatch")

        rebuilt = logged_x.astype(np.float32)  # rows without an entity: the request's own values
        for i, entity in enumerate(entities):
            if entity is None:
                continue
            assert store is not None
            online = store.lookup(entity)
            if online is None:
                mismatches.append(Mismatch(i, entity, "entity", entity, None,
                                           f"not in snapshot {snapshot_version}"))
                continue
            given = set(overridden.get(i, ()))
            for j, feature in enumerate(features):
                if feature in given:
                    continue
                value = online.get(feature)
                try:
                    number = math.nan if value is None else float(value)
                except (TypeError, ValueError):
                    number = math.nan
                rebuilt[i, j] = np.float32(number)  # the app's float32 input, exactly
                replayed, logged = float(rebuilt[i, j]), float(logged_x[i, j])
                if not _same_bits(replayed, logged):
                    mismatches.append(Mismatch(i, entity, feature, _plain(logged), _plain(replayed),
                                               f"differs from snapshot {snapshot_version}"))

        wrapper = self.model(name, version, features)
        model_features = list(getattr(wrapper, "features", None) or features)
        if model_features != features:
            mismatches.append(Mismatch(-1, None, "features", features, model_features,
                                       f"the log's feature order is not {name} v{version}'s"))
        labels, probabilities = self.scorer(wrapper, rebuilt)
        labels = np.asarray(labels, dtype=np.float64).reshape(-1)
        replayed_p = logged_probability(probabilities, rows.height)
        logged_labels = rows["prediction"].fill_null(np.nan).to_numpy().astype(np.float64)
        logged_p = rows["probability"].fill_null(np.nan).to_numpy().astype(np.float64)
        bitwise = True
        max_diff = 0.0
        for i in range(rows.height):
            if not _same_bits(float(labels[i]), float(logged_labels[i])):
                mismatches.append(Mismatch(i, entities[i], "prediction", _plain(logged_labels[i]),
                                           _plain(labels[i]), "the model predicts another value"))
            a, b = float(replayed_p[i]), float(logged_p[i])
            if _same_bits(a, b):
                continue
            bitwise = False
            diff = abs(a - b) if not (math.isnan(a) or math.isnan(b)) else math.inf
            max_diff = max(max_diff, diff)
            tol = FAST_PATH_TOLERANCE
            if self.exact or diff > tol["atol"] + tol["rtol"] * abs(b):
                mismatches.append(Mismatch(i, entities[i], "probability", _plain(b), _plain(a),
                                           "not bitwise equal" if self.exact else f"beyond {tol}"))
        bitwise = bitwise and not mismatches
        return ReplayResult(
            request_id=request_id, model_name=name, model_version=version, snapshot_version=snapshot_version,
            feature_view_versions=view_versions, rows=rows.height,
            request_supplied_rows=[i for i, e in enumerate(entities) if e is None], overridden=overridden,
            mismatches=mismatches, bitwise=bitwise, max_probability_diff=max_diff,
            tolerance=None if self.exact else dict(FAST_PATH_TOLERANCE),
            seconds=time.perf_counter() - started, notes=notes,
        )


def replay(request_id: str, settings: Settings, client: MlflowClient | None = None, *,
           scorer: Scorer | None = None, exact: bool = False) -> ReplayResult:
    """Replay one served request (see the module docstring)."""
    return Replayer.from_settings(settings, client, scorer=scorer, exact=exact).replay(request_id)
