"""Backtest replay checked by hand on a 2-symbol series; stress windows on a planted volatile window."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from mlops_assets.evaluation.backtest import backtest, positions_from_scores, strategy_returns_aligned
from mlops_assets.evaluation.errors import EvaluationInputError
from mlops_assets.evaluation.scenarios import find_stress_windows

D = [dt.date(2024, 3, d) for d in (4, 5, 6, 7)]


def two_symbol_frame() -> pl.DataFrame:
    """Rows deliberately not sorted, to check the replay orders by (symbol, date) itself."""
    frame = pl.DataFrame({
        "symbol": ["A"] * 4 + ["B"] * 4,
        "date": D + D,
        "fwd_return": [0.01, -0.02, 0.03, 0.01, 0.02, 0.01, -0.01, 0.00],
        "prob": [0.6, 0.4, 0.7, 0.8, 0.3, 0.9, 0.2, 0.55],
    })
    return frame[[7, 2, 0, 5, 3, 1, 6, 4]]


def test_long_flat_cumulative_return_by_hand() -> None:
    df = two_symbol_frame()
    result = backtest(df, df["prob"], mode="long_flat", cost_bps=10, stress_windows=0)
    # positions A: 1,0,1,1  B: 0,1,0,1; cost 0.001 per unit of position change (entry included)
    expected_daily = [
        (0.01 - 0.001 + 0.0) / 2,           # A enters, B flat
        (-0.001 + 0.01 - 0.001) / 2,        # A exits, B enters
        (0.03 - 0.001 + -0.001) / 2,        # A re-enters, B exits
        (0.01 + 0.00 - 0.001) / 2,          # A holds, B enters
    ]
    got = result.returns("candidate")
    assert got["date"].to_list() == D
    assert np.allclose(got["ret"].to_numpy(), expected_daily)
    stats = result.stats("candidate")
    assert stats["cumulative_return"] == pytest.approx(np.prod(1 + np.array(expected_daily)) - 1)
    assert stats["turnover"] == pytest.approx((0.5 + 1 + 1 + 0.5) / 4)
    assert stats["hit_rate"] == pytest.approx(4 / 5)  # B's last long earned exactly 0
    bh = [(0.01 - 0.001 + 0.02 - 0.001) / 2, (-0.02 + 0.01) / 2, (0.03 - 0.01) / 2, (0.01 + 0.0) / 2]
    assert np.allclose(result.returns("buy_and_hold")["ret"].to_numpy(), bh)
    assert result.strategies == ["candidate", "buy_and_hold"]


def test_long_short_costs_two_units_on_a_flip_and_champion_is_replayed() -> None:
    df = two_symbol_frame()
    result = backtest(df, df["prob"], mode="long_short", cost_bps=10, champion_positions=np.ones(8),
                      stress_windows=0)
    # A: +1,-1,+1,+1  B: -1,+1,-1,+1
    expected = [
        (0.01 - 0.001 - 0.02 - 0.001) / 2,
        (0.02 - 0.002 + 0.01 - 0.002) / 2,
        (0.03 - 0.002 + 0.01 - 0.002) / 2,
        (0.01 + 0.0 - 0.002) / 2,
    ]
    assert np.allclose(result.returns("candidate")["ret"].to_numpy(), expected)
    # a champion that is always long equals buy-and-hold
    assert np.allclose(result.returns("champion")["ret"], result.returns("buy_and_hold")["ret"])
    a, b = strategy_returns_aligned(result, "champion", "candidate")
    assert np.allclose(b, expected) and a.shape == b.shape


def test_horizon_divides_returns_and_missing_returns_are_dropped() -> None:
    df = two_symbol_frame().with_columns(
        pl.when((pl.col("symbol") == "B") & (pl.col("date") == D[-1])).then(None)
        .otherwise(pl.col("fwd_return") * 5).alias("fwd_return")
    )
    result = backtest(df, positions=np.ones(8), cost_bps=0, horizon=5, stress_windows=0)
    assert result.n_rows_dropped == 1
    daily = result.returns("candidate")["ret"].to_numpy()
    assert np.allclose(daily, [(0.01 + 0.02) / 2, (-0.02 + 0.01) / 2, (0.03 - 0.01) / 2, 0.01])


def test_positions_from_scores_for_each_task() -> None:
    assert positions_from_scores("binary", [0.7, 0.3, 0.5], "long_short").tolist() == [1, -1, 1]
    assert positions_from_scores("binary", [0.7, 0.3], "long_flat").tolist() == [1, 0]
    probs = [[0.6, 0.3, 0.1], [0.1, 0.3, 0.6], [0.3, 0.4, 0.3]]
    assert positions_from_scores("multiclass", probs, "long_short").tolist() == [-1, 1, 0]
    assert positions_from_scores("regression", [0.01, -0.02, 0.0], "long_short").tolist() == [1, -1, 0]


def test_planted_volatile_window_is_found_first() -> None:
    n, start, width = 120, 50, 15
    returns = np.where(np.arange(n) % 2 == 0, 0.001, -0.001)
    returns[start:start + width] = np.where(np.arange(width) % 2 == 0, 0.03, -0.03)
    returns[90:100] *= 5  # a second, milder episode
    dates = [dt.date(2022, 1, 1) + dt.timedelta(days=i) for i in range(n)]
    market = pl.DataFrame({"date": dates, "market_return": returns})
    windows = find_stress_windows(market, window=width, k=3)
    assert [w.name for w in windows] == ["stress_1", "stress_2", "stress_3"]
    assert (windows[0].start, windows[0].end) == (dates[start], dates[start + width - 1])
    assert windows[0].market_volatility > windows[1].market_volatility
    spans = [(w.start, w.end) for w in windows]
    for i, (s1, e1) in enumerate(spans):  # non-overlapping
        for s2, e2 in spans[i + 1:]:
            assert e1 < s2 or e2 < s1
    assert any(s <= dates[95] <= e for s, e in spans[1:])
    assert find_stress_windows(market.head(10), window=15, k=3) == []


def test_scenarios_table_covers_full_stress_and_configured_ranges() -> None:
    rng = np.random.default_rng(1)
    n = 60
    dates = [dt.date(2023, 1, 1) + dt.timedelta(days=i) for i in range(n)]
    df = pl.DataFrame({"symbol": ["X"] * n + ["Y"] * n, "date": dates * 2,
                       "fwd_return": rng.normal(0, 0.01, size=2 * n)})
    result = backtest(df, positions=np.ones(2 * n), cost_bps=0, stress_windows=2, stress_window_days=10,
                      scenarios=[{"name": "january", "start": "2023-01-01", "end": "2023-01-31"}])
    table = result.scenario_table()
    assert table["scenario"].unique(maintain_order=True).to_list() == ["full_period", "stress_1", "stress_2",
                                                                       "january"]
    jan = table.filter((pl.col("scenario") == "january") & (pl.col("strategy") == "candidate"))
    assert jan["n_days"].item() == 31
    jan_market = result.market.filter(pl.col("date") <= dt.date(2023, 1, 31))["market_return"].to_numpy()
    expected = np.prod(1 + jan_market) - 1
    assert jan["cumulative_return"].item() == pytest.approx(expected)
    stress = table.filter(pl.col("kind") == "stress")
    assert (stress["n_days"] == 10).all()


def test_bad_inputs() -> None:
    df = two_symbol_frame()
    with pytest.raises(EvaluationInputError, match="signal"):
        backtest(df)
    with pytest.raises(EvaluationInputError) as info:
        backtest(df, positions=np.ones(3))
    assert info.value.field == "signal"
    with pytest.raises(EvaluationInputError, match="mode"):
        backtest(df, df["prob"], mode="short_only")
    with pytest.raises(EvaluationInputError, match="duplicate"):
        backtest(pl.concat([df, df]), positions=np.ones(16))
    with pytest.raises(Exception, match="start"):
        backtest(df, df["prob"], scenarios=[{"name": "bad", "start": "2024-03-07", "end": "2024-03-01"}])


def test_equity_curves_and_png() -> None:
    df = two_symbol_frame()
    result = backtest(df, df["prob"], cost_bps=10, stress_windows=1, stress_window_days=2)
    curves = result.equity_curves()
    assert curves.columns == ["date", "candidate", "buy_and_hold"]
    final = curves["candidate"][-1]
    assert final == pytest.approx(1 + result.stats()["cumulative_return"])
    png = result.equity_curve_png()
    assert png[:4] == b"\x89PNG" and len(png) < 100_000
