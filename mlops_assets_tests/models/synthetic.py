"""A small training dataset with a planted signal, in the platform's training-dataset contract."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl


def make_dataset(n_rows: int = 3000, n_features: int = 6, seed: int = 0) -> tuple[pl.DataFrame, list[str]]:
    """``symbol, date, f0..fN, regime, label, fwd_return, split`` with P(up) driven by f0, f1, f2*f3.

    Splits are by date (first 70 % train, next 15 % validation, last 15 % test), as in production.
    """
    if n_features < 4:
        raise ValueError(f"n_features: the planted signal uses f0..f3, got {n_features}")
    rng = np.random.default_rng(seed)
    features = [f"f{i}" for i in range(n_features)]
    x = rng.normal(size=(n_rows, n_features))
    logit = 1.6 * x[:, 0] - 1.2 * x[:, 1] + 0.8 * x[:, 2] * x[:, 3]
    label = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(np.int32)
    symbols = np.array(["AAA", "BBB", "CCC", "DDD"])
    n_symbols = len(symbols)
    day = np.arange(n_rows) // n_symbols
    dates = [dt.date(2020, 1, 1) + dt.timedelta(days=int(d)) for d in day]
    frac = day / max(day.max(), 1)
    split = np.where(frac < 0.70, "train", np.where(frac < 0.85, "validation", "test"))
    frame = pl.DataFrame(
        {
            "symbol": symbols[np.arange(n_rows) % n_symbols],
            "date": pl.Series(dates, dtype=pl.Date),
            **{name: x[:, i] for i, name in enumerate(features)},
            "regime": rng.choice(["bull", "bear"], size=n_rows),
            "label": pl.Series(label, dtype=pl.Int32),
            "fwd_return": 0.01 * logit + rng.normal(scale=0.01, size=n_rows),
            "split": split,
        }
    )
    return frame, features
