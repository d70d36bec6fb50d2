"""Model-agnostic SHAP explanations, sized to run in seconds on a CPU.

The explainer is ``shap.KernelExplainer`` on a small background sample (``background_size``
rows drawn from the training split, 50 by default), with ``l1_reg=False`` so every feature gets
a value and ``nsamples = 2 * n_features + 500`` coalitions per row by default (every coalition,
hence exact values, up to 9 features; shap's own "auto" is ``2 * n_features + 2048``, about four
times slower). It treats the model as a black box ``predict_fn(X: ndarray) -> (n,) | (n, k)``, so it
works for the Lightning wrapper, an imported model or an LLM-backed scorer alike. (The
permutation explainer gives the same values in expectation but pays a numba JIT compilation of
several seconds on its first call in each process, which would eat the whole time budget.)

Rows are explained in batches until ``max_rows`` are done or the next batch would overrun
``max_seconds``; the result says how many rows were explained and whether it stopped early.
For a multiclass model the values have shape ``(n, features, classes)``; the global importance
averages ``|SHAP|`` over rows and classes, and per-row explanations use each row's predicted
class.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

with warnings.catch_warnings():  # shap 0.51 calls matplotlib colormap setters deprecated in 3.11
    warnings.simplefilter("ignore", PendingDeprecationWarning)
    import shap

from mlops_assets.evaluation.errors import EvaluationInputError  # noqa: E402
from mlops_assets.evaluation.plots import figure_png, shap_summary_figure  # noqa: E402
from mlops_assets.evaluation.serialize import dumps  # noqa: E402

PredictFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class Explanation:
    """SHAP values of ``rows`` (the explained sample), their global importance and a plot."""

    feature_names: list[str]
    global_importance: pl.DataFrame
    values: np.ndarray
    base_value: float | list[float]
    rows: np.ndarray
    per_row: list[dict[str, object]] = field(default_factory=list)
    summary_png: bytes = b""
    elapsed_seconds: float = 0.0
    truncated: bool = False
    method: str = "kernel"

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    def top_features(self, k: int = 5) -> list[str]:
        return self.global_importance.get_column("feature").head(k).to_list()

    def to_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "feature_names": self.feature_names,
            "global_importance": self.global_importance.to_dicts(),
            "base_value": self.base_value,
            "n_rows": self.n_rows,
            "truncated": self.truncated,
            "elapsed_seconds": self.elapsed_seconds,
            "per_row": self.per_row,
        }


def _matrix(name: str, X: object, n_features: int) -> np.ndarray:
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != n_features:
        raise EvaluationInputError(
            name, f"must have shape (n, {n_features}), got {arr.shape}", "match feature_names"
        )
    if arr.shape[0] == 0:
        raise EvaluationInputError(name, "has no rows")
    if not np.all(np.isfinite(arr)):
        raise EvaluationInputError(name, "contains NaN or infinite values", "impute before explaining")
    return arr


def _sample(X: np.ndarray, n: int, seed: int) -> np.ndarray:
    if X.shape[0] <= n:
        return X
    idx = np.sort(np.random.default_rng(seed).choice(X.shape[0], size=n, replace=False))
    return X[idx]


def _make_explainer(predict_fn: PredictFn, background: np.ndarray) -> shap.KernelExplainer:
    def model(x: np.ndarray) -> np.ndarray:
        return np.asarray(predict_fn(np.asarray(x, dtype=np.float64)), dtype=np.float64)

    probe = model(background[:2])
    if probe.ndim not in (1, 2) or probe.shape[0] != min(2, background.shape[0]):
        raise EvaluationInputError(
            "predict_fn", f"must return shape (n,) or (n, k) for n input rows, returned {probe.shape}"
        )
    return shap.KernelExplainer(model, background)


def _shap_values(
    explainer: shap.KernelExplainer, X: np.ndarray, nsamples: int | str | None
) -> np.ndarray:
    if nsamples is None:
        nsamples = 2 * X.shape[1] + 500
    values = explainer.shap_values(X, nsamples=nsamples, l1_reg=False, silent=True)
    if isinstance(values, list):  # older shap: one array per output
        values = np.stack(values, axis=-1)
    return np.asarray(values, dtype=np.float64)


def _base_value(explainer: shap.KernelExplainer) -> float | list[float]:
    ev = np.asarray(explainer.expected_value, dtype=np.float64).ravel()
    return float(ev[0]) if ev.size == 1 else [float(v) for v in ev]


def _row_dict(
    x: np.ndarray, values: np.ndarray, base: float | list[float], names: Sequence[str], top_k: int | None
) -> dict[str, object]:
    """One row's explanation; for multiclass, the class with the largest base + contributions."""
    output_index = None
    if values.ndim == 2:  # (features, classes)
        bases = np.asarray(base, dtype=np.float64)
        output_index = int(np.argmax(bases + values.sum(axis=0)))
        contrib, base_val = values[:, output_index], float(bases[output_index])
    else:
        contrib, base_val = values, float(base)  # type: ignore[arg-type]
    order = np.argsort(-np.abs(contrib))[: top_k or len(names)]
    return {
        "base_value": base_val,
        "prediction": float(base_val + contrib.sum()),
        "output_index": output_index,
        "contributions": {names[j]: float(contrib[j]) for j in range(len(names))},
        "features": {names[j]: float(x[j]) for j in range(len(names))},
        "top_features": [
            {"feature": names[j], "value": float(x[j]), "shap": float(contrib[j])} for j in order
        ],
    }


def explain(
    predict_fn: PredictFn,
    X_background: object,
    X_sample: object,
    feature_names: Sequence[str],
    max_seconds: float = 10.0,
    max_rows: int = 200,
    background_size: int = 50,
    nsamples: int | str | None = None,
    batch_size: int = 20,
    n_per_row: int = 5,
    seed: int = 0,
) -> Explanation:
    """SHAP values of up to ``max_rows`` rows of ``X_sample`` within about ``max_seconds``."""
    names = list(feature_names)
    if not names:
        raise EvaluationInputError("feature_names", "is empty")
    background = _sample(_matrix("X_background", X_background, len(names)), background_size, seed)
    rows = _sample(_matrix("X_sample", X_sample, len(names)), max_rows, seed + 1)
    explainer = _make_explainer(predict_fn, background)
    started = time.perf_counter()
    chunks: list[np.ndarray] = []
    done = 0
    while done < rows.shape[0]:
        elapsed = time.perf_counter() - started
        per_row = elapsed / done if done else 0.0
        if done and elapsed + per_row * min(batch_size, rows.shape[0] - done) > max_seconds:
            break
        chunks.append(_shap_values(explainer, rows[done:done + batch_size], nsamples))
        done += min(batch_size, rows.shape[0] - done)
    values = np.concatenate(chunks, axis=0)
    explained = rows[:done]
    base = _base_value(explainer)
    mean_abs = np.abs(values).mean(axis=tuple(i for i in range(values.ndim) if i != 1))
    importance = (
        pl.DataFrame({"feature": names, "mean_abs_shap": mean_abs.astype(np.float64)})
        .sort("mean_abs_shap", descending=True)
    )
    per_row = [_row_dict(explained[i], values[i], base, names, None) for i in range(min(n_per_row, done))]
    png = figure_png(shap_summary_figure(values, explained, names))
    return Explanation(
        feature_names=names, global_importance=importance, values=values, base_value=base, rows=explained,
        per_row=per_row, summary_png=png, elapsed_seconds=time.perf_counter() - started,
        truncated=done < rows.shape[0],
    )


def explain_one(
    predict_fn: PredictFn,
    X_background: object,
    x_row: object,
    feature_names: Sequence[str],
    background_size: int = 50,
    nsamples: int | str | None = None,
    top_k: int | None = None,
    seed: int = 0,
) -> dict[str, object]:
    """Explain one served prediction: base value, prediction, per-feature contributions and the
    features ranked by ``|SHAP|`` (``top_k`` of them, all by default). ``prediction`` equals
    ``base_value + sum(contributions)``; ``output_index`` is the explained class (multiclass)."""
    names = list(feature_names)
    background = _sample(_matrix("X_background", X_background, len(names)), background_size, seed)
    x = _matrix("x_row", x_row, len(names))
    if x.shape[0] != 1:
        raise EvaluationInputError("x_row", f"must be one row, got {x.shape[0]}")
    explainer = _make_explainer(predict_fn, background)
    values = _shap_values(explainer, x, nsamples)[0]
    result = _row_dict(x[0], values, _base_value(explainer), names, top_k)
    result["method"] = "kernel"
    return result


def save_explanation(expl: Explanation, out_dir: str | Path) -> dict[str, Path]:
    """Write ``shap_explanation.json`` (importance, base value, per-row explanations),
    ``shap_values.json`` (all values with the explained rows) and ``shap_summary.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "shap_explanation.json",
        "values": out / "shap_values.json",
        "png": out / "shap_summary.png",
    }
    paths["json"].write_text(dumps(expl.to_dict()))
    paths["values"].write_text(
        dumps({"feature_names": expl.feature_names, "rows": expl.rows, "values": expl.values}, indent=None)
    )
    paths["png"].write_bytes(expl.summary_png)
    return paths
