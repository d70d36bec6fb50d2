"""A served prediction is explained by its request id: prediction log -> model version -> SHAP."""

from __future__ import annotations

from pathlib import Path

import httpx
import polars as pl
import pytest

from mlops_assets.features import readmodels
from mlops_assets_tests.serving.conftest import ThreadedServer, World, wait_ready

pytestmark = pytest.mark.xdist_group("serving")


def test_served_prediction_is_explained_by_request_id(world: World, tmp_path: Path) -> None:
    from serving.management.main import create_app as create_api
    from serving.inference.main import create_app as create_inference

    settings = world.settings_for(tmp_path / "home")
    world.write_snapshot(settings.online_dir)
    train = world.data.filter(pl.col("split") == "train").head(200)
    sample = readmodels.dataset_sample_name("training_dataset")
    readmodels.export_read_model(train, settings.readmodels_dir, sample)
    features = {f: 0.5 * (i - 2) for i, f in enumerate(world.features)}
    with ThreadedServer(create_inference(settings)) as inference:
        wait_ready(inference.url)
        served = httpx.post(f"{inference.url}/predict",
                            json={"instances": [{"symbol": "AAA"}, {"features": features}]}).json()
    # stopping the server closed the last segment of the prediction log
    with ThreadedServer(create_api(settings)) as api:
        r = httpx.get(f"{api.url}/api/v1/ml/evaluation/explanations/{served['request_id']}",
                      params={"row": 1}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["model_version"], body["row"], body["entity"]) == (world.v1.version, 1, None)
        assert body["features"] == pytest.approx(features)
        assert body["background"] == "training_dataset_sample"
        explanation = body["explanation"]
        assert set(explanation["contributions"]) == set(world.features)
        # SHAP is additive: base value + contributions = the explained model output, P(up) as served
        assert explanation["prediction"] == pytest.approx(served["probabilities"][1], abs=1e-3)
        assert explanation["top_features"][0]["feature"] in world.features
        missing = httpx.get(f"{api.url}/api/v1/ml/evaluation/explanations/no-such-request")
        assert missing.status_code == 404 and "prediction log" in missing.json()["detail"]
