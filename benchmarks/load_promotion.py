"""Load test: the inference app under a steady request rate while the model is promoted again and again.

What it does, in a temporary ``MLOPS_HOME`` (nothing is downloaded; loopback only):

1. trains two small versions of a model on a planted-signal frame, tags them through the evaluation gate,
   has a reviewer approve both in the governance store, promotes the first and publishes an online
   feature snapshot;
2. starts ``uvicorn serving.inference.main:app --workers 2`` with a short poll interval;
3. holds it at ``--rate`` requests/s for ``--duration`` seconds (``{"symbol": ...}`` bodies, features
   from the online snapshot) with Debian's ``wrk`` and a Lua script (each connection paces itself),
   or with a Python asyncio client at a fixed rate when wrk is missing (``--client python``);
4. meanwhile promotes the model ``--promotions`` times, alternating the two versions, through
   ``mlops_assets.models.promotion.promote`` (the function the Dagster job and the CLI call);
5. prints total and failed requests (failed must be 0: a swap never fails or drops a request), the
   achieved rate, latency p50/p95/p99/max, the versions served, and each promotion's time.

    python benchmarks/load_promotion.py [--rate 500] [--duration 60] [--promotions 10]
                                        [--workers 2] [--client auto|wrk|python] [--json]

Exit code 0 when no request failed and both versions were served, 1 otherwise. ``run_load_test``
is the same thing as a function (the test suite runs a 10-second version).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
MODEL = "load_direction"
VIEW, VIEW_VERSION = "load_view", "1.0.0"
REGISTERER, REVIEWER = "load-benchmark", "load-reviewer"

WRK_SCRIPT = r"""
-- POST /predict at a paced rate; counts statuses and served versions per thread, merged in done().
local symbols = {%(symbols)s}
local pause_ms = %(pause_ms)d
local threads = {}
local counter = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  versions = {}
  bad = 0
end

function request()
  counter = counter + 1
  local body = '{"symbol":"' .. symbols[(counter %% #symbols) + 1] .. '"}'
  return wrk.format("POST", "/predict", {["Content-Type"] = "application/json"}, body)
end

function delay()
  return pause_ms
end

function response(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
  else
    local v = string.match(body, '"model_version":"([^"]*)"')
    if v then versions[v] = (versions[v] or 0) + 1 end
  end
end

function done(summary, latency, requests)
  local merged, non200 = {}, 0
  for _, t in ipairs(threads) do
    non200 = non200 + t:get("bad")
    for v, n in pairs(t:get("versions")) do merged[v] = (merged[v] or 0) + n end
  end
  local parts = {}
  for v, n in pairs(merged) do table.insert(parts, string.format('"%%s":%%d', v, n)) end
  local e = summary.errors
  io.write(string.format('RESULT {"requests":%%d,"duration_us":%%d,"non200":%%d,"socket_errors":%%d,' ..
    '"p50_us":%%d,"p95_us":%%d,"p99_us":%%d,"max_us":%%d,"versions":{%%s}}\n',
    summary.requests, summary.duration, non200, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    table.concat(parts, ",")))
end
"""


@dataclass
class LoadReport:
    client: str
    target_rate: float
    duration_s: float
    requests: int
    failed: int
    achieved_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    versions_served: dict[str, int]
    promotions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.requests > 0 and len(self.versions_served) >= 2

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


# --- set-up --------------------------------------------------------------------------------------------


def planted_frame(n_symbols: int, n_days: int, n_features: int, seed: int = 0) -> Any:
    """symbol, date, f0..fk, label, fwd_return, split (by date 70/15/15): the training-dataset contract."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    n = n_symbols * n_days
    x = rng.normal(size=(n, n_features))
    logit = 1.5 * x[:, 0] - x[:, 1]
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int32)
    day = np.arange(n) // n_symbols
    frac = day / max(day.max(), 1)
    return pl.DataFrame({
        "symbol": [f"S{i:04d}" for i in np.arange(n) % n_symbols],
        "date": pl.Series([dt.date(2021, 1, 1) + dt.timedelta(days=int(d)) for d in day], dtype=pl.Date),
        **{f"f{i}": x[:, i] for i in range(n_features)},
        "label": pl.Series(label, dtype=pl.Int32),
        "fwd_return": 0.01 * logit,
        "split": np.where(frac < 0.7, "train", np.where(frac < 0.85, "validation", "test")),
    })


@dataclass
class Prepared:
    config: Path
    env: dict[str, str]
    model: str
    versions: tuple[str, str]
    symbols: list[str]


def prepare(home: Path, tracking_uri: str | None = None, model: str = MODEL, poll_seconds: float = 0.5,
            n_symbols: int = 50, n_features: int = 6) -> Prepared:
    """Two registered, gated and approved versions, the first in production, and an online snapshot."""
    import polars as pl
    import yaml

    from mlops_assets import stores
    from mlops_assets.features.online import write_online_snapshot
    from mlops_assets.features.views import FeatureDef, FeatureView
    from mlops_assets.models.promotion import approve, promote
    from mlops_assets.models.registration import apply_gate, train_and_register
    from mlops_assets.settings import load_settings

    config = home / "config.yaml"
    values: dict[str, Any] = {
        "home": str(home),
        "model": {"name": model, "experiment_name": f"{model}-load", "stage": "production"},
        "evaluation": {"compliance_required": False},
        "serving": {"poll_seconds": poll_seconds, "access_log": True},
    }
    if tracking_uri:
        values["tracking_uri"] = tracking_uri
    home.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(values))
    settings = load_settings(env={}, config_path=config)
    settings.ensure_dirs()
    data = planted_frame(n_symbols, 40, n_features)
    features = [f"f{i}" for i in range(n_features)]
    lineage = {"registered_by": REGISTERER, "feature_views": {VIEW: VIEW_VERSION}}
    location = str(settings.artifacts_dir) if settings.mlflow_tracking_uri.startswith("sqlite") else None
    client, store = stores.mlflow_client(settings), stores.governance_store(settings)
    versions = []
    for seed, hidden in ((0, (8,)), (1, (4,))):
        registered = train_and_register(
            data, features, {"hidden_sizes": hidden, "max_epochs": 1, "batch_size": 256, "seed": seed},
            settings.mlflow_tracking_uri, f"{model}-load", model, lineage, artifact_location=location)
        apply_gate(client, model, registered.version, "test_auc", registered.metrics.get("test_auc"), 0.0,
                   store=store)
        approve(client, store, model, registered.version, reviewer=REVIEWER, compliance_required=False)
        versions.append(str(registered.version))
    promote(client, store, model, versions[0], alias="production", actor=REVIEWER, reason="load test start",
            compliance_required=False)
    store.close()
    view = FeatureView(name=VIEW, version=VIEW_VERSION, owner="team:bench", description="load-test features",
                       features=tuple(FeatureDef(f, pl.col("close") * i, f"load feature {f}")
                                     for i, f in enumerate(features)))
    write_online_snapshot([data.select("symbol", "date", *features)], [view], settings.online_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLOPS_HOME")}
    env.update(MLOPS_CONFIG=str(config), MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false", PYTHONUNBUFFERED="1")
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_MODEL_NAME", "MLFLOW_MODEL_STAGE", "MLOPS_GOVERNANCE_URL"):
        env.pop(var, None)  # the config file says where everything is
    return Prepared(config, env, model, (versions[0], versions[1]), sorted(set(data["symbol"].to_list())))


# --- the server and the promotions -----------------------------------------------------------------------


def start_serving(prepared: Prepared, workdir: Path, workers: int) -> tuple[subprocess.Popen, str]:
    import httpx

    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prom = workdir / "prometheus"
    prom.mkdir(exist_ok=True)
    env = {**prepared.env, "PROMETHEUS_MULTIPROC_DIR": str(prom)}
    log = workdir / "serving.log"
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "serving.inference.main:app",
                             "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
                            cwd=ROOT, env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline, ready = time.monotonic() + 180, 0
    while time.monotonic() < deadline and ready < 2 * workers:  # several ready answers: every worker loaded
        if proc.poll() is not None:
            raise RuntimeError(f"the inference app exited with {proc.returncode}; see {log}")
        try:
            with httpx.Client(timeout=5) as fresh:
                ready = ready + 1 if fresh.get(f"{url}/ready").status_code == 200 else 0
        except httpx.HTTPError:
            ready = 0
        time.sleep(0.2)
    if ready < 2 * workers:
        stop_serving(proc)
        raise RuntimeError(f"the inference app did not become ready in 180 s; see {log}")
    return proc, url


def stop_serving(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def promote_during(prepared: Prepared, duration_s: float, count: int, started: threading.Event,
                   out: list[dict[str, Any]]) -> None:
    """``count`` promotions spread evenly over the run, alternating the two versions."""
    from mlops_assets import stores
    from mlops_assets.models.promotion import promote
    from mlops_assets.settings import load_settings

    settings = load_settings(env={}, config_path=prepared.config)
    client, store = stores.mlflow_client(settings), stores.governance_store(settings)
    started.wait()
    t0 = time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, t0 + duration_s * (i + 1) / (count + 1) - time.monotonic()))
        version = prepared.versions[(i + 1) % 2]
        began = time.monotonic()
        deployment = promote(client, store, prepared.model, version, alias="production", actor=REVIEWER,
                             reason=f"load test promotion {i + 1}", compliance_required=False)
        out.append({"at_s": round(began - t0, 2), "version": version, "deployment": deployment.id,
                    "seconds": round(time.monotonic() - began, 3)})
    store.close()


# --- the load clients ----------------------------------------------------------------------------------


def run_wrk(url: str, symbols: list[str], rate: float, duration_s: float, workdir: Path,
            connections: int = 16, threads: int = 2) -> LoadReport:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk); or use --client python")
    pause_ms = max(1, int(round(connections * 1000.0 / rate)) - 1)  # about 1 ms of service time per request
    script = workdir / "load.lua"
    script.write_text(WRK_SCRIPT % {"symbols": ", ".join(f'"{s}"' for s in symbols), "pause_ms": pause_ms})
    args = [wrk, f"-t{threads}", f"-c{connections}", f"-d{int(round(duration_s))}s", "--timeout", "10s",
            "-s", str(script), url]
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration_s + 120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    r = json.loads(line[len("RESULT "):])
    seconds = r["duration_us"] / 1e6
    return LoadReport("wrk", rate, seconds, r["requests"], r["non200"] + r["socket_errors"],
                      r["requests"] / seconds, r["p50_us"] / 1e3, r["p95_us"] / 1e3, r["p99_us"] / 1e3,
                      r["max_us"] / 1e3, r["versions"])


async def _python_load(url: str, symbols: list[str], rate: float, duration_s: float) -> LoadReport:
    import httpx
    import numpy as np

    latencies: list[float] = []
    failed, versions = 0, {}
    interval, tasks = 1.0 / rate, []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:
        async def one(i: int) -> None:
            nonlocal failed
            began = time.perf_counter()
            try:
                r = await client.post("/predict", json={"symbol": symbols[i % len(symbols)]})
            except httpx.HTTPError:
                failed += 1
                return
            latencies.append(time.perf_counter() - began)
            if r.status_code != 200:
                failed += 1
            else:
                v = r.json()["model_version"]
                versions[v] = versions.get(v, 0) + 1

        t0 = time.perf_counter()
        for i in range(int(rate * duration_s)):
            await asyncio.sleep(max(0.0, t0 + i * interval - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - t0
    ms = np.array(latencies) * 1e3 if latencies else np.zeros(1)
    return LoadReport("python", rate, seconds, len(tasks), failed, len(tasks) / seconds,
                      *(float(np.percentile(ms, q)) for q in (50, 95, 99)), float(ms.max()), versions)


def run_load_test(rate: float = 500.0, duration_s: float = 60.0, promotions: int = 10, workers: int = 2,
                  client: str = "auto", tracking_uri: str | None = None, model: str = MODEL,
                  workdir: Path | None = None, poll_seconds: float = 0.5) -> LoadReport:
    """Set up, serve, load and promote; returns the report (see the module docstring)."""
    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="mlops-load-")) if own else workdir
    try:
        prepared = prepare(workdir / "home", tracking_uri, model, poll_seconds)
        proc, url = start_serving(prepared, workdir, workers)
        try:
            done: list[dict[str, Any]] = []
            started = threading.Event()
            promoter = threading.Thread(target=promote_during,
                                        args=(prepared, duration_s, promotions, started, done))
            promoter.start()
            use = client if client != "auto" else ("wrk" if shutil.which("wrk") else "python")
            started.set()
            report = (run_wrk(url, prepared.symbols, rate, duration_s, workdir) if use == "wrk"
                      else asyncio.run(_python_load(url, prepared.symbols, rate, duration_s)))
            promoter.join(timeout=120)
            report.promotions = done
            if proc.poll() is not None:
                report.failed += 1  # the server died
            return report
        finally:
            stop_serving(proc)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second (loopback only)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--promotions", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--tracking-uri", default=None,
                        help="an MLflow server (default: SQLite in the temp home)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = run_load_test(args.rate, args.duration, args.promotions, args.workers, args.client,
                           args.tracking_uri)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"client {report.client}: {report.requests} requests in {report.duration_s:.1f} s "
              f"({report.achieved_rate:.0f} req/s, target {report.target_rate:.0f}), failed {report.failed}")
        print(f"latency p50 {report.p50_ms:.2f} ms  p95 {report.p95_ms:.2f} ms  p99 {report.p99_ms:.2f} ms  "
              f"max {report.max_ms:.1f} ms")
        print(f"versions served: {report.versions_served}")
        for p in report.promotions:
            print(f"  promotion at {p['at_s']:>6.2f} s -> v{p['version']} ({p['seconds'] * 1000:.0f} ms)")
        print("OK" if report.ok else "FAILED: requests failed or a version was never served")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
