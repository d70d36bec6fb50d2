"""Live outcomes: the join of served predictions with their realised labels, and its label-horizon rule."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import polars as pl
import pytest

from mlops_assets.data.synthetic import business_days
from mlops_assets.monitoring import live_outcomes as O


def _market(n_days: int = 40, symbols: tuple[str, ...] = ("AAA", "BBB"), seed: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    days = business_days(date(2024, 1, 1), n_days).astype("datetime64[D]").astype(date).tolist()
    frames = []
    for s in symbols:
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n_days)))
        frames.append(pl.DataFrame({"symbol": s, "date": days, "open": close, "high": close * 1.01,
                                    "low": close * 0.99, "close": close, "volume": 1000.0}))
    return pl.concat(frames)


def _served(rows: list[tuple[str, datetime, float]]) -> pl.DataFrame:
    return pl.DataFrame({
        "request_id": [f"r{i}" for i in range(len(rows))], "row": [0] * len(rows),
        "ts": [t for _, t, _ in rows], "entity": [s for s, _, _ in rows],
        "model_name": "m", "model_version": "1", "alias": "production", "variant": "production",
        "prediction": [float(p >= 0.5) for *_, p in rows], "probability": [p for *_, p in rows],
        "latency_ms": 1.0,
    }, schema_overrides={"ts": pl.Datetime("us", "UTC")})


def test_outcome_join_labels_only_after_the_horizon() -> None:
    market, horizon = _market(), 2
    days = market.filter(pl.col("symbol") == "AAA")["date"].to_list()
    close = {s: dict(zip(g["date"], g["close"])) for (s,), g in market.group_by("symbol")}

    def at(d):
        return datetime(d.year, d.month, d.day, 14, 30, tzinfo=UTC)

    served = _served([("AAA", at(days[10]), 0.7), ("BBB", at(days[10]), 0.4), ("AAA", at(days[20]), 0.6),
                      ("AAA", at(days[-1]), 0.6), ("AAA", at(days[0]), 0.5)])
    # now: the day of days[11]'s close -> the first two are labelled (decision days[9], outcome days[11])
    now = at(days[11])
    out = O.join_outcomes(served, market, horizon=horizon, now=now)
    status = dict(zip(out["request_id"], out["label_status"]))
    assert status == {"r0": "labelled", "r1": "labelled", "r2": "pending", "r3": "pending", "r4": "no_market_data"}
    labelled = out.filter(pl.col("label_status") == "labelled")
    for row in labelled.iter_rows(named=True):  # the training label, from a plain reference computation
        t = days.index(row["decision_date"])
        assert row["decision_date"] == days[9] and row["outcome_date"] == days[t + horizon]
        want = float(close[row["symbol"]][days[t + horizon]] > close[row["symbol"]][days[t]])
        assert row["label"] == want
        assert row["fwd_return"] == pytest.approx(close[row["symbol"]][days[t + horizon]] / close[row["symbol"]][days[t]] - 1)
        assert row["outcome_date"] <= now.date() and row["outcome_date"] >= row["date"]
    # no label (nor return) leaks into a row whose horizon has not passed, although the market data has it
    pending = out.filter(pl.col("label_status") != "labelled")
    assert pending["label"].null_count() == pending.height and pending["fwd_return"].null_count() == pending.height
    # one day before the outcome's close, nothing is labelled
    early = O.join_outcomes(served, market, horizon=horizon, now=at(days[10]))
    assert early.filter(pl.col("label_status") == "labelled").is_empty()
    # r3 (served on the last day) stays pending whatever `now` is: the data does not reach its horizon
    late = O.join_outcomes(served, market, horizon=horizon, now=datetime(2030, 1, 1, tzinfo=UTC))
    assert dict(zip(late["request_id"], late["label_status"]))["r3"] == "pending"
    assert dict(zip(late["request_id"], late["label_status"]))["r2"] == "labelled"
