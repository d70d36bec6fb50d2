"""Backtest replay of a model's signal on the test split.

The replay is deliberately simple and fully specified, so a person can check it by hand:

* **Positions** per (symbol, date) come from the model: ``long_flat`` holds 1 when the signal
  says "up" and 0 otherwise; ``long_short`` holds +1 / -1. (:func:`positions_from_scores`
  maps binary probabilities, multiclass probabilities and regression forecasts to positions.)
* **Portfolio return** of a date = the equal-weight mean over the symbols present that date of
  ``position x return - cost``, where ``cost = cost_bps / 10_000 x |position - previous
  position|`` of the same symbol (the previous position before a symbol's first row is 0, so
  entering costs too). Re-weighting between symbols is not charged.
* **Returns** are the ``fwd_return`` column divided by ``horizon``. Forward returns over h > 1
  days overlap from one date to the next; dividing by h spreads them evenly so the daily
  series is not counted h times. That is an approximation: pass a one-day forward-return
  column (``return_col``) with ``horizon=1`` for an exact replay.
* Rows whose return is missing (the last ``horizon`` dates of a split) are dropped and counted.
* **Turnover** of a date = mean over symbols of ``|position change|`` (one-way, fraction of the
  portfolio); the reported figure is its mean over days. **Hit rate** = share of non-zero
  (symbol, date) positions whose gross P&L ``position x return`` was > 0.
* Benchmarks replayed under the same rules: **buy_and_hold** (long every symbol, every day) and
  the **champion** when its signal is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import polars as pl

from mlops_assets.evaluation.errors import EvaluationInputError
from mlops_assets.evaluation.metrics import as_scores, check_task_type
from mlops_assets.evaluation.scenarios import Scenario, ScenarioWindow, build_scenarios

Mode = Literal["long_flat", "long_short"]
MODES: tuple[str, ...] = get_args(Mode)
CANDIDATE, CHAMPION, BUY_AND_HOLD = "candidate", "champion", "buy_and_hold"


def _check_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise EvaluationInputError("mode", f"unknown mode {mode!r}", f"use one of {', '.join(MODES)}")
    return mode  # type: ignore[return-value]


def positions_from_scores(
    task_type: str, scores: object, mode: str = "long_flat", threshold: float = 0.5
) -> np.ndarray:
    """Map model output to positions in {-1, 0, 1}.

    binary: "up" when P(up) >= threshold; multiclass: direction = P(highest class id) - P(lowest
    class id) (class ids ordered from down to up), "up" when > 0 and "down" when < 0;
    regression: the sign of the forecast return. ``long_flat`` turns "down" into 0.
    """
    task = check_task_type(task_type)
    mode = _check_mode(mode)
    s = as_scores(task, scores, field="scores")
    if task == "binary":
        direction = np.where(s >= threshold, 1.0, -1.0)
    elif task == "multiclass":
        direction = np.sign(s[:, -1] - s[:, 0])
    else:
        direction = np.sign(s)
    return np.clip(direction, 0.0, 1.0) if mode == "long_flat" else direction


@dataclass
class BacktestResult:
    """Outcome of :func:`backtest`.

    ``daily`` is long: ``date, strategy, ret, gross, cost, turnover, hits, n_positions``;
    ``market`` has ``date, market_return`` (equal-weight, before costs); ``summary`` is the
    whole-period table (one row per strategy); ``scenarios[0]`` is the whole period.
    """

    mode: Mode
    cost_bps: float
    threshold: float
    horizon: int
    daily: pl.DataFrame
    market: pl.DataFrame
    summary: pl.DataFrame
    scenarios: list[Scenario] = field(default_factory=list)
    n_rows_dropped: int = 0

    @property
    def strategies(self) -> list[str]:
        return self.summary.get_column("strategy").to_list()

    def stats(self, strategy: str = CANDIDATE) -> dict[str, float]:
        """Whole-period statistics of one strategy (cumulative_return, sharpe, max_drawdown...)."""
        rows = self.summary.filter(pl.col("strategy") == strategy)
        if rows.height == 0:
            raise EvaluationInputError("strategy", f"{strategy!r} not in {self.strategies}")
        return {k: float(v) for k, v in rows.drop("strategy").row(0, named=True).items()}

    def returns(self, strategy: str = CANDIDATE) -> pl.DataFrame:
        """``date, ret`` of one strategy, sorted by date."""
        return self.daily.filter(pl.col("strategy") == strategy).select("date", "ret").sort("date")

    def equity_curves(self) -> pl.DataFrame:
        """Wide frame: ``date`` and one equity column (starting from 1) per strategy."""
        wide = self.daily.pivot(on="strategy", index="date", values="ret").sort("date")
        return wide.with_columns([(1.0 + pl.col(s)).cum_prod().alias(s) for s in self.strategies])

    def scenario_table(self) -> pl.DataFrame:
        """All scenarios stacked: ``scenario, kind, start, end, strategy`` + statistics."""
        parts = [
            s.table.with_columns(
                pl.lit(s.name).alias("scenario"), pl.lit(s.kind).alias("kind"),
                pl.lit(s.start, dtype=pl.Date).alias("start"), pl.lit(s.end, dtype=pl.Date).alias("end"),
            )
            for s in self.scenarios
        ]
        if not parts:
            return pl.DataFrame()
        stacked = pl.concat(parts, how="vertical")
        keys = ("scenario", "kind", "start", "end")
        return stacked.select(*keys, pl.exclude(*keys))

    def equity_curve_png(self) -> bytes:
        """Small PNG of the equity curves, stress windows shaded (for markdown metadata)."""
        from mlops_assets.evaluation.plots import equity_curve_figure, figure_png

        stress = [(s.start, s.end) for s in self.scenarios if s.kind == "stress"]
        return figure_png(equity_curve_figure(self.equity_curves(), stress))

    def to_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "cost_bps": self.cost_bps,
            "threshold": self.threshold,
            "horizon": self.horizon,
            "n_rows_dropped": self.n_rows_dropped,
            "summary": self.summary.to_dicts(),
            "scenarios": [s.to_dict() for s in self.scenarios],
        }


def _positions_array(name: str, values: object, n: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.shape[0] != n:
        raise EvaluationInputError(name, f"has {arr.shape[0]} values, the frame has {n} rows", "align them")
    if not np.all(np.isfinite(arr)):
        raise EvaluationInputError(name, "contains NaN or infinite values")
    return arr


def _replay(frame: pl.DataFrame, position_col: str, cost_rate: float, strategy: str) -> pl.DataFrame:
    """Daily portfolio rows of one strategy from a frame with symbol, date, _ret and positions."""
    prev = pl.col(position_col).shift(1).over("symbol", order_by="date").fill_null(0.0)
    pos, ret = pl.col(position_col), pl.col("_ret")
    per_row = frame.with_columns((pos - prev).abs().alias("_dpos"), (pos * ret).alias("_pnl"))
    return (
        per_row.group_by("date")
        .agg(
            pl.col("_pnl").mean().alias("gross"),
            (pl.col("_dpos").mean() * cost_rate).alias("cost"),
            pl.col("_dpos").mean().alias("turnover"),
            (pl.col("_pnl") > 0).sum().cast(pl.Float64).alias("hits"),
            (pos != 0).sum().cast(pl.Float64).alias("n_positions"),
        )
        .with_columns((pl.col("gross") - pl.col("cost")).alias("ret"), pl.lit(strategy).alias("strategy"))
        .select("date", "strategy", "ret", "gross", "cost", "turnover", "hits", "n_positions")
        .sort("date")
    )


def _prepare(df: pl.DataFrame, return_col: str, horizon: int) -> pl.DataFrame:
    missing = [c for c in ("symbol", "date", return_col) if c not in df.columns]
    if missing:
        raise EvaluationInputError(
            "df", f"missing columns {missing}", "pass the test split with its forward returns"
        )
    if horizon < 1:
        raise EvaluationInputError("horizon", f"must be >= 1, got {horizon}")
    frame = df.select("symbol", "date", pl.col(return_col).cast(pl.Float64).alias("_ret"))
    if frame.select(pl.struct("symbol", "date").is_duplicated().any()).item():
        raise EvaluationInputError("df", "has duplicate (symbol, date) rows", "deduplicate the test split")
    return frame.with_columns(pl.col("_ret").fill_nan(None) / horizon)


def backtest(
    df: pl.DataFrame,
    signal: object | None = None,
    *,
    positions: object | None = None,
    mode: str = "long_flat",
    cost_bps: float = 5.0,
    threshold: float = 0.5,
    horizon: int = 1,
    return_col: str = "fwd_return",
    champion_signal: object | None = None,
    champion_positions: object | None = None,
    stress_windows: int = 3,
    stress_window_days: int = 20,
    scenarios: list[dict[str, object]] | list[ScenarioWindow] | None = None,
) -> BacktestResult:
    """Replay a signal (binary P(up), thresholded) or explicit ``positions`` on ``df``.

    ``df`` has ``symbol``, ``date`` and ``return_col``, row-aligned with the signal. The champion
    is given the same way (``champion_signal`` or ``champion_positions``). ``scenarios`` are
    extra date ranges ``[{"name", "start", "end"}]``; ``stress_windows`` (K) windows of
    ``stress_window_days`` (W) are found automatically.
    """
    mode = _check_mode(mode)
    if cost_bps < 0:
        raise EvaluationInputError("cost_bps", f"must be >= 0, got {cost_bps}")
    if (signal is None) == (positions is None):
        raise EvaluationInputError("signal/positions", "pass exactly one of them")
    frame = _prepare(df, return_col, horizon)
    n = frame.height

    def to_positions(name: str, sig: object | None, pos: object | None) -> np.ndarray:
        if sig is not None:
            return positions_from_scores("binary", _positions_array(name, sig, n), mode, threshold)
        return _positions_array(name, pos, n)

    columns = {CANDIDATE: to_positions("signal", signal, positions)}
    if champion_signal is not None or champion_positions is not None:
        columns[CHAMPION] = to_positions("champion_signal", champion_signal, champion_positions)
    columns[BUY_AND_HOLD] = np.ones(n)
    frame = frame.with_columns([pl.Series(f"_pos_{k}", v) for k, v in columns.items()])
    valid = frame.filter(pl.col("_ret").is_not_null())
    if valid.height == 0:
        raise EvaluationInputError(
            return_col, "has no realised values", "evaluate on rows with forward returns"
        )
    cost_rate = cost_bps / 10_000.0
    daily = pl.concat([_replay(valid, f"_pos_{k}", cost_rate, k) for k in columns], how="vertical")
    market = valid.group_by("date").agg(pl.col("_ret").mean().alias("market_return")).sort("date")
    all_scenarios = build_scenarios(daily, market, stress_windows, stress_window_days, scenarios)
    return BacktestResult(
        mode=mode,
        cost_bps=float(cost_bps),
        threshold=float(threshold),
        horizon=int(horizon),
        daily=daily,
        market=market,
        summary=all_scenarios[0].table,
        scenarios=all_scenarios,
        n_rows_dropped=n - valid.height,
    )


def strategy_returns_aligned(result: BacktestResult, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    """Daily returns of two strategies on their common dates (for the paired A/B bootstrap)."""
    ra, rb = result.returns(a), result.returns(b)
    joined = ra.join(rb, on="date", suffix="_b").sort("date")
    return joined.get_column("ret").to_numpy(), joined.get_column("ret_b").to_numpy()

