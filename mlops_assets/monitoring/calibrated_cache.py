"""The calibrated drift profiles on disk: one ``<cache_dir>/<key>.npz`` per profile, written to a temporary
file and renamed, keyed by :func:`~mlops_assets.monitoring.calibrated_profile.profile_key` (a fingerprint of
the reference data, the window length and the parameters); a file of another
:data:`~mlops_assets.monitoring.calibrated_profile.PROFILE_FORMAT` is ignored and rebuilt."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from mlops_assets.monitoring.calibrated_profile import (
    PROFILE_FORMAT,
    CalibratedProfile,
    CalibrationParams,
    FeatureNull,
    as_polars,
    build_profile,
    fingerprint,
    profile_key,
)
from mlops_assets.monitoring.columns import ColumnType, Frame


def save_profile(profile: CalibratedProfile, cache_dir: Path) -> Path:
    """Write ``<cache_dir>/<key>.npz`` atomically (a temporary file in the same folder, then a rename)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta = {"format": PROFILE_FORMAT, "key": profile.key, "fingerprint": profile.fingerprint,
            "window_days": profile.window_days, "block_days": profile.block_days,
            "params": profile.params.to_dict(), "n_reference_rows": profile.n_reference_rows,
            "n_reference_dates": profile.n_reference_dates, "build_seconds": profile.build_seconds,
            "features": [{"column": f.column, "column_type": f.column_type, "categories": list(f.categories),
                          "scale": f.scale, "n_reference": f.n_reference} for f in profile.features.values()]}
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
    for i, f in enumerate(profile.features.values()):
        arrays[f"edges_{i}"], arrays[f"centres_{i}"] = f.edges, f.centres
        arrays[f"ref_probs_{i}"], arrays[f"null_{i}"] = f.ref_probs, f.null
    target = cache_dir / f"{profile.key}.npz"
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{profile.key}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_profile(path: Path) -> CalibratedProfile | None:
    """The profile stored at ``path``, or None when it is missing, unreadable or of another format."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != PROFILE_FORMAT:
                return None
            features = {}
            for i, f in enumerate(meta["features"]):
                features[f["column"]] = FeatureNull(
                    f["column"], f["column_type"], data[f"edges_{i}"], data[f"centres_{i}"],
                    tuple(f["categories"]), data[f"ref_probs_{i}"], float(f["scale"]), data[f"null_{i}"],
                    int(f["n_reference"]))
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None
    return CalibratedProfile(key=meta["key"], fingerprint=meta["fingerprint"], window_days=meta["window_days"],
                             block_days=meta["block_days"], params=CalibrationParams(**meta["params"]),
                             features=features, n_reference_rows=meta["n_reference_rows"],
                             n_reference_dates=meta["n_reference_dates"], build_seconds=meta["build_seconds"],
                             from_cache=True)


def cached_profile(reference: Frame, window_days: int, types: dict[str, ColumnType], *,
                   params: CalibrationParams, cache_dir: Path | None, time_column: str | None = "date"
                   ) -> CalibratedProfile:
    """The profile for this reference, window length and parameters: from ``cache_dir`` when it is there,
    else built (and stored there). ``cache_dir=None`` always builds."""
    ref = as_polars(reference, "reference")
    fp = fingerprint(ref, list(types), time_column)
    key = profile_key(fp, window_days, params, types)
    if cache_dir is not None:
        found = load_profile(Path(cache_dir) / f"{key}.npz")
        if found is not None and found.key == key:
            return found
    profile = build_profile(ref, window_days, params=params, time_column=time_column, types=types,
                            fingerprint_=fp)
    if cache_dir is not None:
        save_profile(profile, Path(cache_dir))
    return profile

