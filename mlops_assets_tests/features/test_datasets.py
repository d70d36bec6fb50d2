"""Point-in-time training dataset: labels from t + h, warm-up dropped, date splits with gaps,
stable fingerprint."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import polars as pl
import pytest

from mlops_assets.data.synthetic import generate_market_data
from mlops_assets.features.compute import compute_views
from mlops_assets.features.datasets import (
    SPLITS,
    DatasetError,
    TrainingDataset,
    build_training_dataset,
    split_frames,
)
from mlops_assets.features.views import FEATURE_VIEWS


@pytest.fixture(scope="module")
def market() -> pl.DataFrame:
    return generate_market_data(n_symbols=6, n_days=420, seed=9)


@pytest.fixture(scope="module")
def frames(market: pl.DataFrame) -> list[pl.DataFrame]:
    return [r.df for r in compute_views(FEATURE_VIEWS, market).values()]


@pytest.fixture(scope="module")
def dataset(frames: list[pl.DataFrame], market: pl.DataFrame) -> TrainingDataset:
    return build_training_dataset(frames, market)


def _reference_labels(market: pl.DataFrame, horizon: int) -> pd.DataFrame:
    pdf = market.select("symbol", "date", "close").to_pandas().sort_values(["symbol", "date"])
    future = pdf.groupby("symbol")["close"].shift(-horizon)
    pdf["ref_label"] = (future > pdf["close"]).astype("Int32").where(future.notna())
    pdf["ref_fwd"] = future / pdf["close"] - 1
    return pdf.dropna(subset=["ref_fwd"])


def test_columns_dtypes_and_order(dataset: TrainingDataset) -> None:
    df = dataset.df
    expected_features = [c for f in FEATURE_VIEWS for c in f.feature_names if c != "vol_regime"]
    assert dataset.features == expected_features
    assert dataset.categorical == ["vol_regime"]
    assert df.columns == ["symbol", "date", *expected_features, "vol_regime", "label", "fwd_return", "split"]
    assert df.schema["label"] == pl.Int32 and df.schema["fwd_return"] == pl.Float64
    assert df.schema["split"] == pl.String and df.schema["vol_regime"] == pl.String
    assert all(df.schema[f] == pl.Float64 for f in dataset.features)
    assert df.null_count().sum_horizontal().item() == 0
    assert df.select(pl.all_horizontal(pl.col(f).is_finite() for f in dataset.features).all()).item()
    assert df.equals(df.sort("date", "symbol"))
    assert set(df["label"].unique()) == {0, 1}


@pytest.mark.parametrize("horizon", [1, 3])
def test_label_is_direction_from_t_plus_horizon(frames, market, horizon: int) -> None:  # noqa: ANN001
    ds = build_training_dataset(frames, market, horizon=horizon)
    ref = _reference_labels(market, horizon)
    got = ds.df.select("symbol", "date", "label", "fwd_return").to_pandas()
    merged = got.merge(ref, on=["symbol", "date"], how="left", validate="one_to_one")
    assert merged["ref_fwd"].notna().all()
    assert (merged["label"] == merged["ref_label"]).all()
    assert np.allclose(merged["fwd_return"], merged["ref_fwd"])
    # the last `horizon` rows of each symbol have no label and are gone
    last_dates = market.group_by("symbol").agg(pl.col("date").sort().tail(horizon))
    tails = last_dates.explode("date")
    assert ds.df.join(tails, on=["symbol", "date"], how="inner").is_empty()
    assert ds.gap_days == horizon


def test_warm_up_rows_are_dropped(dataset: TrainingDataset, frames: list[pl.DataFrame]) -> None:
    joined = frames[0].join(frames[1], on=["symbol", "date"]).join(frames[2], on=["symbol", "date"])
    first_complete = joined.drop_nulls().group_by("symbol").agg(pl.col("date").min().alias("first"))
    first_in_dataset = dataset.df.group_by("symbol").agg(pl.col("date").min().alias("ds_first"))
    both = first_complete.join(first_in_dataset, on="symbol")
    assert (both["ds_first"] >= both["first"]).all()
    assert dataset.df["date"].min() == joined.drop_nulls()["date"].min()


@pytest.mark.parametrize("gap", [None, 0, 5])
def test_time_ordered_splits_with_gaps(frames, market, gap) -> None:  # noqa: ANN001
    ds = build_training_dataset(frames, market, horizon=2, val_frac=0.2, test_frac=0.1, gap_days=gap)
    gap_days = 2 if gap is None else gap
    train, val, test = split_frames(ds.df)
    assert train["date"].max() < val["date"].min() and val["date"].max() < test["date"].min()
    # with no gap nothing is dropped: its dates are every usable date
    usable = build_training_dataset(frames, market, horizon=2, val_frac=0.2, test_frac=0.1, gap_days=0)
    dates = usable.df["date"].unique().sort().to_list()
    position = {d: i for i, d in enumerate(dates)}
    assert position[val["date"].min()] - position[train["date"].max()] - 1 == gap_days
    assert position[test["date"].min()] - position[val["date"].max()] - 1 == gap_days
    assert ds.df.height == usable.df.height - usable.df.filter(
        ~pl.col("date").is_in(pl.concat([train, val, test])["date"].unique().implode())
    ).height
    assert ds.split_dates == {
        "train": (train["date"].min(), train["date"].max()),
        "validation": (val["date"].min(), val["date"].max()),
        "test": (test["date"].min(), test["date"].max()),
    }
    assert test["date"].max() == dates[-1] and train["date"].min() == dates[0]
    assert abs(val["date"].n_unique() - 0.2 * len(dates)) <= 1
    assert abs(test["date"].n_unique() - 0.1 * len(dates)) <= 1
    assert ds.df.height == train.height + val.height + test.height
    assert set(ds.df["split"].unique()) == set(SPLITS)


def test_fingerprint_is_stable_and_content_sensitive(dataset, frames, market) -> None:  # noqa: ANN001
    again = build_training_dataset(frames, market)
    assert again.fingerprint == dataset.fingerprint and len(dataset.fingerprint) == 64
    shuffled = [f.sample(fraction=1.0, shuffle=True, seed=1) for f in frames]
    assert build_training_dataset(shuffled, market.sample(fraction=1.0, shuffle=True, seed=2)).fingerprint == (
        dataset.fingerprint
    )
    changed = market.with_columns(
        pl.when((pl.col("symbol") == "SYM0003") & (pl.col("date") == pl.col("date").max()))
        .then(pl.col("close") * 1.5).otherwise(pl.col("close")).alias("close")
    )
    assert build_training_dataset(frames, changed).fingerprint != dataset.fingerprint
    assert build_training_dataset(frames, market, horizon=2).fingerprint != dataset.fingerprint


def test_return_label_and_metadata(frames, market, dataset) -> None:  # noqa: ANN001
    ds = build_training_dataset(frames, market, label="return")
    assert ds.df.schema["label"] == pl.Float64
    assert ds.df["label"].equals(ds.df["fwd_return"].alias("label"))
    meta = dataset.metadata()
    assert meta["rows"] == dataset.df.height
    assert sum(meta["rows_per_split"].values()) == dataset.df.height
    assert meta["fingerprint"] == dataset.fingerprint
    assert 0.3 < meta["positive_rate"] < 0.7


def test_errors_name_the_argument(frames, market) -> None:  # noqa: ANN001
    with pytest.raises(DatasetError, match="horizon"):
        build_training_dataset(frames, market, horizon=0)
    with pytest.raises(DatasetError, match="label"):
        build_training_dataset(frames, market, label="price")
    with pytest.raises(DatasetError, match="ret_1d"):
        build_training_dataset([frames[0], frames[0]], market)
    with pytest.raises(DatasetError, match="val_frac"):
        build_training_dataset(frames, market, val_frac=1.5)
    with pytest.raises(DatasetError, match="usable dates"):
        build_training_dataset(frames, market, val_frac=0.45, test_frac=0.45, gap_days=50)
    with pytest.raises(DatasetError, match="warm-up"):
        build_training_dataset(frames, market.filter(pl.col("date") < pl.col("date").unique().sort().gather(30).first()))
    with pytest.raises(DatasetError, match="split"):
        split_frames(frames[0])
    assert dataclasses.is_dataclass(TrainingDataset)
