"""What one request is served with, and which loaded model takes it.

``ServingState`` is one immutable object (model, optional challenger and canary, online snapshot and
the vectors of each model, optional LLM chain, and the reasons it is not ready). A request reads
``Runtime.state`` (``runtime.py``) once and uses only that object, so a swap is a single reference
assignment: requests in flight finish on the old model and snapshot, new ones see the new pair, and
none fails.

The rules the poller and the request path apply to it, all pure functions:

* :func:`compatibility`: why a snapshot cannot feed a model (the feature view versions the model was
  trained on, tag ``lineage.feature_views``, must equal those in the snapshot, and the snapshot must
  have every model feature);
* :func:`plan`: the newest compatible (model, snapshot) pair, from the one served and the ones just
  loaded;
* :func:`choose`: the variant a request goes to (canary, challenger or the champion), from one
  uniform draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serving.inference.loaded import LoadedLLM, LoadedModel, OnlineVectors

STARTING = "starting: the first registry and snapshot poll has not finished yet"


@dataclass(frozen=True)
class ServingState:
    """Everything one request needs, swapped as a whole."""

    model: LoadedModel | None = None
    challenger: LoadedModel | None = None
    snapshot: Any = None
    online: OnlineVectors | None = None
    challenger_online: OnlineVectors | None = None
    canary: LoadedModel | None = None
    canary_online: OnlineVectors | None = None
    canary_share: float = 0.0
    llm: LoadedLLM | None = None
    problems: tuple[str, ...] = (STARTING,)
    llm_problems: tuple[str, ...] = ()  # why /invoke cannot answer (what setting or command is missing)
    warnings: tuple[str, ...] = ()
    polled_at: float | None = None

    @property
    def ready(self) -> bool:
        return self.model is not None and self.snapshot is not None and not self.problems

    def __post_init__(self) -> None:  # read on every request: resolve once
        version = None if self.snapshot is None else str(self.snapshot.version)
        object.__setattr__(self, "_snapshot_version", version)

    @property
    def snapshot_version(self) -> str | None:
        return self._snapshot_version  # type: ignore[attr-defined]

    def describe(self) -> dict[str, Any]:
        snap = None
        if self.snapshot is not None:
            snap = {"version": self.snapshot_version,
                    "feature_view_versions": dict(self.snapshot.feature_view_versions or {})}
        return {
            "ready": self.ready,
            "model": self.model.describe() if self.model else None,
            "challenger": self.challenger.describe() if self.challenger else None,
            "canary": {**self.canary.describe(), "share": self.canary_share} if self.canary else None,
            "snapshot": snap,
            "llm": self.llm.describe() if self.llm else None,
            "llm_problems": list(self.llm_problems),
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "polled_at": self.polled_at,
        }


# --- compatibility and the choice ---------------------------------------------------------------


def compatibility(model: LoadedModel, snapshot: Any) -> list[str]:
    """Why ``snapshot`` cannot feed ``model`` (empty when it can)."""
    reasons: list[str] = []
    versions = dict(snapshot.feature_view_versions or {})
    where = f"snapshot {snapshot.version}"
    for view, wanted in sorted(model.feature_views.items()):
        got = versions.get(view)
        if got is None:
            reasons.append(f"feature view {view!r} is not in {where} (model version {model.version} "
                           f"was trained on {view} {wanted})")
        elif str(got) != str(wanted):
            reasons.append(f"feature view {view!r} is {got} in {where} but model version {model.version} "
                           f"was trained on {wanted}")
    names = set(snapshot.feature_names or ())
    missing = [f for f in model.features if f not in names]
    if missing:
        reasons.append(f"{where} lacks model feature(s) {missing}")
    return reasons


def plan(current: LoadedModel | None, pending: LoadedModel | None, live: Any, newest: Any
         ) -> tuple[LoadedModel | None, Any, list[str], list[str]]:
    """Pick (model, snapshot, problems, warnings): the newest compatible pair.

    Preference: (pending, newest), (pending, live), (current, newest), (current, live). Each
    better pair that was refused is reported as a warning; when no pair fits, the newest model
    is kept with no snapshot and the reasons become problems (not ready).
    """
    models = [m for m in (pending, current) if m is not None]
    snaps = [s for i, s in enumerate((newest, live)) if s is not None and (i == 0 or s is not newest)]
    if not models:
        return None, (newest or live), ["no model loaded"], []
    if not snaps:
        return models[0], None, ["no online feature snapshot has been written yet"], []
    refused: list[str] = []
    for model in models:
        for snap in snaps:
            reasons = compatibility(model, snap)
            if not reasons:
                warnings = [f"refused {r}" for r in refused]
                if model is not models[0]:
                    warnings.append(f"model version {models[0].version} waits for a matching snapshot; "
                                    f"version {model.version} keeps serving")
                return model, snap, [], warnings
            refused.append(f"snapshot {snap.version} for model version {model.version}: "
                           + "; ".join(reasons))
    return models[0], None, [f"refused {r}" for r in refused], []


def choose(state: ServingState, draw: float, challenger_share: float
           ) -> tuple[LoadedModel, OnlineVectors | None, str]:
    """(model, online vectors, variant) for a request, from one uniform ``draw`` in [0, 1): the canary
    takes ``[0, canary_share)``, the challenger the next ``challenger_share``, the champion the rest."""
    if state.canary is not None and draw < state.canary_share:
        return state.canary, state.canary_online, "canary"
    if state.challenger is not None and state.canary_share <= draw < state.canary_share + challenger_share:
        return state.challenger, state.challenger_online, "challenger"
    return state.model, state.online, "production"  # type: ignore[return-value]
