"""Live outcomes: each served prediction joined with its realised label once the horizon has passed.

**The outcome join** (:func:`join_outcomes`). Each served prediction (one row of the prediction log:
request id, time, symbol, model version, variant, output) is labelled with the training dataset's own
label (``features.datasets.forward_labels``: 1 if ``close[t + h] > close[t]``, the forward return
beside it), where ``t``, the prediction's *decision date*, is the symbol's last trading date strictly
before the request's UTC date (the last close the daily refresh had ingested when the request was
served) and ``t + h`` counts the symbol's trading rows. The label is given only once its horizon has
passed: the market data must hold the close at ``t + h`` (its *outcome date*) and that date must be
on or before ``now`` (the time the join runs); otherwise the row is ``pending``, never labelled. A
symbol with no market data before the request is ``no_market_data``.

The metrics over these rows are in ``monitoring.live_metrics``; the test of a version's live metric
against its evaluation, and the performance episode, in ``monitoring.performance``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from mlops_assets.data.schema import ENTITY_KEY, TIME_KEY
from mlops_assets.errors import InvalidInput
from mlops_assets.features.datasets import FWD_RETURN, LABEL, forward_labels

LABELLED, PENDING, NO_MARKET_DATA = "labelled", "pending", "no_market_data"

OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "date": pl.Date(), "request_id": pl.String(), "row": pl.Int32(), "ts": pl.Datetime("us", "UTC"),
    ENTITY_KEY: pl.String(), "model_name": pl.String(), "model_version": pl.String(), "alias": pl.String(),
    "variant": pl.String(), "prediction": pl.Float64(), "probability": pl.Float64(),
    "latency_ms": pl.Float64(), "decision_date": pl.Date(), "outcome_date": pl.Date(), LABEL: pl.Float64(),
    FWD_RETURN: pl.Float64(), "vol_regime": pl.String(), "label_status": pl.String(),
}


def as_utc(value: datetime | str, field: str) -> datetime:
    """``value`` (a datetime or an ISO string) as an aware UTC datetime; naive values are UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(field, f"{value!r} is not an ISO timestamp") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def outcome_labels(market: pl.DataFrame, horizon: int) -> pl.DataFrame:
    """symbol, date, label, fwd_return (``forward_labels``, the training label) and ``outcome_date``
    (the date of the close at ``t + horizon`` trading rows; null when the data does not reach it)."""
    if not isinstance(horizon, int) or horizon < 1:
        raise InvalidInput("horizon", f"must be an integer >= 1, got {horizon!r}")
    labels = forward_labels(market, horizon)
    dates = (market.select(ENTITY_KEY, TIME_KEY).sort(ENTITY_KEY, TIME_KEY)
             .with_columns(pl.col(TIME_KEY).shift(-horizon).over(ENTITY_KEY).alias("outcome_date")))
    return labels.join(dates, on=[ENTITY_KEY, TIME_KEY], how="left")


def volatility_regimes(market: pl.DataFrame) -> pl.DataFrame:
    """symbol, date, vol_regime: the ``volatility_regime`` feature view's own label on ``market``."""
    from mlops_assets.features.compute import compute_view
    from mlops_assets.features.views import REGIME_COLUMN, VOLATILITY_REGIME

    needed = {"close", "high", "low"}
    if not needed <= set(market.columns) or market.is_empty():
        return pl.DataFrame(schema={ENTITY_KEY: pl.String(), TIME_KEY: pl.Date(), "vol_regime": pl.String()})
    df = compute_view(VOLATILITY_REGIME, market).df
    return df.select(ENTITY_KEY, TIME_KEY, pl.col(REGIME_COLUMN).alias("vol_regime"))


def join_outcomes(served: pl.DataFrame, market: pl.DataFrame, *, horizon: int, now: datetime | str,
                  regimes: pl.DataFrame | None = None) -> pl.DataFrame:
    """Each served prediction with its realised label once the horizon has passed (module docstring).

    ``served``: prediction-log rows (``request_id``, ``row``, ``ts``, ``entity`` or ``symbol``, ``model_name``,
    ``model_version``, ``alias``, ``variant``, ``prediction``, ``probability``, ``latency_ms``);
    ``market``: raw market data (``symbol``, ``date``, ``close``; ``high``/``low`` for the regimes).
    Returns :data:`OUTCOME_SCHEMA` (``date`` is the request's UTC date), ``label`` null unless
    ``label_status == "labelled"``.
    """
    now = as_utc(now, "now")
    if ENTITY_KEY not in served.columns and "entity" in served.columns:
        served = served.rename({"entity": ENTITY_KEY})
    missing = [c for c in ("request_id", "ts", ENTITY_KEY, "model_version") if c not in served.columns]
    if missing:
        raise InvalidInput("served", f"missing column(s) {missing}; pass prediction-log rows")
    if served.is_empty():
        return pl.DataFrame(schema=OUTCOME_SCHEMA)
    frame = served.with_columns(
        *(pl.lit(None, dtype=OUTCOME_SCHEMA[c]).alias(c) for c in OUTCOME_SCHEMA
          if c not in served.columns and c in ("row", "model_name", "alias", "variant", "prediction",
                                               "probability", "latency_ms")),
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    frame = frame.with_columns(pl.col("ts").dt.date().alias("date"))  # UTC: ts is UTC-zoned
    trading = market.select(pl.col(ENTITY_KEY).cast(pl.String), pl.col(TIME_KEY).alias("decision_date")) \
        .unique().sort("decision_date")
    frame = (frame.sort("date")
             .join_asof(trading, left_on="date", right_on="decision_date", by=ENTITY_KEY,
                        strategy="backward", allow_exact_matches=False, check_sortedness=False))
    labels = outcome_labels(market, horizon).rename({TIME_KEY: "decision_date"})
    frame = frame.join(labels, on=[ENTITY_KEY, "decision_date"], how="left")
    regimes = volatility_regimes(market) if regimes is None else regimes
    frame = frame.join(regimes.rename({TIME_KEY: "decision_date"}), on=[ENTITY_KEY, "decision_date"], how="left")
    passed = (pl.col("outcome_date").is_not_null() & pl.col(LABEL).is_not_null()
              & (pl.col("outcome_date") <= pl.lit(now.date())) & (pl.col("outcome_date") >= pl.col("date")))
    status = (pl.when(pl.col("decision_date").is_null()).then(pl.lit(NO_MARKET_DATA))
              .when(passed).then(pl.lit(LABELLED)).otherwise(pl.lit(PENDING)))
    frame = frame.with_columns(status.alias("label_status"))
    hide = pl.col("label_status") != LABELLED  # no label (nor return) before its horizon has passed
    frame = frame.with_columns(
        pl.when(hide).then(None).otherwise(pl.col(LABEL)).cast(pl.Float64).alias(LABEL),
        pl.when(hide).then(None).otherwise(pl.col(FWD_RETURN)).cast(pl.Float64).alias(FWD_RETURN),
        pl.when(hide).then(None).otherwise(pl.col("outcome_date")).alias("outcome_date"),
    )
    return frame.select(pl.col(c).cast(t) for c, t in OUTCOME_SCHEMA.items()).sort("ts", "request_id", "row")
