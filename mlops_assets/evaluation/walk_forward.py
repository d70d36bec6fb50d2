"""Walk-forward evaluation: an expanding window of purged, embargoed folds over the dataset's dates.

Dates are addressed by their position ``i`` in the sorted distinct dates. The label of a row at
date ``i`` is the forward return over ``(i, i + horizon]``, so it *uses* prices up to date
``i + horizon``. A test fold covering dates ``[a, b]`` uses prices over ``[a, b + horizon]``.
A training (or validation) row at ``i`` **leaks** into that fold when

* its label window overlaps the test fold's: ``i + horizon >= a`` and ``i <= b + horizon``
  (purging, Lopez de Prado, *Advances in Financial Machine Learning*, ch. 7), or
* it lies within the embargo after the fold: ``b + horizon < i <= b + horizon + embargo``.

:func:`walk_forward_folds` produces a layout that never leaks; :func:`check_fold_layout` proves
it (and catches a hand-made layout that does) by raising :class:`LeakingFoldLayout`. Inside each
fold the last ``validation_fraction`` of the training dates is the early-stopping validation set,
purged from the training rows the same way.

:func:`walk_forward_predictions` trains one model per fold (``train_fn``, e.g. the Lightning
wrapper with the version's own hyper-parameters) and returns the pooled out-of-sample scores.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from mlops_assets.errors import InvalidInput

PredictFn = Callable[[np.ndarray], np.ndarray]
TrainFn = Callable[[pl.DataFrame, int], PredictFn]  # (frame with split column, fold number) -> predict


class LeakingFoldLayout(InvalidInput):
    """A fold layout lets a training row see its test fold (label overlap or inside the embargo)."""


@dataclass(frozen=True)
class Fold:
    """Date positions (into the sorted distinct dates) of one fold."""

    number: int
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    @property
    def test_span(self) -> tuple[int, int]:
        return int(self.test.min()), int(self.test.max())


def walk_forward_folds(n_dates: int, n_folds: int, horizon: int, *, embargo: int = 5,
                       initial_train_fraction: float = 0.5, validation_fraction: float = 0.15) -> list[Fold]:
    """Expanding-window folds: the dates after the first ``initial_train_fraction`` are cut into
    ``n_folds`` consecutive test blocks; fold k trains on every date before its block, less the
    purge (``horizon`` dates) and the embargo after each *earlier* test block is not needed (the
    window only looks back), but the layout is checked against both."""
    if n_folds < 1:
        raise InvalidInput("n_folds", f"must be >= 1, got {n_folds}")
    if horizon < 1 or embargo < 0:
        raise InvalidInput("horizon", "horizon must be >= 1 and embargo >= 0")
    if not 0 < initial_train_fraction < 1 or not 0 < validation_fraction < 0.5:
        raise InvalidInput("initial_train_fraction", "must be in (0, 1); validation_fraction in (0, 0.5)")
    first_test = math.floor(n_dates * initial_train_fraction)
    blocks = np.array_split(np.arange(first_test, n_dates), n_folds)
    folds = []
    for k, test in enumerate(blocks):
        a = int(test[0]) if test.size else n_dates
        usable = np.arange(0, max(0, a - horizon))  # purge: i + horizon < a
        n_val = max(1, round(usable.size * validation_fraction))
        val = usable[-n_val:]
        train = usable[: max(0, usable.size - n_val - horizon)]  # purge train vs validation too
        if test.size < 2 or train.size < 2 or val.size < 1:
            raise InvalidInput("n_folds", f"{n_dates} dates are too few for {n_folds} folds with horizon "
                               f"{horizon}; use fewer folds or more history")
        folds.append(Fold(k, train, val, test))
    check_fold_layout(folds, horizon, embargo, n_dates)
    return folds


def check_fold_layout(folds: Sequence[Fold], horizon: int, embargo: int, n_dates: int | None = None) -> None:
    """Raise :class:`LeakingFoldLayout` naming the first fold and date position that leaks (a
    training or validation row whose label window overlaps the test fold, or one inside the
    embargo after it), or when a fold's parts overlap one another."""
    for fold in folds:
        if fold.test.size == 0:
            raise LeakingFoldLayout(f"folds[{fold.number}].test", "is empty")
        if n_dates is not None and max(int(fold.test.max()), *(int(p.max()) for p in (fold.train, fold.validation)
                                                               if p.size)) >= n_dates:
            raise LeakingFoldLayout(f"folds[{fold.number}]", f"addresses a date beyond the {n_dates} dates")
        a, b = fold.test_span
        for part, rows in (("train", fold.train), ("validation", fold.validation)):
            if rows.size == 0:
                continue
            overlap = rows[(rows + horizon >= a) & (rows <= b + horizon)]
            if overlap.size:
                raise LeakingFoldLayout(
                    f"folds[{fold.number}].{part}",
                    f"date position {int(overlap[0])} has a label window (horizon {horizon}) that overlaps "
                    f"the test fold [{a}, {b}]", "purge it")
            embargoed = rows[(rows > b + horizon) & (rows <= b + horizon + embargo)]
            if embargoed.size:
                raise LeakingFoldLayout(
                    f"folds[{fold.number}].{part}",
                    f"date position {int(embargoed[0])} is inside the {embargo}-date embargo after the test "
                    f"fold [{a}, {b}]", "drop it")
        if fold.validation.size and fold.train.size:
            va, vb = int(fold.validation.min()), int(fold.validation.max())
            inner = fold.train[(fold.train + horizon >= va) & (fold.train <= vb + horizon)]
            if inner.size:
                raise LeakingFoldLayout(
                    f"folds[{fold.number}].train",
                    f"date position {int(inner[0])} overlaps the validation window [{va}, {vb}]", "purge it")


def fold_frame(dataset: pl.DataFrame, dates: Sequence, fold: Fold) -> pl.DataFrame:
    """The dataset's rows of one fold, with ``split`` set to train / validation / test."""
    dates = list(dates)
    lookup = pl.DataFrame({
        "date": [dates[i] for p in (fold.train, fold.validation, fold.test) for i in p],
        "_split": ["train"] * fold.train.size + ["validation"] * fold.validation.size + ["test"] * fold.test.size,
    }).cast({"date": dataset.schema["date"]})
    body = dataset.drop("split") if "split" in dataset.columns else dataset
    return body.join(lookup, on="date", how="inner").rename({"_split": "split"})


@dataclass
class WalkForwardResult:
    folds: list[Fold]
    predictions: pl.DataFrame          # symbol, date, fold, score, label, fwd_return (+ other columns kept)
    fold_seconds: list[float]
    dates: list

    def fold_table(self) -> pl.DataFrame:
        rows = []
        for f, secs in zip(self.folds, self.fold_seconds):
            rows.append({
                "fold": f.number, "train_start": self.dates[int(f.train.min())],
                "train_end": self.dates[int(f.train.max())],
                "validation_end": self.dates[int(f.validation.max())],
                "test_start": self.dates[f.test_span[0]], "test_end": self.dates[f.test_span[1]],
                "n_train_dates": int(f.train.size), "n_test_dates": int(f.test.size),
                "train_seconds": round(secs, 2),
            })
        return pl.DataFrame(rows)


def walk_forward_predictions(dataset: pl.DataFrame, features: Sequence[str], train_fn: TrainFn, *, n_folds: int,
                             horizon: int, embargo: int = 5, initial_train_fraction: float = 0.5,
                             validation_fraction: float = 0.15, label_col: str = "label") -> WalkForwardResult:
    """Train one model per fold with ``train_fn`` and score its test fold; pooled predictions.

    Rows whose label is not realised are dropped first. Scores are ``(n,)`` (binary P(up) /
    regression) or ``(n, k)`` (multiclass; stored as a list column)."""
    for column in ("symbol", "date", label_col, *features):
        if column not in dataset.columns:
            raise InvalidInput("dataset", f"missing column {column!r}")
    data = dataset.filter(pl.col(label_col).is_not_null())
    if data.schema[label_col].is_float():
        data = data.filter(pl.col(label_col).is_not_nan())
    dates = data.get_column("date").unique().sort().to_list()
    folds = walk_forward_folds(len(dates), n_folds, horizon, embargo=embargo,
                               initial_train_fraction=initial_train_fraction,
                               validation_fraction=validation_fraction)
    parts, seconds = [], []
    for fold in folds:
        frame = fold_frame(data, dates, fold)
        started = time.perf_counter()
        predict = train_fn(frame, fold.number)
        test = frame.filter(pl.col("split") == "test").sort("date", "symbol")
        x = test.select([pl.col(f).cast(pl.Float64) for f in features]).to_numpy()
        score = np.asarray(predict(x))
        seconds.append(time.perf_counter() - started)
        column = pl.Series("score", score.tolist() if score.ndim == 2 else score.astype(np.float64))
        parts.append(test.with_columns(column, pl.lit(fold.number).alias("fold")))
    return WalkForwardResult(folds, pl.concat(parts, how="diagonal_relaxed"), seconds, dates)
