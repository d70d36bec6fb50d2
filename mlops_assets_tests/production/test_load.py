"""A short version of ``benchmarks/load_promotion.py``: the inference app with two workers under a steady
rate while the model is promoted three times; no request may fail and both versions must be served.
The registry is the MLflow tracking server (artifacts proxied by it), as on a team server."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from mlops_assets.settings import PROJECT_ROOT
from mlops_assets_tests.production.helpers import SESSION

pytestmark = pytest.mark.xdist_group("production")
RATE, SECONDS, PROMOTIONS = 200.0, 10.0, 3


def _benchmark():
    spec = importlib.util.spec_from_file_location("load_promotion", PROJECT_ROOT / "benchmarks" / "load_promotion.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_steady_load_through_three_promotions_loses_no_request(services, tmp_path: Path) -> None:
    bench = _benchmark()
    report = bench.run_load_test(rate=RATE, duration_s=SECONDS, promotions=PROMOTIONS, workers=2,
                                 tracking_uri=services.mlflow_url, model=f"load_{SESSION}", workdir=tmp_path)
    print(f"load: {report.to_dict()}")
    assert report.failed == 0, f"{report.failed} request(s) failed during promotions"
    assert report.requests >= 0.7 * RATE * SECONDS, f"only {report.requests} requests: the rate was not held"
    assert len(report.promotions) == PROMOTIONS
    assert [p["version"] for p in report.promotions][:2] == [report.promotions[0]["version"],
                                                             report.promotions[1]["version"]]
    assert len(report.versions_served) == 2 and min(report.versions_served.values()) > 0
    assert report.p99_ms < 1000.0
