"""Proven on live traffic: which version served when, replaying a served request, champion vs shadow.

* ``GET /api/v1/ml/lifecycle/models/{name}/as-of?t=...``: which version each alias of ``name``
  pointed to at ``t``, with the decision that moved it there, verified against the hash-chained
  audit log (``governance.history.as_of``); a break in the record is a 409 naming the problems.
* ``GET /api/v1/ml/replay/{request_id}``: rebuild the served feature vector from the retained online
  snapshot version and re-score it with the registry version that served it
  (``monitoring.replay``); 404 for a request id no closed segment holds. The management API cannot
  import the inference app (the two apps are independent), so it replays with the model's reference
  forward pass: labels exactly, probabilities within the app's fast-path bound
  (``replay.FAST_PATH_TOLERANCE``); ``bitwise`` in the answer says whether they were equal to the bit.
  ``mlops replay --exact`` and ``benchmarks/replay.py`` replay bitwise with the app's own scorer.
* ``GET /api/v1/ml/lifecycle/models/{name}/shadow``: the champion against the shadow model on the
  identical requests of the prediction log (agreement, from the log's served and ``shadow-``
  segments) and the paired test (McNemar) that ``live_performance`` measured once outcomes arrived
  (its read-model under the reports directory; null before).

All three need a key with the ``viewer`` role or above. They are included before the lifecycle router,
whose ``/models/{name}/{version}`` would otherwise take ``as-of`` and ``shadow`` for a version.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request

from mlops_assets.errors import NotFound
from serving.auth import Identity, require
from serving.management.context import ApiContext, ctx
from serving.schemas import error_responses

router = APIRouter(prefix="/api/v1/ml", tags=["live"], responses=error_responses(401, 403, 404, 422))
NAME = Path(min_length=1, max_length=300, pattern=r"^[A-Za-z0-9_.\-]+$")
REQUEST_ID = Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")


def _keyring(request: Any) -> Any:
    return request.app.state.ctx.keyring


VIEWER = require("viewer", _keyring)


def _known_model(c: ApiContext, name: str) -> None:
    try:
        c.client.get_registered_model(name)
    except Exception as exc:  # noqa: BLE001 - MLflow raises RESOURCE_DOES_NOT_EXIST as MlflowException
        raise NotFound("name", f"no registered model named {name!r} ({type(exc).__name__})",
                       "list them at /api/v1/ml/lifecycle/models") from None


@router.get("/lifecycle/models/{name}/as-of", summary="Which version each alias served at a time",
            responses=error_responses(409))
def models_as_of(name: str = NAME,
                 t: str = Query(..., min_length=1, max_length=64,
                                description="ISO-8601 time, e.g. 2025-03-01T14:30:00Z (naive: UTC)"),
                 c: ApiContext = Depends(ctx), _: Identity = VIEWER) -> dict[str, Any]:
    """Every alias of ``name`` at ``t`` (null: it pointed nowhere), with the deployment, kind, actor,
    reason and approval decision that set it; verified against the audit log (409 with the problems
    when the record does not verify)."""
    from mlops_assets.governance.history import as_of

    return {**as_of(c.store, name, t).to_dict(), "verified": True}


@router.get("/replay/{request_id}", summary="Replay a served request")
def replay_request(request: Request, request_id: str = REQUEST_ID, c: ApiContext = Depends(ctx),
                   _: Identity = VIEWER) -> dict[str, Any]:
    """Rebuild the request's feature vector from the snapshot version it used and re-score it with the
    model version that served it; ``reproduced`` and the mismatches say how it went (module docstring)."""
    from mlops_assets.monitoring.replay import Replayer

    replayer = getattr(request.app.state, "live_replayer", None)
    if replayer is None:  # one per app: it caches the snapshot and model versions it opened
        replayer = request.app.state.live_replayer = Replayer.from_settings(c.settings, c.client)
    return replayer.replay(request_id).to_dict()


@router.get("/lifecycle/models/{name}/shadow", summary="Champion against shadow on identical requests")
def model_shadow(name: str = NAME, c: ApiContext = Depends(ctx), _: Identity = VIEWER) -> dict[str, Any]:
    """Per (champion version, shadow version): the requests both scored, their agreement, and the
    paired test on labelled outcomes as ``live_performance`` last measured it."""
    from mlops_assets.monitoring.shadow import read_shadow_report, shadow_from_log

    _known_model(c, name)
    live = shadow_from_log(c.settings.serving_log_dir, name)
    measured = read_shadow_report(c.settings.reports_dir, name)
    return {"model_name": name, "shadow_alias": c.settings.serving.shadow_alias or None,
            "live": [x.to_dict() for x in live],
            "measured": measured,
            "note": None if live else "no request of this model has a shadow prediction in the log yet"}
