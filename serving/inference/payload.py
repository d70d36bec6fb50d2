"""Hand-written parsing and validation of ``/predict`` bodies (the hot path: no pydantic).

Accepted bodies (see ``docs/api.md``)::

    {"symbol": "AAA"}                                   one instance, features from the online store
    {"symbol": "AAA", "features": {"ret_1d": 0.01}}     ... with request values overriding them
    {"features": {"f0": 1.0, ...}}                      one instance, every feature in the request
    {"instances": [{...}, {...}]}                       a batch of such instances

Errors are raised as :class:`PayloadError` with the HTTP status and a FastAPI-style ``detail``
list (one item per problem, ``loc`` naming the field), so a client sees every bad field at once:
413 for a body or batch over the limits, 422 for malformed JSON, unknown keys, and missing,
extra or mistyped features, 404 for entities the online snapshot does not know.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import orjson

INSTANCES = "instances"
FEATURES = "features"
_MISSING = object()


class PayloadError(Exception):
    """A request the app refuses; ``status`` is the HTTP status, ``detail`` the JSON error body."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(slots=True)
class Instance:
    """One row to score: an optional entity key and the feature values given in the request."""

    entity: str | None
    features: dict[str, Any] = field(default_factory=dict)
    loc: tuple = ("body",)


def _err(loc: Sequence[Any], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


def _instance(obj: Any, loc: tuple, entity_key: str, errors: list[dict]) -> Instance | None:
    if not isinstance(obj, dict):
        errors.append(_err(loc, f"must be a JSON object with '{entity_key}' and/or '{FEATURES}'",
                           "object_type"))
        return None
    entity = obj.get(entity_key)
    features = obj.get(FEATURES)
    for key in obj:
        if key != entity_key and key != FEATURES:
            errors.append(_err((*loc, key), f"unknown field; allowed: '{entity_key}', '{FEATURES}'",
                               "extra_forbidden"))
    ok = True
    if entity is not None and (not isinstance(entity, str) or not entity):
        errors.append(_err((*loc, entity_key), "must be a non-empty string", "string_type"))
        ok = False
    if features is None:
        features = {}
    elif not isinstance(features, dict):
        errors.append(_err((*loc, FEATURES), "must be an object of feature name -> number", "dict_type"))
        ok = False
    return Instance(entity if ok else None, features if ok else {}, loc) if ok else None


@dataclass(slots=True)
class Payload:
    """A parsed body: the instance objects as sent (validated later, against the model's features)."""

    raw: list[Any]
    batch: bool
    errors: list[dict] = field(default_factory=list)  # top-level problems (keys next to "instances")

    def __len__(self) -> int:
        return len(self.raw)


def parse_payload(body: bytes, max_batch: int) -> Payload:
    """Parse a body and check its outer shape (JSON object, batch list and its size)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(422, [_err(("body",), f"invalid JSON: {exc}", "json_invalid")]) from None
    if not isinstance(doc, dict):
        raise PayloadError(422, [_err(("body",), "must be a JSON object (one instance, or "
                                      "{\"instances\": [...]})", "object_type")])
    if INSTANCES not in doc:
        return Payload([doc], False)
    raw = doc[INSTANCES]
    errors = [_err(("body", key), f"unknown field next to '{INSTANCES}'", "extra_forbidden")
              for key in doc if key != INSTANCES]
    if not isinstance(raw, list):
        raise PayloadError(422, [*errors, _err(("body", INSTANCES), "must be a list of instances",
                                               "list_type")])
    if len(raw) == 0:
        raise PayloadError(422, [*errors, _err(("body", INSTANCES), "must hold at least one instance",
                                               "too_short")])
    if len(raw) > max_batch:
        raise PayloadError(413, f"batch of {len(raw)} instances is over the limit of {max_batch} "
                                "(serving.max_batch); split the request")
    return Payload(raw, True, errors)


def instances_of(payload: Payload, entity_key: str) -> list[Instance]:
    """Every instance checked for its shape; a 422 names each bad field."""
    errors = list(payload.errors)
    if payload.batch:
        instances = [_instance(obj, ("body", INSTANCES, i), entity_key, errors)
                     for i, obj in enumerate(payload.raw)]
    else:
        instances = [_instance(payload.raw[0], ("body",), entity_key, errors)]
    if errors:
        raise PayloadError(422, errors)
    return instances  # type: ignore[return-value]


MAX_DEPTH = 32  # JSON nesting a feature value may have before it is refused as "too deep"


def nesting_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deep lists and objects nest in ``value`` (a number is 0), counted without recursion and
    only up to ``limit + 1`` (so a value nested 100,000 deep costs as little as one nested 33 deep)."""
    depth, level = 0, [value]
    while level and depth <= limit:
        children: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                children.extend(item.values())
            elif isinstance(item, list):
                children.extend(item)
        if not children and not any(isinstance(i, (dict, list)) for i in level):
            break
        depth += 1
        level = children
    return depth


def describe(value: Any) -> str:
    """A short, safe description of a JSON value for an error message (never a recursive repr)."""
    if isinstance(value, dict):
        return f"an object of {len(value)} keys"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, str):
        return f"a string {value[:40]!r}" + ("..." if len(value) > 40 else "")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > 64:  # str() of a huge int is slow, or refused
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    return str(value)[:40]


def _value_error(loc: Sequence[Any], value: Any) -> dict[str, Any]:
    """The 422 item of a feature value that is not a usable number; deep nesting is named as such."""
    if isinstance(value, (dict, list)):
        depth = nesting_depth(value)
        if depth > MAX_DEPTH:
            return _err(loc, f"nested more than {MAX_DEPTH} levels deep (the limit of JSON nesting); a feature "
                             "value must be a number", "too_deep")
    return _err(loc, f"must be a number within float32 range, got {describe(value)}", "float_type")


def _number(value: Any) -> float | None:
    """A JSON number that fits a float32 as float; None for anything else (bool, string, null, list...)."""
    if value.__class__ is float or value.__class__ is int:
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if abs(number) <= _FLOAT32_MAX else None
    return None


def _online_value(value: Any) -> float:
    """A value from the online snapshot: None/NaN stay missing (the model imputes them)."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def online_vector(row: Mapping[str, Any], features: Sequence[str]) -> np.ndarray:
    """The entity's online values in model feature order (missing names give NaN)."""
    return np.array([_online_value(row.get(name)) for name in features], dtype=np.float32)


_NUMBER_TYPES = frozenset({float, int})
_FLOAT32_MAX = float(np.finfo(np.float32).max)


_FEATURES_ONLY = frozenset({FEATURES})


def _complete_rows(raw: list[Any], features: Sequence[str], index: Mapping[str, int]) -> np.ndarray | None:
    """The matrix when every instance is ``{"features": {...}}`` with exactly the model's features as
    numbers (the usual batch), checked with C-level operations; None sends it to the full check."""
    keys = index.keys()
    rows = []
    for obj in raw:
        if obj.__class__ is not dict or obj.keys() != _FEATURES_ONLY:
            return None
        given = obj[FEATURES]
        if given.__class__ is not dict or given.keys() != keys:
            return None
        row = [given[name] for name in features]
        if not set(map(type, row)) <= _NUMBER_TYPES:  # bool, str, None, list... take the full check
            return None
        rows.append(row)
    try:
        x = np.array(rows, dtype=np.float64)
    except OverflowError:  # an integer beyond float range
        return None
    if not (np.abs(x) <= _FLOAT32_MAX).all():
        return None
    return x.astype(np.float32)


def build_matrix(
    payload: Payload,
    features: Sequence[str],
    index: Mapping[str, int],
    online: Callable[[str], np.ndarray | None] | None,
    entity_key: str,
    snapshot_version: str | None,
    supplied: list[tuple[str, ...] | None] | None = None,
) -> tuple[np.ndarray, list[str | None]]:
    """The ``(n, len(features))`` float32 matrix and the entity of each row, or a PayloadError
    naming every bad field.

    ``online(entity)`` returns the entity's vector in ``features`` order, or None when the
    snapshot does not know it. An instance with an entity takes its values from there and the
    request's ``features`` override them; without an entity, every feature must be in the request.
    ``supplied``, when given, receives one item per row: the feature names the request itself gave
    for that row (None: none), which the prediction log records (``request_features``).
    """
    if not payload.errors:
        fast = _complete_rows(payload.raw, features, index)
        if fast is not None:
            if supplied is not None:
                supplied.extend([tuple(features)] * len(payload.raw))
            return fast, [None] * len(payload.raw)
    instances = instances_of(payload, entity_key)
    n, k = len(instances), len(features)
    x = np.empty((n, k), dtype=np.float32)
    errors: list[dict] = []
    unknown: list[str] = []
    for i, inst in enumerate(instances):
        given = inst.features
        for name in given:
            if name not in index:
                errors.append(_err((*inst.loc, FEATURES, name), "not a feature of the served model",
                                   "extra_forbidden"))
        base, known = None, True
        if inst.entity is not None:
            if online is None:
                raise PayloadError(503, "no online feature snapshot is loaded; send every feature in "
                                        "'features'")
            base = online(inst.entity)
            if base is None:
                unknown.append(inst.entity)
                known = False
        if base is not None:
            x[i] = base
            if not given:
                continue
        for j, name in enumerate(features):
            value = given.get(name, _MISSING)
            if value is _MISSING:
                if base is None and known:
                    errors.append(_err((*inst.loc, FEATURES, name), "field required (no entity key was given "
                                       f"to look it up; send '{entity_key}' or the value)", "missing"))
                continue
            number = _number(value)
            if number is None:
                errors.append(_value_error((*inst.loc, FEATURES, name), value))
                continue
            x[i, j] = number
    if errors:
        raise PayloadError(422, errors)
    if unknown:
        where = f"online snapshot {snapshot_version}" if snapshot_version else "the online snapshot"
        names = ", ".join(repr(u) for u in dict.fromkeys(unknown))
        raise PayloadError(404, f"unknown {entity_key}: {names} not in {where}")
    if supplied is not None:
        supplied.extend(tuple(name for name in features if name in inst.features) or None
                        for inst in instances)
    return x, [inst.entity for inst in instances]
