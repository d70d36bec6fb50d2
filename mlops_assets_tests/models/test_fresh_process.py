"""The logged model is self-contained: a fresh process with only the tracking URI loads it.

Two fresh processes, started in an empty directory where this package is NOT importable:
``mlflow models serve`` (real HTTP server) and a Python process running
``mlflow.pyfunc.load_model`` and then ``load_wrapper``. Both must predict what the in-process
wrapper predicts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from mlops_assets.models.lightning import PytorchLightningWrapper
from mlops_assets_tests.models.conftest import MODEL_NAME

PROJECT_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
import mlflow, pandas as pd
uri, rows_path, project_root = sys.argv[1:4]
frame = pd.read_json(rows_path, orient="records")
model = mlflow.pyfunc.load_model(uri)
out = model.predict(frame)
result = {
    "pyfunc": out["probability"].tolist(),
    "pyfunc_prediction": out["prediction"].tolist(),
    "package_imported_by_pyfunc": any(m.startswith("mlops_assets") for m in sys.modules),
}
sys.path.insert(0, project_root)
from mlops_assets.models.wrapper import load_wrapper
wrapper = load_wrapper(uri, mlflow.MlflowClient())
result["wrapper_class"] = type(wrapper).__name__
result["wrapper"] = wrapper.predict(frame.to_dict("records")).probabilities.tolist()
print("RESULT" + json.dumps(result))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pyfunc_serve_and_wrapper_agree_in_fresh_processes(store, registered, dataset, tmp_path):
    data, features = dataset
    uri = f"models:/{MODEL_NAME}/{registered.version}"
    rows = data.filter(data["split"] == "test").select(features).head(25)
    rows_path = tmp_path / "rows.json"
    rows_path.write_text(json.dumps(rows.to_dicts()))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MLFLOW_TRACKING_URI=store.tracking_uri, MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
               MLFLOW_DISABLE_TELEMETRY="true",
               # `mlflow models serve` execs `uvicorn`: the virtualenv's bin must be on PATH
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(mlflow_cli), "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1",
         "-p", str(port), "-w", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        script = subprocess.run([sys.executable, "-c", SCRIPT, uri, str(rows_path), str(PROJECT_ROOT)],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
        assert script.returncode == 0, script.stderr[-3000:]
        line = next(x for x in script.stdout.splitlines() if x.startswith("RESULT"))
        fresh = json.loads(line[len("RESULT"):])

        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not come up"
            time.sleep(0.5)
        response = httpx.post(f"http://127.0.0.1:{port}/invocations",
                              json={"dataframe_records": rows.to_dicts()}, timeout=30)
        assert response.status_code == 200, response.text
        served = response.json()["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    local = PytorchLightningWrapper()
    local.load(uri)
    expected = local.predict(rows.to_numpy()).probabilities
    assert not fresh["package_imported_by_pyfunc"]  # the artifact carries its own code
    assert fresh["wrapper_class"] == "PytorchLightningWrapper"
    np.testing.assert_allclose(fresh["pyfunc"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fresh["wrapper"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([r["probability"] for r in served], expected, rtol=1e-5, atol=1e-6)
    expected_labels = (expected >= 0.5).astype(int).tolist()
    assert [r["prediction"] for r in served] == fresh["pyfunc_prediction"] == expected_labels
    assert 0.0 < float(np.mean(expected >= 0.5)) < 1.0  # not a constant model
