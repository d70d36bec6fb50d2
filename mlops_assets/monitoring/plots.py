"""A small PNG of per-column drift scores against their thresholds, for asset metadata (< 100 KB).

Scores of different methods live on different scales and point different ways (a distance drifts when
it is *above* its threshold, a p-value when it is *below*), so each bar shows the column's score, its
own threshold is a black tick on the bar's row, and the bar is red when the column drifted.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mlops_assets.monitoring.drift import DriftResult

MAX_COLUMNS_SHOWN = 40


def drift_plot_png(result: DriftResult, max_columns: int = MAX_COLUMNS_SHOWN) -> bytes:
    """Horizontal bar chart of ``result.per_column`` (drifted columns first), as PNG bytes."""
    table = result.per_column.sort(["drifted", "column"], descending=[True, False]).head(max_columns)
    rows = table.to_dicts()[::-1]  # barh draws bottom-up
    height = 1.0 + 0.28 * max(len(rows), 1)
    fig = Figure(figsize=(6.4, height), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    labels = [f"{r['column']} ({r['method']})" for r in rows]
    colors = ["#d62728" if r["drifted"] else "#1f77b4" for r in rows]
    positions = list(range(len(rows)))
    ax.barh(positions, [r["score"] for r in rows], color=colors, height=0.6)
    ax.scatter([r["threshold"] for r in rows], positions, marker="|", s=180, color="black", zorder=3)
    ax.set_yticks(positions, labels, fontsize=7)
    ax.set_xlabel("drift score (black tick: threshold; red: drifted)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    shown = f" (first {max_columns})" if result.n_columns > max_columns else ""
    ax.set_title(
        f"{result.n_drifted}/{result.n_columns} columns drifted, share {result.share_drifted:.2f}{shown}",
        fontsize=9,
    )
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()
