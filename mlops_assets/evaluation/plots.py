"""Evaluation plots with matplotlib (Agg, no pyplot global state).

Every plot is a ``matplotlib.figure.Figure`` built by a pure function. :func:`figure_png` turns
it into small PNG bytes (default 80 dpi, re-rendered at a lower dpi until under ``max_bytes``,
100 KB by default) for markdown images in the Dagster UI; :func:`save_figures` writes full-size
files (150 dpi) for MLflow artifacts and linked reports.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import polars as pl
from matplotlib.figure import Figure
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
)

from mlops_assets.evaluation.metrics import (
    as_labels,
    as_scores,
    check_task_type,
    predicted_classes,
)

SMALL_DPI = 80
FULL_DPI = 150
MAX_PNG_BYTES = 100_000


def figure_png(fig: Figure, dpi: int = SMALL_DPI, max_bytes: int = MAX_PNG_BYTES) -> bytes:
    """PNG bytes of ``fig``, lowering the dpi until the image is under ``max_bytes``."""
    current = dpi
    while True:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=current, bbox_inches="tight")
        data = buf.getvalue()
        if len(data) <= max_bytes or current <= 20:
            return data
        current = int(current * 0.75)


def markdown_image(png: bytes, alt: str = "plot") -> str:
    """A markdown image with the PNG inlined as a data URI (for Dagster markdown metadata)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def render_pngs(figures: Mapping[str, Figure], dpi: int = SMALL_DPI) -> dict[str, bytes]:
    return {name: figure_png(fig, dpi) for name, fig in figures.items()}


def save_figures(figures: Mapping[str, Figure], out_dir: str | Path, dpi: int = FULL_DPI) -> dict[str, Path]:
    """Write ``<name>.png`` per figure into ``out_dir`` (created) and return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fig in figures.items():
        path = out / f"{name}.png"
        fig.savefig(path, format="png", dpi=dpi, bbox_inches="tight")
        paths[name] = path
    return paths


def _figure(width: float = 4.5, height: float = 3.5) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot(1, 1, 1)


def line_chart_png(series: Mapping[str, tuple[Sequence, Sequence]], *, xlabel: str = "", ylabel: str = "",
                   ylim: tuple[float, float] | None = None, width: float = 5.0, height: float = 2.8) -> bytes:
    """A small line chart (one line per series name) as PNG bytes, e.g. a loss curve or a KPI trend."""
    fig, ax = _figure(width, height)
    for name, (x, y) in series.items():
        ax.plot(list(x), list(y), marker="o", label=str(name))
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if series:
        ax.legend(fontsize=7)
    fig.autofmt_xdate() if xlabel == "date" else None
    return figure_png(fig)


def confusion_matrix_figure(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, title: str = ""
) -> Figure:
    fig, ax = _figure()
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=list(range(n_classes)), ax=ax, colorbar=False, cmap="Blues"
    )
    ax.set_title(title or "Confusion matrix")
    return fig


def roc_figure(y_true: np.ndarray, y_score: np.ndarray) -> Figure:
    fig, ax = _figure()
    RocCurveDisplay.from_predictions(y_true, y_score, ax=ax, name="candidate", pos_label=1)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_title("ROC curve")
    return fig


def precision_recall_figure(y_true: np.ndarray, y_score: np.ndarray) -> Figure:
    fig, ax = _figure()
    PrecisionRecallDisplay.from_predictions(y_true, y_score, ax=ax, name="candidate", pos_label=1)
    ax.set_title("Precision-recall curve")
    return fig


def predicted_vs_actual_figure(y_true: np.ndarray, y_pred: np.ndarray) -> Figure:
    fig, ax = _figure()
    ax.scatter(y_true, y_pred, s=6, alpha=0.5)
    lo, hi = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([lo, hi], [lo, hi], linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title("Predicted vs actual")
    return fig


def residuals_figure(y_true: np.ndarray, y_pred: np.ndarray) -> Figure:
    fig, ax = _figure()
    ax.scatter(y_pred, y_true - y_pred, s=6, alpha=0.5)
    ax.axhline(0.0, linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("residual (actual - predicted)")
    ax.set_title("Residuals")
    return fig


def metric_figures(
    task_type: str, y_true: object, y_score: object, threshold: float = 0.5
) -> dict[str, Figure]:
    """binary: confusion_matrix, roc, precision_recall; multiclass: confusion_matrix;
    regression: predicted_vs_actual, residuals."""
    task = check_task_type(task_type)
    scores = as_scores(task, y_score)
    y = as_labels(task, y_true, scores.shape[1] if task == "multiclass" else None)
    if task == "regression":
        return {
            "predicted_vs_actual": predicted_vs_actual_figure(y, scores),
            "residuals": residuals_figure(y, scores),
        }
    n_classes = 2 if task == "binary" else scores.shape[1]
    predicted = predicted_classes(task, scores, threshold)
    figs = {"confusion_matrix": confusion_matrix_figure(y, predicted, n_classes)}
    if task == "binary" and len(np.unique(y)) == 2:
        figs["roc"] = roc_figure(y, scores)
        figs["precision_recall"] = precision_recall_figure(y, scores)
    return figs


def equity_curve_figure(curves: pl.DataFrame, shaded: Sequence[tuple[object, object]] = ()) -> Figure:
    """Equity curves (``date`` + one column per strategy), with ``shaded`` (start, end) spans."""
    fig, ax = _figure(6.0, 3.5)
    dates = curves.get_column("date").to_list()
    for name in curves.columns:
        if name != "date":
            ax.plot(dates, curves.get_column(name).to_numpy(), label=name, linewidth=1.2)
    for start, end in shaded:
        ax.axvspan(start, end, color="red", alpha=0.12)
    ax.set_ylabel("equity (start = 1)")
    ax.set_title("Backtest equity curves (shaded: stress windows)")
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    return fig


def shap_summary_figure(
    values: np.ndarray, X: np.ndarray, feature_names: Sequence[str], max_features: int = 12
) -> Figure:
    """A beeswarm-style summary: one row per feature (most important on top), one dot per
    explained row at its SHAP value, coloured by the rank of the feature's value (blue low,
    red high; ranks keep one outlier from washing out the colours)."""
    vals = values if values.ndim == 2 else np.abs(values).mean(axis=2)
    order = np.argsort(-np.abs(vals).mean(axis=0))[:max_features]
    fig, ax = _figure(5.5, 0.35 * len(order) + 1.2)
    rng = np.random.default_rng(0)
    for rank, j in enumerate(order[::-1]):
        col = X[:, j].astype(np.float64)
        ranks = np.argsort(np.argsort(col, kind="stable"), kind="stable").astype(np.float64)
        colour = ranks / (col.shape[0] - 1) if col.shape[0] > 1 else np.full_like(col, 0.5)
        jitter = rng.uniform(-0.25, 0.25, size=col.shape[0])
        ax.scatter(vals[:, j], rank + jitter, c=colour, cmap="coolwarm", s=6, alpha=0.7, vmin=0, vmax=1)
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels([feature_names[j] for j in order[::-1]], fontsize=8)
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("SHAP value (impact on model output)" if values.ndim == 2 else "mean |SHAP| over classes")
    ax.set_title("SHAP summary")
    return fig


def skill_figures(skill) -> dict[str, Figure]:
    """``walk_forward``: the primary metric per fold with its bootstrap interval, the pooled interval
    as a band and the best baseline as a line (left); the mean IC per fold (right)."""
    table = skill.per_fold
    folds = table.get_column("fold").to_list()
    values = table.get_column(skill.metric).to_numpy()
    low, high = table.get_column("ci_low").to_numpy(), table.get_column("ci_high").to_numpy()
    fig = Figure(figsize=(7.0, 3.0))
    ax, ax_ic = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax.errorbar(folds, values, yerr=[values - low, high - values], fmt="o", capsize=4, label="fold")
    iv = skill.interval
    ax.axhspan(iv.low, iv.high, color="tab:blue", alpha=0.15, label=f"pooled {iv.level:.0%} CI")
    best = skill.best_baseline()
    if best is not None:
        ax.axhline(best[1], color="tab:red", linestyle="--", linewidth=1, label=f"baseline ({best[0]})")
    ax.set_xticks(folds)
    ax.set_xlabel("fold" if skill.mode == "walk_forward" else "test split")
    ax.set_ylabel(skill.metric)
    ax.set_title(f"{skill.metric} out of sample ({skill.mode})", fontsize=9)
    ax.legend(fontsize=6)
    ic = table.get_column("ic_mean").fill_null(float("nan")).to_numpy()
    ax_ic.bar(folds, np.nan_to_num(ic), color=["tab:green" if v > 0 else "tab:red" for v in np.nan_to_num(ic)])
    ax_ic.axhline(0.0, color="grey", linewidth=0.8)
    ax_ic.set_xticks(folds)
    ax_ic.set_xlabel("fold")
    ax_ic.set_title(f"mean IC ({skill.ic.method})", fontsize=9)
    fig.tight_layout()
    return {"walk_forward": fig}
