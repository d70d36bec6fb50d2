"""The loaded things the inference app serves: a tabular model version, an LLM chain, and the
online vectors of a snapshot in a model's feature order.

``load_model`` loads a registry version *by number* through ``load_wrapper`` (so a moving alias
cannot change what is loaded halfway) and reads its lineage tags (features, feature view
versions). ``LoadedModel.predict`` scores through the fastest path that provably matches the
model: the compiled numpy forward pass (``fastpath.py``), else the wrapper's ``predict_array``,
else its generic ``predict``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlops_assets.models import tags as T
from mlops_assets.models.wrapper import load_wrapper
from serving.inference.fastpath import compile_numpy
from serving.inference.payload import online_vector


@dataclass(frozen=True)
class LoadedModel:
    """A tabular model version ready to score ``(n, len(features))`` float32 matrices."""

    name: str
    version: str
    alias: str
    variant: str
    wrapper: Any
    features: tuple[str, ...]
    feature_views: dict[str, str]
    task_type: str
    run_id: str | None
    loaded_at: float = field(default_factory=time.time)

    @property
    def index(self) -> dict[str, int]:
        return self._index  # type: ignore[attr-defined]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(self.features)})
        predictor = getattr(self.wrapper, "predictor", None)
        fast = predictor if predictor is not None and hasattr(predictor, "predict_array") else None
        forward = None if fast is None else (compile_numpy(fast) or fast.predict_array)
        object.__setattr__(self, "_fast", fast)
        object.__setattr__(self, "_forward", forward)

    @property
    def fast_path(self) -> str:
        """Which path scores: ``numpy`` (compiled, checked), ``predict_array`` or ``predict``."""
        forward = self._forward  # type: ignore[attr-defined]
        if forward is None:
            return "predict"
        return "predict_array" if getattr(forward, "__name__", "") == "predict_array" else "numpy"

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(predictions, probabilities or None) through the fastest path that matches the model."""
        forward = self._forward  # type: ignore[attr-defined]
        if forward is not None:
            out = forward(x)
            labels = self._fast.classes_from_output(out)  # type: ignore[attr-defined]
            return labels, (None if self.task_type == "regression" else out)
        result = self.wrapper.predict(x)
        return np.asarray(result.predictions), result.probabilities

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": self.alias, "variant": self.variant,
                "run_id": self.run_id, "task_type": self.task_type, "features": list(self.features),
                "feature_views": self.feature_views, "loaded_at": self.loaded_at, "fast_path": self.fast_path}


@dataclass(frozen=True)
class LoadedLLM:
    name: str
    version: str
    alias: str
    wrapper: Any

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": self.alias}


class OnlineVectors:
    """One snapshot's values in one model's feature order, cached per entity (event-loop thread only)."""

    def __init__(self, store: Any, features: tuple[str, ...]) -> None:
        self.store = store
        self.features = features
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, entity: str) -> np.ndarray | None:
        vector = self._cache.get(entity)
        if vector is None:
            row = self.store.lookup(entity)
            if row is None:
                return None
            vector = self._cache[entity] = online_vector(row, self.features)
        return vector


def load_model(client: Any, name: str, version: Any, alias: str, variant: str) -> LoadedModel:
    """Load registry ``version`` (a ``ModelVersion``) through ``load_wrapper``, by number, not alias."""
    tags = dict(version.tags or {})
    wrapper = load_wrapper(f"models:/{name}/{version.version}", client)
    features = tuple(getattr(wrapper, "features", None) or json.loads(tags.get(T.TAG_FEATURES) or "[]"))
    if not features:
        raise ValueError(f"{name} version {version.version} names no features (no signature and no "
                         f"'{T.TAG_FEATURES}' tag); it cannot be served by /predict")
    if getattr(wrapper, "features", None) is None:
        wrapper.features = list(features)
    spec = getattr(getattr(wrapper, "predictor", None), "spec", None)
    task_type = getattr(spec, "task_type", None) or tags.get(T.TAG_TASK_TYPE) or "binary"
    views = json.loads(tags.get(T.TAG_FEATURE_VIEWS) or "{}")
    return LoadedModel(name=name, version=str(version.version), alias=alias, variant=variant, wrapper=wrapper,
                       features=features, feature_views={str(k): str(v) for k, v in views.items()},
                       task_type=task_type, run_id=version.run_id)
