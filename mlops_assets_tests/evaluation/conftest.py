"""Small synthetic test splits following the harness's data contract."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

FEATURES = ["f_strong", "f_medium", "f_weak"]
WEIGHTS = np.array([2.0, 1.0, 0.0])


def make_split(task_type: str, n_dates: int = 80, symbols: tuple[str, ...] = ("AAA", "BBB", "CCC"),
               seed: int = 0, start: dt.date = dt.date(2023, 1, 2)) -> pl.DataFrame:
    """symbol, date, features, ret_5d, regime, label, fwd_return; the label depends on
    f_strong (weight 2) and f_medium (weight 1), not on f_weak."""
    rng = np.random.default_rng(seed)
    n = n_dates * len(symbols)
    X = rng.normal(size=(n, len(FEATURES)))
    latent = X @ WEIGHTS + rng.normal(scale=0.5, size=n)
    fwd = 0.01 * np.tanh(latent) + rng.normal(scale=0.005, size=n)
    if task_type == "binary":
        label = pl.Series("label", (latent > 0).astype(np.int32), dtype=pl.Int32)
    elif task_type == "multiclass":
        label = pl.Series("label", np.digitize(latent, [-1.0, 1.0]).astype(np.int32), dtype=pl.Int32)
    else:
        label = pl.Series("label", fwd, dtype=pl.Float64)
    dates = [start + dt.timedelta(days=i) for i in range(n_dates)]
    return pl.DataFrame({
        "symbol": [s for s in symbols for _ in range(n_dates)],
        "date": dates * len(symbols),
        **{f: X[:, j] for j, f in enumerate(FEATURES)},
        "ret_5d": latent * 0.01 + rng.normal(scale=0.02, size=n),
        "regime": np.where(np.arange(n) % 2 == 0, "calm", "volatile"),
        "fwd_return": fwd,
    }).with_columns(label)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def predictor(task_type: str, weights: np.ndarray = WEIGHTS):
    """A fixed 'model' on the FEATURES matrix for the task type."""
    def binary(X: np.ndarray) -> np.ndarray:
        return _sigmoid(X @ weights)

    def multiclass(X: np.ndarray) -> np.ndarray:
        z = X @ weights
        logits = np.stack([-z, np.zeros_like(z), z], axis=1)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def regression(X: np.ndarray) -> np.ndarray:
        return 0.004 * (X @ weights)

    return {"binary": binary, "multiclass": multiclass, "regression": regression}[task_type]


@pytest.fixture
def features() -> list[str]:
    return list(FEATURES)
