"""JSON helpers shared by the harness's reports.

Reports go to MLflow artifacts, Dagster metadata and the management API, so they must be strict
JSON: non-finite floats become ``null``, dates ISO strings, numpy scalars plain numbers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np


def json_safe(obj: object) -> object:
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dt.date | dt.datetime):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps(obj: object, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj`` (see :func:`json_safe`)."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def fmt(value: object, digits: int = 4) -> str:
    """A number for a markdown table: ``n/a`` for missing or non-finite values."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float | np.number):
        v = float(value)
        if not math.isfinite(v):
            return "n/a"
        return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    return str(value)
