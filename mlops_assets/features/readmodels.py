"""Read-models: small Parquet exports that processes outside Dagster read instead of DuckDB.

The management API and the serving apps never open the warehouse (DuckDB allows one process at a
time). The assets export what they need (the feature catalog, the feature statistics, a sample of
each training dataset) with :func:`export_read_model`, swapped atomically (see
:mod:`mlops_assets.features.atomic`), and readers call :func:`read_read_model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from mlops_assets.features.atomic import (
    NAME_PATTERN,
    PublicationNameError,
    PublicationNotFoundError,
    publish_frame,
    read_manifest,
    read_published,
)

ReadModelNotFoundError = PublicationNotFoundError
ReadModelNameError = PublicationNameError

CATALOG = "feature_catalog"
STATISTICS = "feature_statistics"
CORRELATIONS = "feature_correlations"


def dataset_sample_name(dataset: str) -> str:
    """Read-model name of a dataset sample, e.g. ``training_dataset_sample``."""
    return f"{dataset}_sample"


def export_read_model(
    df: pl.DataFrame, out_dir: Path | str, name: str, extra: dict[str, Any] | None = None
) -> Path:
    """Publish ``df`` as read-model ``name``; returns the path of the data file.

    ``extra`` goes into the manifest (e.g. the dataset fingerprint or the asset's run id).
    """
    return publish_frame(df, out_dir, name, extra).data_path


def read_read_model(out_dir: Path | str, name: str) -> pl.DataFrame:
    """The current frame of read-model ``name``; raises :class:`ReadModelNotFoundError`."""
    return read_published(out_dir, name)[1]


def read_model_manifest(out_dir: Path | str, name: str) -> dict[str, Any]:
    """The manifest of read-model ``name`` (version, rows, columns, created_at, extras)."""
    return read_manifest(out_dir, name)


def list_read_models(out_dir: Path | str) -> list[str]:
    """Names of the read-models published in ``out_dir``."""
    directory = Path(out_dir)
    if not directory.is_dir():
        return []
    suffix = ".manifest.json"
    names = (p.name[: -len(suffix)] for p in directory.glob(f"*{suffix}"))
    return sorted(n for n in names if NAME_PATTERN.match(n))


def sample_rows(df: pl.DataFrame, n: int = 500, seed: int = 0) -> pl.DataFrame:
    """A seeded random sample of at most ``n`` rows, in the frame's original order."""
    if df.height <= n:
        return df
    return df.with_row_index("__row").sample(n, seed=seed).sort("__row").drop("__row")
