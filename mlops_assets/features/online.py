"""The online feature snapshot: the latest feature vector per entity, for low-latency serving.

:func:`write_online_snapshot` takes the latest row of each feature view per symbol, joins them into
one row per symbol and publishes it atomically (``snapshot-<version>.parquet`` plus
``snapshot.manifest.json`` carrying the version, the feature-view versions and the columns; see
:mod:`mlops_assets.features.atomic`).

:class:`OnlineFeatureStore` is the Dagster-free reader the serving app uses: ``load()`` builds a
Python dict keyed by symbol (a lookup is a dict access, about a microsecond), ``maybe_reload()``
stats the manifest and reloads only when the version changed, and the new dict replaces the old
one in a single reference assignment, so concurrent lookups never see a half-built store.

Retention: every published version keeps its data file and its own manifest
(``snapshot-<version>.manifest.json``: version, feature-view versions, columns, published time) for
the policy in ``features.online_retention_versions`` / ``features.online_retention_days``
(:func:`online_retention`), pruned at publish time. :meth:`OnlineFeatureStore.at_version` opens a
retained version (pinned: it never reloads), which is how a served request is replayed; a pruned
or unknown version is ``NotFound`` naming the policy.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from mlops_assets.data.schema import ENTITY_KEY, TIME_KEY
from mlops_assets.features.atomic import (
    Retention,
    manifest_path,
    publish_frame,
    read_manifest,
    read_published,
    read_version,
)
from mlops_assets.features.views import FeatureView

from mlops_assets.errors import MessageInput

SNAPSHOT_NAME = "snapshot"
AS_OF = "as_of"


RETENTION_VERSIONS_KEY = "features.online_retention_versions"
RETENTION_DAYS_KEY = "features.online_retention_days"


def online_retention(versions: int = 2, days: float = 30.0) -> Retention:
    """The snapshot retention policy, labelled with the settings keys it comes from; pass
    ``settings.features.online_retention_versions`` and ``settings.features.online_retention_days``."""
    return Retention(versions=versions, days=days,
                     label=f"{RETENTION_VERSIONS_KEY}={versions}, {RETENTION_DAYS_KEY}={days:g}")


DEFAULT_RETENTION = online_retention()  # the settings' defaults


class OnlineSnapshotError(MessageInput):
    """The inputs of the snapshot do not fit together; the message names the view or column."""
    subject = "snapshot"


@dataclass(frozen=True)
class SnapshotInfo:
    version: str
    path: Path                              # the data file
    manifest_path: Path
    n_entities: int
    feature_view_versions: dict[str, str]
    feature_names: list[str]
    as_of: date | None


def latest_rows(frame: pl.DataFrame, entity: str = ENTITY_KEY) -> pl.DataFrame:
    """The row with the latest date of each entity."""
    return (
        frame.lazy()
        .filter(pl.col(TIME_KEY) == pl.col(TIME_KEY).max().over(entity))
        .unique(subset=[entity], keep="last", maintain_order=False)
        .collect()
    )


def build_snapshot(view_frames: Sequence[pl.DataFrame], views: Sequence[FeatureView]) -> pl.DataFrame:
    """One row per entity: ``symbol``, ``as_of`` (the oldest of the views' latest dates for that
    symbol), then every view's features in view order. A symbol missing from a view gets nulls."""
    if len(view_frames) != len(views) or not views:
        raise OnlineSnapshotError(
            f"view_frames: got {len(view_frames)} frame(s) for {len(views)} view(s); pass one per view"
        )
    seen: dict[str, str] = {}
    joined: pl.DataFrame | None = None
    date_columns: list[str] = []
    for i, (frame, view) in enumerate(zip(view_frames, views, strict=True)):
        missing = [c for c in (view.entity, TIME_KEY) if c not in frame.columns]
        if missing:
            raise OnlineSnapshotError(f"view {view.name!r}: frame lacks key column(s) {missing}")
        features = [c for c in frame.columns if c not in (view.entity, TIME_KEY)]
        for f in features:
            if f in seen:
                raise OnlineSnapshotError(
                    f"feature {f!r}: in both views {seen[f]!r} and {view.name!r}; rename one"
                )
            seen[f] = view.name
        date_col = f"__date_{i}"
        date_columns.append(date_col)
        latest = latest_rows(frame, view.entity).select(
            pl.col(view.entity).alias(ENTITY_KEY), pl.col(TIME_KEY).alias(date_col), *features
        )
        joined = latest if joined is None else joined.join(latest, on=ENTITY_KEY, how="full", coalesce=True)
    assert joined is not None
    feature_names = list(seen)
    return (
        joined.with_columns(pl.min_horizontal(date_columns).alias(AS_OF))
        .select(ENTITY_KEY, AS_OF, *feature_names)
        .sort(ENTITY_KEY)
    )


def write_online_snapshot(
    view_frames: Sequence[pl.DataFrame], views: Sequence[FeatureView], out_dir: Path | str,
    retention: Retention = DEFAULT_RETENTION, now: datetime | None = None,
) -> SnapshotInfo:
    """Build the snapshot and publish it atomically in ``out_dir``, pruning older versions beyond
    ``retention`` (build it with :func:`online_retention` from the settings)."""
    snapshot = build_snapshot(view_frames, views)
    versions = {v.name: v.version for v in views}
    features = [c for c in snapshot.columns if c not in (ENTITY_KEY, AS_OF)]
    as_of = snapshot[AS_OF].max() if snapshot.height else None
    published = publish_frame(
        snapshot, out_dir, SNAPSHOT_NAME,
        extra={
            "entity": ENTITY_KEY,
            "feature_view_versions": versions,
            "feature_names": features,
            "n_entities": snapshot.height,
            "as_of": as_of.isoformat() if as_of else None,
        },
        retention=retention, now=now,
    )
    return SnapshotInfo(
        version=published.version,
        path=published.data_path,
        manifest_path=published.manifest_path,
        n_entities=snapshot.height,
        feature_view_versions=versions,
        feature_names=features,
        as_of=as_of,
    )


def _plain(value: Any) -> Any:
    """JSON-friendly scalar: dates as ISO text, NaN as None."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, date):
        return value.isoformat()
    return value


@dataclass(frozen=True)
class _State:
    rows: dict[str, dict[str, Any]]
    manifest: dict[str, Any]
    signature: tuple[int, int, int]
    feature_names: list[str] = field(default_factory=list)


class OnlineFeatureStore:
    """Reads the snapshot that :func:`write_online_snapshot` publishes in ``directory``.

    Thread-safe: lookups read one immutable state object; reloads build a new one and swap the
    reference. ``lookup`` returns a fresh dict ``{"as_of": "YYYY-MM-DD", feature: value...}``.
    """

    def __init__(self, directory: Path | str, name: str = SNAPSHOT_NAME) -> None:
        self.directory = Path(directory)
        self.name = name
        self._state: _State | None = None
        self._reload_lock = threading.Lock()
        self._pinned = False

    @classmethod
    def at_version(cls, directory: Path | str, version: str, retention: Retention = DEFAULT_RETENTION,
                   name: str = SNAPSHOT_NAME) -> OnlineFeatureStore:
        """A store loaded with retained ``version`` and pinned to it (``maybe_reload`` never moves
        it). ``NotFound`` naming ``retention`` when the version was pruned or never published."""
        store = cls(directory, name)
        manifest, frame = read_version(directory, name, version, retention)
        store._state = store._state_of(manifest, frame, (0, 0, 0))
        store._pinned = True
        return store

    # -- loading -----------------------------------------------------------------------------------
    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(manifest_path(self.directory, self.name))
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _build(self, signature: tuple[int, int, int]) -> _State:
        manifest, frame = read_published(self.directory, self.name)
        return self._state_of(manifest, frame, signature)

    @staticmethod
    def _state_of(manifest: dict[str, Any], frame: pl.DataFrame, signature: tuple[int, int, int]) -> _State:
        entity = manifest.get("entity", ENTITY_KEY)
        names = [c for c in frame.columns if c != entity]
        rows = {
            record.pop(entity): {k: _plain(v) for k, v in record.items()}
            for record in frame.to_dicts()
        }
        features = list(manifest.get("feature_names") or [c for c in names if c != AS_OF])
        return _State(rows=rows, manifest=manifest, signature=signature, feature_names=features)

    def load(self) -> OnlineFeatureStore:
        """Load the current snapshot (raises ``PublicationNotFoundError`` if none exists)."""
        if self._pinned:
            return self
        with self._reload_lock:
            signature = self._signature() or (0, 0, 0)
            self._state = self._build(signature)
        return self

    def maybe_reload(self) -> bool:
        """Reload if the manifest now names another version; True when it did. Cheap when nothing
        changed (one ``stat``). A store opened with :meth:`at_version` never reloads."""
        if self._pinned:
            return False
        signature = self._signature()
        state = self._state
        if signature is None or (state is not None and signature == state.signature):
            return False
        with self._reload_lock:
            state = self._state
            if state is not None and signature == state.signature:
                return False
            if state is not None and read_manifest(self.directory, self.name)["version"] == self.version:
                self._state = _State(state.rows, state.manifest, signature, state.feature_names)
                return False
            self._state = self._build(signature)
            return True

    # -- reading -----------------------------------------------------------------------------------
    def _current(self) -> _State:
        state = self._state
        if state is None:
            raise RuntimeError("OnlineFeatureStore: call load() first")
        return state

    def lookup(self, entity: str) -> dict[str, Any] | None:
        """The latest features of ``entity`` (a fresh dict), or None if it is not in the snapshot."""
        row = self._current().rows.get(entity)
        return dict(row) if row is not None else None

    def lookup_many(self, entities: Iterable[str]) -> list[dict[str, Any] | None]:
        rows = self._current().rows
        return [dict(r) if (r := rows.get(e)) is not None else None for e in entities]

    @property
    def loaded(self) -> bool:
        return self._state is not None

    @property
    def version(self) -> str:
        return self._current().manifest["version"]

    @property
    def feature_view_versions(self) -> dict[str, str]:
        return dict(self._current().manifest.get("feature_view_versions", {}))

    @property
    def feature_names(self) -> list[str]:
        return list(self._current().feature_names)

    @property
    def entities(self) -> list[str]:
        return list(self._current().rows)

    @property
    def as_of(self) -> str | None:
        return self._current().manifest.get("as_of")

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(self._current().manifest)

    def __len__(self) -> int:
        return len(self._current().rows)
