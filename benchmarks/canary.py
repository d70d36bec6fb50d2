"""Canary with automatic rollback under steady load: a deliberately broken version (it answers a constant)
is canaried through the management API while wrk holds ``mlops serve`` at a steady rate; the platform's
guardrail monitor (in the management API process) must take it off traffic on its own.

In a temporary ``MLOPS_HOME`` (loopback only, nothing downloaded):

1. ``load_promotion.prepare``: two small trained versions, gated and approved, the first in production,
   and an online snapshot; plus a constant pyfunc version (models-from-code) with recorded gates,
   approved by another person than its registerer;
2. ``mlops serve --workers W`` (inference app + management API, which runs the monitor);
3. wrk at ``--rate`` for the whole run; meanwhile ``--cycles`` times: POST .../models/{name}/canary
   (share ``--share``), wait until the canary alias is gone, note the time, pause, again;
4. prints per cycle the seconds from start to rollback (client-observed alias removal) and the seconds
   between the two audit entries (deployment.promotion to alias.removed), the failed guardrails and
   measured values, then wrk's totals: requests, failed (must be 0), latency, versions served.

    python benchmarks/canary.py [--rate 300] [--cycles 3] [--share 0.1] [--workers 2] [--json]

Exit code 0 when every cycle rolled back within 60 s, recorded as platform with the values, and no
request failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import load_promotion as LP  # noqa: E402

KEY = "bench-approver-key-000000000001"
CONSTANT_MODEL = ROOT / "mlops_assets_tests" / "serving" / "constant_model.py"  # P(up) = 0.99 for every row


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_broken_version(prepared: LP.Prepared) -> str:
    """A constant pyfunc with the champion's lineage tags, its gate recorded, approved by the reviewer."""
    import mlflow

    from mlops_assets import stores
    from mlops_assets.models import tags as T
    from mlops_assets.models.gates import record_evaluation
    from mlops_assets.models.promotion import approve
    from mlops_assets.settings import load_settings

    settings = load_settings(env={}, config_path=prepared.config)
    client, store = stores.mlflow_client(settings), stores.governance_store(settings)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    experiment = mlflow.set_experiment(f"{prepared.model}-broken")
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=str(CONSTANT_MODEL), pip_requirements=[])
    tags = dict(client.get_model_version(prepared.model, prepared.versions[0]).tags)
    tags.update({T.TAG_WRAPPER: "pyfunc", T.TAG_TASK_TYPE: "binary", T.TAG_REGISTERED_BY: LP.REGISTERER})
    for key in [k for k in tags if k.startswith(("evaluation.", "approval.", "rejected"))]:
        tags.pop(key)
    version = str(client.create_model_version(prepared.model, source=info.model_uri, run_id=run.info.run_id,
                                              tags=tags, model_id=info.model_id).version)
    record_evaluation(client, store, prepared.model, version, "test_auc", 0.7, 0.5)
    approve(client, store, prepared.model, version, reviewer=LP.REVIEWER, compliance_required=False)
    store.close()
    return version


def configure(prepared: LP.Prepared, poll_seconds: float, check_seconds: float) -> tuple[int, int]:
    import yaml

    config = yaml.safe_load(prepared.config.read_text())
    port, api_port = _port(), _port()
    config["serving"].update(port=port, api_port=api_port, poll_seconds=poll_seconds, access_log=False,
                             api_keys={KEY: {"owner": LP.REVIEWER, "role": "approver"}})
    config["evaluation"].update(canary_check_seconds=check_seconds, canary_min_requests=50,
                                canary_window_seconds=30, canary_hold_seconds=3600)
    prepared.config.write_text(yaml.safe_dump(config))
    return port, api_port


def start_serve(prepared: LP.Prepared, workdir: Path, workers: int, port: int, api_port: int
                ) -> tuple[subprocess.Popen, str, str]:
    import httpx

    prom = workdir / "prometheus"
    prom.mkdir(exist_ok=True)
    env = {**prepared.env, "PROMETHEUS_MULTIPROC_DIR": str(prom)}
    log = workdir / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "mlops_assets.cli", "serve", "--workers", str(workers)],
                            cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url, api = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{api_port}"
    deadline, ready = time.monotonic() + 180, 0
    while time.monotonic() < deadline and ready < 2 * workers:
        if proc.poll() is not None:
            raise RuntimeError(f"mlops serve exited with {proc.returncode}; see {log}")
        try:
            ok = httpx.get(f"{url}/ready", timeout=5).status_code == 200 and \
                httpx.get(f"{api}/health", timeout=5).status_code == 200
            ready = ready + 1 if ok else 0
        except httpx.HTTPError:
            ready = 0
        time.sleep(0.2)
    if ready < 2 * workers:
        LP.stop_serving(proc)
        raise RuntimeError(f"mlops serve did not become ready in 180 s; see {log}")
    return proc, url, api


def cycles(prepared: LP.Prepared, api: str, broken: str, share: float, count: int, started: threading.Event,
           out: list[dict[str, Any]]) -> None:
    import httpx

    from mlops_assets import stores
    from mlops_assets.models.promotion import alias_target
    from mlops_assets.settings import load_settings

    settings = load_settings(env={}, config_path=prepared.config)
    client, store = stores.mlflow_client(settings), stores.governance_store(settings)
    started.wait()
    time.sleep(5)  # steady load first
    for i in range(count):
        began = time.monotonic()
        r = httpx.post(f"{api}/api/v1/ml/lifecycle/models/{prepared.model}/canary", timeout=60,
                       json={"version": broken, "share": share, "reason": f"benchmark cycle {i + 1}"},
                       headers={"X-API-Key": KEY})
        if r.status_code != 201:
            out.append({"cycle": i + 1, "error": f"{r.status_code} {r.text[:300]}"})
            return
        deployment = r.json()["deployment"]
        while alias_target(client, prepared.model, "canary") is not None and time.monotonic() - began < 120:
            time.sleep(0.1)
        seen = time.monotonic() - began
        entry = next((e for e in store.list_audit(limit=10, action="alias.removed")
                      if e.subject_id == f"{prepared.model}/{broken}"
                      and (e.details or {}).get("deployment_id") == deployment["id"]), None)
        row: dict[str, Any] = {"cycle": i + 1, "rollback_s": round(seen, 2), "recorded": entry is not None}
        if entry is not None:
            from datetime import datetime

            row["audit_s"] = round((entry.ts - datetime.fromisoformat(deployment["ts"]).replace(
                tzinfo=entry.ts.tzinfo)).total_seconds(), 2)
            row["actor"] = entry.actor
            row["kind"] = entry.details.get("kind")
            guard = entry.details["guardrails"]
            row["failed"] = guard["failed"]
            row["measured"] = {c["name"]: c["value"] for c in guard["checks"]}
            row["canary_requests"] = guard["window"]["canary_requests"]
        out.append(row)
        time.sleep(5)  # the workers drop the canary at their next poll; then the next cycle
    store.close()


def run(rate: float, share: float, count: int, workers: int, poll_seconds: float, check_seconds: float
        ) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="mlops-canary-"))
    try:
        prepared = LP.prepare(workdir / "home", None, "canary_direction", poll_seconds)
        broken = add_broken_version(prepared)
        port, api_port = configure(prepared, poll_seconds, check_seconds)
        proc, url, api = start_serve(prepared, workdir, workers, port, api_port)
        try:
            done: list[dict[str, Any]] = []
            started = threading.Event()
            driver = threading.Thread(target=cycles, args=(prepared, api, broken, share, count, started, done))
            driver.start()
            duration = 5 + count * 40  # enough for every cycle; wrk stops at the end
            started.set()
            report = LP.run_wrk(url, prepared.symbols, rate, duration, workdir)
            driver.join(timeout=300)
            if proc.poll() is not None:
                report.failed += 1
        finally:
            LP.stop_serving(proc)
        return {"broken_version": broken, "champion": prepared.versions[0], "share": share,
                "poll_seconds": poll_seconds, "check_seconds": check_seconds, "workers": workers,
                "cycles": done, "load": report.to_dict()}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--share", type=float, default=0.1)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--poll-seconds", type=float, default=2.0)
    parser.add_argument("--check-seconds", type=float, default=2.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)")
        return 1
    out = run(args.rate, args.share, args.cycles, args.workers, args.poll_seconds, args.check_seconds)
    rows = [c for c in out["cycles"] if "rollback_s" in c]
    ok = (len(rows) == args.cycles and all(c["rollback_s"] <= 60 and c["recorded"] and c["actor"] == "platform"
                                          for c in rows) and out["load"]["failed"] == 0)
    if args.json:
        print(json.dumps({**out, "ok": ok}, indent=2, default=str))
    else:
        load = out["load"]
        print(f"canary of constant v{out['broken_version']} at {out['share']:.0%} against v{out['champion']}; "
              f"{out['workers']} workers, poll {out['poll_seconds']} s, guardrail check {out['check_seconds']} s")
        for c in out["cycles"]:
            print(f"  cycle {c.get('cycle')}: " + (c["error"] if "error" in c else
                  f"rolled back in {c['rollback_s']:.2f} s (audit {c.get('audit_s')} s) by {c.get('actor')}, "
                  f"failed {c.get('failed')}, measured {c.get('measured')}, canary rows {c.get('canary_requests')}"))
        if rows:
            times = [c["rollback_s"] for c in rows]
            print(f"rollback seconds: min {min(times):.2f}  median {statistics.median(times):.2f}  "
                  f"max {max(times):.2f}  (target <= 60)")
        print(f"wrk: {load['requests']} requests in {load['duration_s']:.0f} s ({load['achieved_rate']:.0f} req/s), "
              f"failed {load['failed']}; p50 {load['p50_ms']:.1f} ms p99 {load['p99_ms']:.1f} ms "
              f"max {load['max_ms']:.0f} ms; versions {load['versions_served']}")
        print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
