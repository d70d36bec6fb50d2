"""Point-in-time (look-ahead) check of a feature view.

A feature is point-in-time correct when its value on date ``d`` depends only on data up to ``d``.
:func:`check_point_in_time` recomputes the view on the history truncated at a few sampled dates and
compares, at each truncation date, the value with the one computed on the full history. Any
feature that reads the future (``shift(-1)``, a centred window, a full-sample normalisation...)
gets a different value when the future is cut off, and fails.

The check fails closed: when it cannot sample a date on which some symbol has every feature (history
shorter than the longest rolling window), or when every compared value is null on both sides, it has
checked nothing and says so instead of passing. Null against a value is a mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from mlops_assets.data.schema import ENTITY_KEY, TIME_KEY
from mlops_assets.features.compute import compute_view
from mlops_assets.features.views import FeatureView


class Mismatch(NamedTuple):
    feature: str
    date: date
    full_value: Any
    truncated_value: Any
    symbol: str


@dataclass(frozen=True)
class LeakageResult:
    view: str
    passed: bool
    mismatches: list[Mismatch] = field(default_factory=list)  # at most ``max_mismatches`` kept
    checked_dates: list[date] = field(default_factory=list)
    checked_values: int = 0  # pairs where at least one side holds a value (null against null is not a check)
    n_mismatches: int = 0
    reason: str = ""

    @property
    def leaking_features(self) -> list[str]:
        return sorted({m.feature for m in self.mismatches})

    def summary(self) -> dict[str, Any]:
        """Plain values for an asset check's metadata."""
        return {
            "view": self.view,
            "passed": self.passed,
            "checked_dates": [d.isoformat() for d in self.checked_dates],
            "checked_values": self.checked_values,
            "mismatches": self.n_mismatches,
            "leaking_features": self.leaking_features,
            "reason": self.reason,
            "examples": [
                {"feature": m.feature, "symbol": m.symbol, "date": m.date.isoformat(),
                 "full": m.full_value, "truncated": m.truncated_value}
                for m in self.mismatches[:5]
            ],
        }


def _same(a: pl.Expr, b: pl.Expr, numeric: bool, rtol: float, atol: float) -> pl.Expr:
    both_null = a.is_null() & b.is_null()
    one_null = a.is_null() | b.is_null()
    if not numeric:
        return both_null | (~one_null & (a == b)).fill_null(False)
    close = ((a - b).abs() <= atol + rtol * b.abs()) | (a.is_nan() & b.is_nan()) | (a == b)
    return pl.when(both_null).then(True).when(one_null).then(False).otherwise(close.fill_null(False))


def _sample_symbols(
    market_df: pl.DataFrame, max_symbols: int | None, rng: np.random.Generator
) -> pl.DataFrame:
    symbols = market_df.get_column(ENTITY_KEY).unique().sort()
    if max_symbols is None or symbols.len() <= max_symbols:
        return market_df
    keep = symbols.gather(np.sort(rng.choice(symbols.len(), size=max_symbols, replace=False)))
    return market_df.filter(pl.col(ENTITY_KEY).is_in(keep.implode()))


def _candidate_dates(full: pl.DataFrame, features: list[str]) -> list[date]:
    """Dates before the last one on which some symbol has every feature (nothing else can be checked)."""
    all_dates = full.get_column(TIME_KEY).unique().sort().to_list()[:-1]
    if not features or not all_dates:
        return all_dates
    complete = full.filter(pl.all_horizontal(pl.col(f).is_not_null() for f in features))
    last = all_dates[-1]
    return [d for d in complete.get_column(TIME_KEY).unique().sort().to_list() if d <= last]


def check_point_in_time(
    view: FeatureView,
    market_df: pl.DataFrame,
    sample_dates: int = 5,
    seed: int = 0,
    max_symbols: int | None = 50,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    max_mismatches: int = 100,
) -> LeakageResult:
    """Recompute ``view`` on history truncated at ``sample_dates`` seeded random dates and compare
    the values on each truncation date with the full-history values.

    ``max_symbols`` keeps the check fast on large data (a seeded sample of symbols; None for all).
    Floats compare with a tolerance: rolling sums evaluated over a differently long column differ
    in the last bits; a look-ahead changes values by far more (or turns them null).
    """
    if sample_dates < 1:
        raise ValueError(f"sample_dates: must be >= 1, got {sample_dates}")
    rng = np.random.default_rng(seed)
    data = _sample_symbols(market_df, max_symbols, rng)
    full = compute_view(view, data).df
    features = [c for c in full.columns if c not in (ENTITY_KEY, TIME_KEY)]
    candidates = _candidate_dates(full, features)
    if not candidates:
        return LeakageResult(view=view.name, passed=False, reason=(
            f"nothing to check: no date before the last one has every feature of '{view.name}' for any symbol "
            f"({full.get_column(TIME_KEY).n_unique()} dates of history; the longest rolling window needs more)"))
    picks = rng.choice(len(candidates), size=min(sample_dates, len(candidates)), replace=False)
    chosen = sorted(candidates[i] for i in picks)

    mismatches: list[Mismatch] = []
    n_mismatches = 0
    checked = 0
    for day in chosen:
        history = data.filter(pl.col(TIME_KEY) <= day)
        truncated = compute_view(view, history).df.filter(pl.col(TIME_KEY) == day)
        expected = full.filter(pl.col(TIME_KEY) == day)
        pair = expected.join(truncated, on=[ENTITY_KEY, TIME_KEY], how="left", suffix="__truncated")
        for f in features:
            numeric = full.schema[f].is_numeric()
            other = f"{f}__truncated"
            if other not in pair.columns:  # the feature was skipped on the truncated history
                pair = pair.with_columns(pl.lit(None, dtype=full.schema[f]).alias(other))
            bad = pair.filter(~_same(pl.col(f), pl.col(other), numeric, rtol, atol))
            checked += pair.filter(pl.col(f).is_not_null() | pl.col(other).is_not_null()).height
            n_mismatches += bad.height
            for row in bad.head(max(0, max_mismatches - len(mismatches))).iter_rows(named=True):
                mismatches.append(Mismatch(f, day, row[f], row[other], row[ENTITY_KEY]))
    leaking = sorted({m.feature for m in mismatches})
    reason = (f"{n_mismatches} of {checked} values differ when the future is cut off: {leaking} use future rows"
              if n_mismatches
              else "" if checked else "nothing to check: every sampled value is null on both sides")
    return LeakageResult(
        view=view.name,
        passed=n_mismatches == 0 and checked > 0,
        reason=reason,
        mismatches=mismatches,
        checked_dates=chosen,
        checked_values=checked,
        n_mismatches=n_mismatches,
    )


def check_views_point_in_time(
    views: list[FeatureView] | tuple[FeatureView, ...], market_df: pl.DataFrame, **kwargs: Any
) -> dict[str, LeakageResult]:
    """:func:`check_point_in_time` for each view, keyed by view name."""
    return {view.name: check_point_in_time(view, market_df, **kwargs) for view in views}
