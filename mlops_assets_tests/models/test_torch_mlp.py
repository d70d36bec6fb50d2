"""The plain-torch predictor: fast path equals the module, spec round trip, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlops_assets.models.torch_mlp import (
    ModelSpec,
    ModelSpecError,
    TorchPredictor,
    build_mlp,
    save_artifacts,
    standardisation_stats,
)


def _spec(task_type: str, classes=(0, 1), **extra) -> ModelSpec:
    return ModelSpec(features=("a", "b", "c"), mean=(1.0, -2.0, 0.5), std=(2.0, 0.5, 1.0),
                     hidden_sizes=(8, 4), dropout=0.2, task_type=task_type, classes=classes, **extra)


@pytest.mark.parametrize(
    ("spec", "post"),
    [
        (_spec("binary"), lambda raw: torch.sigmoid(raw[:, 0])),
        (_spec("multiclass", classes=(-1, 0, 1)), lambda raw: torch.softmax(raw, dim=1)),
        (_spec("regression", classes=(), target_mean=0.01, target_std=0.02),
         lambda raw: raw[:, 0] * 0.02 + 0.01),
    ],
)
def test_fast_path_equals_module_forward(spec, post):
    torch.manual_seed(0)
    net = build_mlp(3, spec.hidden_sizes, spec.dropout, spec.n_outputs)
    predictor = TorchPredictor(spec, net.state_dict())
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    net.eval()
    with torch.no_grad():
        z = (torch.from_numpy(x) - torch.tensor(spec.mean)) / torch.tensor(spec.std)
        reference = post(net(z.float())).numpy()
    np.testing.assert_allclose(predictor.predict_array(x), reference, rtol=1e-5, atol=1e-6)
    columns = predictor.output_columns(predictor.predict_array(x))
    assert len(columns["prediction"]) == 50
    if spec.task_type == "multiclass":
        assert set(columns["prediction"]) <= {-1, 0, 1} and "probability_-1" in columns


def test_spec_and_weights_round_trip(tmp_path):
    spec = _spec("binary")
    net = build_mlp(3, spec.hidden_sizes, spec.dropout, 1)
    save_artifacts(tmp_path, spec, net.state_dict())
    loaded = TorchPredictor.from_directory(tmp_path)
    assert loaded.spec == spec
    x = np.ones((2, 3), dtype=np.float32)
    fresh = TorchPredictor(spec, net.state_dict())
    np.testing.assert_array_equal(loaded.predict_array(x), fresh.predict_array(x))


def test_missing_values_are_imputed_with_the_mean():
    spec = _spec("binary")
    predictor = TorchPredictor(spec, build_mlp(3, spec.hidden_sizes, 0.2, 1).state_dict())
    with_nan = np.array([[np.nan, 0.0, 1.0]], dtype=np.float32)
    with_mean = np.array([[1.0, 0.0, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(predictor.predict_array(with_nan), predictor.predict_array(with_mean))
    records = predictor.records_to_array([{"b": 0.0, "c": 1.0, "unused": 5}])
    assert np.isnan(records[0, 0]) and records[0, 1] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"task_type": "ranking"}, "task_type"), ({"features": ()}, "features"),
     ({"features": ("a", "a", "b")}, "features"), ({"mean": (0.0,)}, "mean/std"),
     ({"task_type": "multiclass", "classes": (1,)}, "classes")],
)
def test_invalid_specs_name_the_field(kwargs, field):
    base = dict(features=("a", "b", "c"), mean=(0.0,) * 3, std=(1.0,) * 3, hidden_sizes=(4,),
                dropout=0.0, task_type="binary")
    with pytest.raises(ModelSpecError) as err:
        ModelSpec(**{**base, **kwargs})
    assert err.value.field == field


def test_spec_format_version_is_checked():
    raw = {**_spec("binary").__dict__, "format_version": 99}
    with pytest.raises(ModelSpecError, match="format"):
        ModelSpec.from_dict(raw)


def test_standardisation_stats_handle_constant_and_nan_columns():
    x = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, np.nan]])
    mean, std = standardisation_stats(x)
    assert mean == (2.0, 5.0, 0.0) and std == (1.0, 1.0, 1.0)
