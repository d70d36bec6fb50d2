"""fast_drift gives exactly Evidently 0.7's DataDriftPreset verdicts (real Evidently runs, small data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from mlops_assets.monitoring.drift import fast_drift, prepare_reference
from mlops_assets.monitoring.evidently_report import run_evidently_drift, verdicts_from_snapshot
from mlops_assets_tests.monitoring.conftest import assert_same_verdicts, make_window

# Evidently's own numpy/scipy calls warn on NaN, inf and unseen categories; fast_drift does not
# (test_fast_drift checks that with warnings turned into errors)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def evidently_verdicts(reference, current, **kwargs):
    return verdicts_from_snapshot(run_evidently_drift(reference, current, **kwargs))


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "shift", "expected_methods"),
    [
        # <= 1000 reference rows: p-value tests
        (
            400,
            350,
            0.4,
            {
                "cont": "ks",
                "wide_int": "ks",
                "five_levels": "chisquare",
                "six_levels": "ks",
                "binary_float": "z",
                "proba": "ks",
                "ten_levels_int": "chisquare",
                "lowcard_int": "chisquare",
                "regime": "chisquare",
                "flag": "z",
            },
        ),
        (1000, 1200, 0.0, None),  # boundary: exactly 1000 reference rows still uses p-values
        # > 1000 reference rows: distances
        (
            1001,
            900,
            0.0,
            {
                "cont": "wasserstein",
                "wide_int": "wasserstein",
                "five_levels": "jensenshannon",
                "six_levels": "wasserstein",
                "binary_float": "jensenshannon",
                "proba": "wasserstein",
                "ten_levels_int": "jensenshannon",
                "lowcard_int": "jensenshannon",
                "regime": "jensenshannon",
                "flag": "jensenshannon",
            },
        ),
        (4000, 3500, 0.4, None),
    ],
)
def test_inferred_types_and_methods_match_evidently(n_ref, n_cur, shift, expected_methods):
    reference = make_window(n_ref, seed=1)
    current = make_window(n_cur, seed=2, shift=shift)
    fast = fast_drift(reference, current, prediction_columns=["proba"])
    assert_same_verdicts(fast, evidently_verdicts(reference, current))
    methods = dict(fast.per_column.select("column", "method").iter_rows())
    if expected_methods is not None:
        assert methods == expected_methods
    if n_ref == 1000:
        assert set(methods.values()) <= {"ks", "chisquare", "z"}
    kinds = dict(fast.per_column.select("column", "kind").iter_rows())
    assert kinds["proba"] == "prediction" and kinds["cont"] == "feature"


def test_shifted_window_drifts_and_identical_window_does_not():
    reference = make_window(3000, seed=3)
    shifted = make_window(3000, seed=4, shift=0.6)
    same = reference.copy()

    drifted = fast_drift(reference, shifted)
    assert_same_verdicts(drifted, evidently_verdicts(reference, shifted))
    assert drifted.dataset_drift
    assert {"cont", "wide_int", "regime", "proba"} <= set(drifted.drifted_columns)

    unchanged = fast_drift(reference, same)
    assert_same_verdicts(unchanged, evidently_verdicts(reference, same))
    assert not unchanged.dataset_drift
    assert unchanged.n_drifted == 0
    scores = unchanged.per_column.get_column("score").to_list()
    assert all(s == 0.0 for s in scores)  # identical samples: every distance is exactly zero


def test_small_identical_window_has_p_values_of_one():
    reference = make_window(300, seed=5)
    result = fast_drift(reference, reference.copy())
    assert_same_verdicts(result, evidently_verdicts(reference, reference.copy()))
    assert result.n_drifted == 0
    assert result.per_column.get_column("score").min() > 0.99


def test_explicit_categorical_columns_match_evidently_data_definition():
    reference = make_window(3000, seed=6)
    current = make_window(2500, seed=7, shift=0.3)
    columns = ["cont", "wide_int", "lowcard_int", "regime", "flag", "proba"]
    categorical = ["wide_int", "regime", "flag"]  # wide_int forced categorical, lowcard_int forced numerical
    fast = fast_drift(reference, current, columns=columns, categorical_columns=categorical)
    ev = evidently_verdicts(reference, current, columns=columns, categorical_columns=categorical)
    assert_same_verdicts(fast, ev, ordered=False)
    types = dict(fast.per_column.select("column", "column_type").iter_rows())
    assert types["wide_int"] == "categorical" and types["lowcard_int"] == "numerical"
    methods = dict(fast.per_column.select("column", "method").iter_rows())
    assert methods["wide_int"] == "jensenshannon" and methods["lowcard_int"] == "jensenshannon"


def test_missing_values_infinities_and_new_categories_match_evidently():
    reference = make_window(2000, seed=8)
    current = make_window(1500, seed=9, shift=0.2)
    current.loc[current.index[:40], "cont"] = np.nan
    current.loc[current.index[40:45], "cont"] = np.inf
    reference.loc[reference.index[:7], "proba"] = -np.inf
    reference.loc[reference.index[7:9], "proba"] = np.nan
    current.loc[current.index[:30], "regime"] = None
    current.loc[current.index[30:60], "regime"] = "crash"  # a value the reference never saw
    fast = fast_drift(reference, current)
    assert_same_verdicts(fast, evidently_verdicts(reference, current))
    counts = dict(fast.per_column.select("column", "n_current").iter_rows())
    assert counts["cont"] == 1500 - 45 and counts["regime"] == 1500 - 30


def test_infinity_without_nan_follows_evidentlys_per_column_verdicts():
    """Evidently's DriftedColumnsCount (legacy code) only drops +-inf from a column that also has NaN, so
    with inf alone it scores that column NaN and counts it as not drifted, while its own ValueDrift for the
    same column drops the inf and says drifted. fast_drift is consistent with the per-column verdicts."""
    reference = make_window(3000, seed=17)
    current = make_window(3000, seed=18, shift=0.6)
    reference.loc[reference.index[:5], "cont"] = np.inf  # and no NaN anywhere in 'cont'
    fast = fast_drift(reference, current)
    ev = evidently_verdicts(reference, current)
    flags = {c["column"]: c["drifted"] for c in ev["columns"]}
    assert flags["cont"] and "cont" in fast.drifted_columns
    assert dict(fast.per_column.select("column", "drifted").iter_rows()) == flags
    assert fast.n_drifted == sum(flags.values()) == ev["n_drifted"] + 1


def test_small_window_with_unseen_category_gives_zero_p_value_like_evidently():
    reference = make_window(500, seed=10)
    current = make_window(400, seed=11)
    current.loc[current.index[:25], "lowcard_int"] = 9
    fast = fast_drift(reference, current)
    assert_same_verdicts(fast, evidently_verdicts(reference, current))
    row = fast.per_column.filter(pl.col("column") == "lowcard_int").row(0, named=True)
    assert row["method"] == "chisquare" and row["score"] == 0.0 and row["drifted"]


def test_polars_input_with_nulls_types_like_its_pandas_conversion():
    reference = pl.from_pandas(make_window(1500, seed=12))
    current = pl.from_pandas(make_window(1500, seed=13, shift=0.3)).with_columns(
        # an integer column with nulls becomes float64 in pandas: numerical, not categorical
        pl.when(pl.int_range(pl.len()) < 20).then(None).otherwise(pl.col("lowcard_int")).alias("lowcard_int"),
        pl.col("regime").cast(pl.Categorical),
    )
    fast = fast_drift(reference, current)
    assert_same_verdicts(fast, evidently_verdicts(reference, current))
    types = dict(fast.per_column.select("column", "column_type").iter_rows())
    assert types["lowcard_int"] == "numerical" and types["regime"] == "categorical"


def test_reference_profile_reused_across_windows_gives_the_same_answers():
    reference = make_window(2000, seed=14)
    profile = prepare_reference(reference)
    for seed, shift in ((15, 0.0), (16, 0.5)):
        current = make_window(1800, seed=seed, shift=shift)
        from_profile = fast_drift(profile, current)
        direct = fast_drift(reference, current)
        assert from_profile.per_column.equals(direct.per_column)
        assert from_profile.share_drifted == direct.share_drifted
    assert_same_verdicts(from_profile, evidently_verdicts(reference, current))  # the shifted window


def test_evidently_uses_current_window_types_and_so_does_fast_drift():
    # 'levels' has 10 integer values in the current window (categorical) but 11 in the reference
    reference = pd.DataFrame({"levels": np.arange(3000) % 11, "x": np.linspace(0, 1, 3000)})
    current = pd.DataFrame({"levels": np.arange(2000) % 10, "x": np.linspace(0, 1.2, 2000)})
    fast = fast_drift(reference, current)
    assert_same_verdicts(fast, evidently_verdicts(reference, current))
    assert dict(fast.per_column.select("column", "column_type").iter_rows())["levels"] == "categorical"
