"""Backtest scenarios: the whole period, automatic stress windows and configured date ranges.

Stress windows are found on the equal-weight market return (the mean forward return across
symbols per date): the rolling standard deviation over ``window`` trading days is computed, and
the ``k`` windows with the highest volatility are taken greedily, skipping any window that
overlaps one already chosen. Each scenario gets the same per-strategy table as the whole period.
"""

from __future__ import annotations

import json
from pathlib import Path

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, model_validator

from mlops_assets.evaluation.errors import EvaluationInputError
from mlops_assets.evaluation.performance import TRADING_DAYS, return_stats

ScenarioKind = Literal["full", "stress", "configured"]

STAT_COLUMNS: tuple[str, ...] = (
    "cumulative_return", "annualised_return", "volatility", "sharpe", "max_drawdown",
    "hit_rate", "turnover", "n_days",
)


class ScenarioWindow(BaseModel):
    """A configured date range, e.g. ``{"name": "covid", "start": "2020-02-15", "end": "2020-04-30"}``
    (both ends inclusive)."""

    name: str
    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> "ScenarioWindow":
        if self.end < self.start:
            raise EvaluationInputError(
                f"scenarios[{self.name!r}].end", f"{self.end} is before start {self.start}", "swap them"
            )
        return self


@dataclass
class Scenario:
    """One scenario's per-strategy statistics (one row per strategy, columns ``STAT_COLUMNS``)."""

    name: str
    kind: ScenarioKind
    start: dt.date | None
    end: dt.date | None
    table: pl.DataFrame
    market_volatility: float | None = None
    notes: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "market_volatility": self.market_volatility,
            "table": self.table.to_dicts(),
        }


def strategy_table(
    daily: pl.DataFrame, start: dt.date | None = None, end: dt.date | None = None
) -> pl.DataFrame:
    """Statistics per strategy over ``[start, end]`` of a long daily frame with columns
    ``date, strategy, ret, turnover, hits, n_positions`` (see :mod:`.backtest`)."""
    frame = daily
    if start is not None:
        frame = frame.filter(pl.col("date") >= start)
    if end is not None:
        frame = frame.filter(pl.col("date") <= end)
    rows = []
    for strategy in daily.get_column("strategy").unique(maintain_order=True).to_list():
        part = frame.filter(pl.col("strategy") == strategy).sort("date")
        stats = return_stats(part.get_column("ret").to_numpy())
        n_pos = float(part.get_column("n_positions").sum()) if part.height else 0.0
        stats["hit_rate"] = float(part.get_column("hits").sum()) / n_pos if n_pos > 0 else math.nan
        stats["turnover"] = float(part.get_column("turnover").mean()) if part.height else math.nan
        rows.append({"strategy": strategy, **{c: stats[c] for c in STAT_COLUMNS}})
    schema = {"strategy": pl.String, **{c: pl.Float64 for c in STAT_COLUMNS}}
    return pl.DataFrame(rows, schema=schema)


def find_stress_windows(market: pl.DataFrame, window: int = 20, k: int = 3) -> list[Scenario]:
    """The ``k`` highest-volatility non-overlapping windows of ``window`` trading days.

    ``market`` has columns ``date`` and ``market_return`` (one row per date). Returns scenarios
    with an empty table (filled by :func:`build_scenarios`), ordered from most to least volatile,
    named ``stress_1``, ``stress_2``...; fewer than ``k`` when the series is too short.
    """
    if window < 2:
        raise EvaluationInputError("stress_window_days", f"must be >= 2, got {window}")
    if k < 0:
        raise EvaluationInputError("stress_windows", f"must be >= 0, got {k}")
    ordered = market.sort("date")
    returns = ordered.get_column("market_return").cast(pl.Float64).fill_null(0.0).to_numpy()
    dates = ordered.get_column("date").to_list()
    if k == 0 or returns.size < window:
        return []
    rolling = np.lib.stride_tricks.sliding_window_view(returns, window)
    vols = rolling.std(axis=1, ddof=1)
    taken = np.zeros(returns.size, dtype=bool)
    chosen: list[Scenario] = []
    for start in np.argsort(-vols, kind="stable"):
        if len(chosen) == k:
            break
        if taken[start:start + window].any():
            continue
        taken[start:start + window] = True
        chosen.append(
            Scenario(
                name=f"stress_{len(chosen) + 1}",
                kind="stress",
                start=dates[start],
                end=dates[start + window - 1],
                table=pl.DataFrame(),
                market_volatility=float(vols[start] * math.sqrt(TRADING_DAYS)),
            )
        )
    return chosen


def parse_windows(windows: list[dict[str, object]] | list[ScenarioWindow] | None) -> list[ScenarioWindow]:
    """Validate configured date ranges (dicts with ``name``, ``start``, ``end``)."""
    parsed = []
    for i, w in enumerate(windows or []):
        if isinstance(w, ScenarioWindow):
            parsed.append(w)
            continue
        try:
            parsed.append(ScenarioWindow.model_validate(w))
        except EvaluationInputError:
            raise
        except Exception as exc:  # pydantic ValidationError: re-raise with the field named
            raise EvaluationInputError(
                f"scenarios[{i}]", f"invalid date range {w!r}: {exc}",
                "use {'name': str, 'start': 'YYYY-MM-DD', 'end': 'YYYY-MM-DD'}",
            ) from exc
    names = [w.name for w in parsed]
    if len(set(names)) != len(names):
        raise EvaluationInputError("scenarios", f"duplicate scenario names in {names}")
    return parsed


def build_scenarios(
    daily: pl.DataFrame,
    market: pl.DataFrame,
    stress_windows: int = 3,
    stress_window_days: int = 20,
    windows: list[dict[str, object]] | list[ScenarioWindow] | None = None,
) -> list[Scenario]:
    """The whole period, then the stress windows, then the configured ranges, each with its table."""
    dates = market.get_column("date")
    full = Scenario("full_period", "full", dates.min(), dates.max(), strategy_table(daily))
    scenarios = [full]
    for stress in find_stress_windows(market, stress_window_days, stress_windows):
        stress.table = strategy_table(daily, stress.start, stress.end)
        scenarios.append(stress)
    for w in parse_windows(windows):
        table = strategy_table(daily, w.start, w.end)
        scenarios.append(Scenario(w.name, "configured", w.start, w.end, table))
    return scenarios


def scenarios_file(home: str | Path) -> Path:
    """Where stress scenarios saved through the management API live (``$MLOPS_HOME/evaluation``)."""
    return Path(home) / "evaluation" / "scenarios.json"


def saved_scenarios(home: str | Path) -> list[dict[str, str]]:
    """Scenarios saved through the management API (``name``, ``start``, ``end``, ``description``)."""
    path = scenarios_file(home)
    return json.loads(path.read_text()) if path.exists() else []
