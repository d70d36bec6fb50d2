"""fast_drift's building blocks against plain reference computations (scipy, pandas), and its contract."""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pandas as pd
import polars as pl
import pytest
from scipy import stats
from scipy.spatial import distance

from mlops_assets.monitoring.columns import (
    ColumnType,
    DriftInputError,
    infer_column_type,
    resolve_column_types,
)
from mlops_assets.monitoring.drift import PER_COLUMN_SCHEMA, fast_drift, prepare_reference, summary_row
from mlops_assets.monitoring.plots import drift_plot_png
from mlops_assets.monitoring.stattests import (
    chisquare_pvalue,
    jensenshannon_counts,
    select_method,
    wasserstein_distance_sorted,
    z_test_pvalue,
)
from mlops_assets_tests.monitoring.conftest import make_window


@pytest.mark.parametrize(
    ("n", "m", "ties"),
    [(1, 1, False), (1, 7, False), (5, 3, True), (300, 1000, False), (2000, 1999, True), (4000, 4000, False)],
)
def test_wasserstein_on_sorted_samples_equals_scipy(n, m, ties):
    rng = np.random.default_rng(n * 7 + m)
    u = rng.integers(0, 6, n).astype(float) if ties else rng.normal(0, 1, n)
    v = rng.integers(0, 8, m).astype(float) if ties else rng.standard_t(3, m) + 0.2
    expected = stats.wasserstein_distance(u, v)
    got = wasserstein_distance_sorted(np.sort(u), np.sort(v))
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert wasserstein_distance_sorted(np.sort(u), np.sort(u)) == 0.0


def test_count_based_tests_equal_scipy_formulas():
    ref = np.array([50.0, 30.0, 20.0, 0.0])
    cur = np.array([40.0, 35.0, 20.0, 5.0])
    assert jensenshannon_counts(ref, cur) == pytest.approx(distance.jensenshannon(ref / 100, cur / 100))
    k = cur[:3].sum() / ref[:3].sum()
    assert chisquare_pvalue(ref[:3], cur[:3]) == pytest.approx(stats.chisquare(cur[:3], ref[:3] * k)[1])
    assert chisquare_pvalue(ref, cur) == 0.0  # a value the reference never had
    # Z-test against statsmodels' pooled two-proportion z-test
    from statsmodels.stats.proportion import proportions_ztest

    expected = proportions_ztest([30, 45], [100, 90])[1]
    got = z_test_pvalue(["a", "b"], np.array([70.0, 30.0]), np.array([45.0, 45.0]))
    assert got == pytest.approx(expected)
    assert z_test_pvalue(["a"], np.array([10.0]), np.array([12.0])) == 1.0


@pytest.mark.parametrize(
    ("n_ref", "n_values", "numerical", "expected"),
    [
        (1000, 6, True, "ks"),
        (1000, 5, True, "chisquare"),
        (1000, 2, True, "z"),
        (1000, 3, False, "chisquare"),
        (1000, 2, False, "z"),
        (1001, 6, True, "wasserstein"),
        (1001, 5, True, "jensenshannon"),
        (1001, 2, False, "jensenshannon"),
        (10**6, 500, False, "jensenshannon"),
    ],
)
def test_method_selection_table(n_ref, n_values, numerical, expected):
    assert select_method(n_ref, n_values, numerical).name == expected


def test_type_inference_agrees_between_pandas_and_polars():
    frame = pl.DataFrame(
        {
            "f": [0.5, 1.5, None, 2.0] * 10,
            "few_ints": [1, 2, 3, 4] * 10,
            "many_ints": list(range(40)),
            "ints_with_null": [1, None, 2, 3] * 10,
            "uints": pl.Series(list(range(40)), dtype=pl.UInt32),
            "label": ["a", "b", None, "a"] * 10,
            "free_text": [f"note {i}" for i in range(40)],
            "flag": [True, False] * 20,
            "flag_with_null": [True, None] * 20,
            "day": [dt.date(2024, 1, 1)] * 40,
        }
    )
    expected = {
        "f": ColumnType.NUMERICAL,
        "few_ints": ColumnType.CATEGORICAL,
        "many_ints": ColumnType.NUMERICAL,
        "ints_with_null": ColumnType.NUMERICAL,
        "uints": ColumnType.UNKNOWN,
        "label": ColumnType.CATEGORICAL,
        "free_text": ColumnType.TEXT,
        "flag": ColumnType.CATEGORICAL,
        "flag_with_null": ColumnType.UNKNOWN,
        "day": ColumnType.DATETIME,
    }
    as_pandas = frame.to_pandas()
    for column, kind in expected.items():
        assert infer_column_type(frame, column) == kind, column
        assert infer_column_type(as_pandas, column) == kind, column


def test_default_columns_skip_dates_and_order_numerical_first():
    frame = pd.DataFrame(
        {"regime": ["a", "b"] * 600, "x": np.arange(1200.0), "day": pd.Timestamp("2024-01-01"), "y": 1.0}
    )
    assert list(resolve_column_types(frame, None, None)) == ["x", "y", "regime"]


def test_result_contract_and_pandas_polars_thread_equivalence():
    reference, current = make_window(3000, seed=20), make_window(2000, seed=21, shift=0.5)
    result = fast_drift(reference, current, threshold_share=0.3, prediction_columns=["proba"], n_jobs=1)
    assert result.per_column.schema == pl.Schema(PER_COLUMN_SCHEMA)
    assert (result.n_reference, result.n_current, result.n_columns) == (3000, 2000, 10)
    assert result.share_drifted == result.n_drifted / 10
    assert result.dataset_drift == (result.share_drifted >= 0.3)
    assert result.prediction_drift == ("proba" in result.drifted_columns)
    as_dict = result.to_dict()
    assert as_dict["drifted_columns"] == result.drifted_columns and len(as_dict["per_column"]) == 10
    threaded = fast_drift(pl.from_pandas(reference), pl.from_pandas(current), prediction_columns=["proba"],
                          threshold_share=0.3, n_jobs=4)
    assert threaded.per_column.equals(result.per_column)


def test_dirty_data_raises_no_numpy_warning():
    reference, current = make_window(1500, seed=28), make_window(400, seed=29, shift=0.3)
    current.loc[current.index[:10], "cont"] = np.nan
    current.loc[current.index[10:12], "proba"] = np.inf
    current.loc[current.index[:5], "lowcard_int"] = 7  # unseen value
    small_ref = reference.iloc[:300]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast_drift(reference, current)
        fast_drift(small_ref, current)  # chi-square with a zero expected count


def test_threshold_share_rule_is_greater_or_equal():
    reference, current = make_window(2000, seed=22), make_window(2000, seed=23, shift=0.6)
    result = fast_drift(reference, current)
    assert fast_drift(reference, current, threshold_share=result.share_drifted).dataset_drift
    assert not fast_drift(reference, current, threshold_share=result.share_drifted + 0.01).dataset_drift


def test_bad_inputs_name_the_field():
    reference, current = make_window(200, seed=24), make_window(200, seed=25)
    cases = [
        (dict(columns=["nope"]), "nope"),
        (dict(columns=["regime"], categorical_columns=[]), "regime"),  # strings declared numerical
        (dict(threshold_share=0.0), "threshold_share"),
        (dict(prediction_columns=["score"]), "prediction_columns"),
        (dict(columns=["cont"], categorical_columns=["regime"]), "categorical_columns"),
        (dict(n_jobs=0), "n_jobs"),
    ]
    for kwargs, field in cases:
        with pytest.raises(DriftInputError) as excinfo:
            fast_drift(reference, current, **kwargs)
        assert excinfo.value.field == field, kwargs
    with pytest.raises(DriftInputError, match="free text") as excinfo:
        fast_drift(reference.assign(note=[f"n{i}" for i in range(200)]),
                   current.assign(note=[f"m{i}" for i in range(200)]))
    assert excinfo.value.field == "note"
    empty = current.assign(cont=np.nan)
    with pytest.raises(DriftInputError, match="no usable value") as excinfo:
        fast_drift(reference, empty, columns=["cont"])
    assert excinfo.value.field == "cont"
    with pytest.raises(DriftInputError) as excinfo:
        fast_drift(prepare_reference(reference, ["cont"]), current, columns=["cont", "proba"])
    assert excinfo.value.field == "proba"


def test_summary_row_and_plot():
    reference, current = make_window(2000, seed=26), make_window(2000, seed=27, shift=0.6)
    result = fast_drift(reference, current)
    row = summary_row(
        result, (dt.date(2024, 1, 1), dt.date(2024, 3, 31)), (dt.date(2024, 4, 1), dt.date(2024, 4, 7)), "7"
    )
    assert row["reference_start"] == dt.date(2024, 1, 1) and row["current_end"] == dt.date(2024, 4, 7)
    assert row["model_version"] == "7" and row["n_drifted"] == result.n_drifted
    assert row["drifted_columns"] == result.drifted_columns and row["dataset_drift"] == result.dataset_drift
    assert row["methods"] == "jensenshannon:6,wasserstein:4"
    pl.DataFrame([row])  # one warehouse row: every value has a column type
    with pytest.raises(DriftInputError) as excinfo:
        summary_row(
            result, (dt.date(2024, 2, 1), dt.date(2024, 1, 1)), (dt.date(2024, 4, 1), dt.date(2024, 5, 1))
        )
    assert excinfo.value.field == "reference_window"

    png = drift_plot_png(result)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 100_000
    wide = pl.concat([result.per_column.with_columns(pl.col("column") + f"_{i}") for i in range(8)])
    many = type(result)(wide, result.share_drifted, result.dataset_drift, 2000, 2000)
    assert len(drift_plot_png(many)) < 100_000
