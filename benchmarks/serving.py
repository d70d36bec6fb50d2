"""Serving benchmark: this inference app against ``mlflow models serve`` on the same pyfunc model.

What it does, end to end, in a temporary ``MLOPS_HOME`` (nothing is downloaded):

1. trains a small Lightning MLP on a planted-signal frame, registers it as ``production`` and
   publishes an online feature snapshot;
2. starts ``uvicorn serving.inference.main:app``, ``mlflow models serve --env-manager local`` and a
   do-nothing ASGI app (the machine's floor), one worker each, pinned to core 0 (``taskset -c 0``);
3. drives them with Debian's ``wrk`` pinned to core 1, alternating: single rows and batches of 100
   at concurrency 8 and 32; then, once ours has written the log backlog of those saturating runs
   (at most ``--idle`` s), the enriched request (``{"symbol": ...}``) at concurrency 1 against the floor;
4. prints req/s, p50, p99 and CPU time per request (all the server's processes, from /proc: robust
   to other load), the ratios, and checks the targets: >= 5x mlflow's req/s and >= 4,000 req/s for
   single rows; at concurrency 1 a p99 within 1.5x the floor's in the same rounds.
   Shadow scoring is on (``--no-shadow`` turns it off): a ``challenger`` version is scored on every
   logged request by the prediction-log writer process; shadow rows per served row are counted right
   after the saturating runs, after the idle period (the writer's catch-up) and after shutdown.

    python benchmarks/serving.py [--duration 5] [--rounds 2] [--features 12] [--symbols 500]

Exit code 0 when the targets are met, 1 otherwise. Other processes running on the same cores
skew the figures; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODEL = "bench_direction"
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


# --- set-up ------------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing it with apt-get (running as root) ...", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
    found = shutil.which("wrk")
    if not found:
        sys.exit("wrk is required: apt-get install -y wrk")
    return found


def planted_frame(n_symbols: int, n_days: int, n_features: int, seed: int = 0):
    """symbol, date, f0..fk, label, fwd_return, split (by date: 70/15/15)."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    n = n_symbols * n_days
    x = rng.normal(size=(n, n_features))
    logit = 1.5 * x[:, 0] - x[:, 1] + 0.7 * x[:, 2] * x[:, 3]
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int32)
    day = np.arange(n) // n_symbols
    frac = day / max(day.max(), 1)
    return pl.DataFrame({
        "symbol": [f"S{i:04d}" for i in np.arange(n) % n_symbols],
        "date": pl.Series([dt.date(2020, 1, 1) + dt.timedelta(days=int(d)) for d in day], dtype=pl.Date),
        **{f"f{i}": x[:, i] for i in range(n_features)},
        "label": pl.Series(label, dtype=pl.Int32),
        "fwd_return": 0.01 * logit,
        "split": np.where(frac < 0.7, "train", np.where(frac < 0.85, "validation", "test")),
    })


def prepare_home(home: Path, n_features: int, n_symbols: int,
                 shadow: bool = True) -> tuple[dict[str, str], list[str], list[str]]:
    """Train + register + alias + snapshot; returns (env for the servers, features, symbols). With
    ``shadow`` the same model is registered again as the ``challenger`` version, which the prediction-log
    writer process scores every request with (``serving.shadow_alias``), off the request path."""
    import mlflow
    import polars as pl
    import yaml

    from mlops_assets.features.online import write_online_snapshot
    from mlops_assets.features.views import FeatureDef, FeatureView
    from mlops_assets.models.registration import train_and_register
    from mlops_assets.settings import load_settings

    config = home / "config.yaml"
    config.write_text(yaml.safe_dump({"home": str(home), "model": {"name": MODEL, "stage": "production"},
                                      "serving": {"shadow_alias": "challenger" if shadow else ""}}))
    settings = load_settings(env={}, config_path=config)
    settings.ensure_dirs()
    data = planted_frame(n_symbols, max(40, 6000 // n_symbols), n_features)
    features = [f"f{i}" for i in range(n_features)]
    registered = train_and_register(
        data, features, {"hidden_sizes": (32, 16), "max_epochs": 3, "batch_size": 256},
        settings.mlflow_tracking_uri, "bench", MODEL,
        {"registered_by": "benchmark", "feature_views": {"bench_view": "1.0.0"}},
        artifact_location=str(settings.artifacts_dir))
    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    client.set_registered_model_alias(MODEL, "production", registered.version)
    if shadow:
        challenger = client.create_model_version(
            MODEL, source=registered.logged_model_uri, run_id=registered.run_id,
            tags=client.get_model_version(MODEL, registered.version).tags,
            model_id=registered.logged_model_uri.split("/")[-1])
        client.set_registered_model_alias(MODEL, "challenger", challenger.version)
    view = FeatureView(name="bench_view", version="1.0.0", owner="team:bench",
                       description="benchmark features",
                       features=tuple(FeatureDef(f, pl.col("close") * i, f"bench feature {f}")
                                     for i, f in enumerate(features)))
    write_online_snapshot([data.select("symbol", "date", *features)], [view], settings.online_dir)
    env = {**os.environ, "MLOPS_CONFIG": str(config), "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
           "PYTHONPATH": str(ROOT), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    symbols = sorted(set(data["symbol"].to_list()))
    return env, features, symbols


# --- servers and load ----------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on now (the OS picks it)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refuse_if_taken(url: str) -> None:
    """Stop with a clear message when something already answers on ``url``: it would be benchmarked
    instead of the server this script starts."""
    import httpx

    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return
    sys.exit(f"something already listens on {url}; stop it or let the benchmark pick another port")


def start_server(cmd: list[str], env: dict[str, str], url: str, log: Path,
                 ready_path: str) -> subprocess.Popen:
    import httpx

    refuse_if_taken(url)

    proc = subprocess.Popen(["taskset", "-c", "0", *cmd], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, cwd=str(ROOT), start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{cmd[0]} exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(url + ready_path, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    sys.exit(f"{' '.join(cmd)} did not become ready in 180 s; see {log}")


def stop_server(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float  # server CPU time per request (all its processes), robust to other load on the machine


def group_cpu_seconds(pgid: int) -> float:
    """user + system CPU seconds of every live process in process group ``pgid`` (Linux /proc)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * UNITS[unit]


def run_wrk(wrk: str, url: str, body: str, connections: int, duration: int, workdir: Path,
            pgid: int) -> Result:
    script = workdir / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = {json.dumps(body)}\n")
    cpu_before = group_cpu_seconds(pgid)
    out = subprocess.run(["taskset", "-c", "1", wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    cpu = group_cpu_seconds(pgid) - cpu_before
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return Result(rps, p50, p99, errors, 1e6 * cpu / max(requests, 1))


NOOP_APP = '''
async def app(scope, receive, send):  # answers every request with {} (the machine's latency floor)
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})
'''


def bodies(features: list[str], symbol: str, batch: int) -> dict[str, str]:
    import numpy as np

    rng = np.random.default_rng(1)
    rows = rng.normal(size=(batch, len(features))).round(6).tolist()
    ours_rows = [{"features": dict(zip(features, r))} for r in rows]
    return {
        "ours_single": json.dumps(ours_rows[0]),
        "mlflow_single": json.dumps({"dataframe_split": {"columns": features, "data": rows[:1]}}),
        "ours_batch": json.dumps({"instances": ours_rows}),
        "mlflow_batch": json.dumps({"dataframe_split": {"columns": features, "data": rows}}),
        "ours_enriched": json.dumps({"symbol": symbol}),
    }


def check_same_answer(ours: str, theirs: str, b: dict[str, str]) -> float:
    import httpx

    p_ours = httpx.post(ours, content=b["ours_single"], headers={"content-type": "application/json"}).json()
    p_theirs = httpx.post(theirs, content=b["mlflow_single"],
                          headers={"content-type": "application/json"}).json()
    return abs(p_ours["probabilities"][0] - p_theirs["predictions"][0]["probability"])


def shadow_counts(log_dir: Path, wait: float = 0.0, shadowed: bool = True) -> tuple[dict[str, int], float]:
    """Rows in the closed served and shadow segments and the seconds waited: with ``wait``, polled while
    the servers idle until the served rows stop growing and (``shadowed``) the writer has caught up on
    the segments without shadow rows."""
    import polars as pl

    from mlops_assets.monitoring.served import SEGMENT_PREFIX, SHADOW_PREFIX, list_closed_segments

    def rows(prefix: str) -> int:
        paths = list_closed_segments(log_dir, prefix)
        return pl.scan_parquet(paths).select(pl.len()).collect().item() if paths else 0

    started, last = time.monotonic(), None
    while True:
        counts, waited = {"served": rows(SEGMENT_PREFIX), "shadow": rows(SHADOW_PREFIX)}, time.monotonic() - started
        # done when the served rows stopped growing (the worker's backlog is written) and all have shadow rows
        if (counts == last and counts["shadow"] >= counts["served"] * shadowed) or waited >= wait:
            return counts, waited
        last = counts
        time.sleep(2.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per scenario")
    parser.add_argument("--features", type=int, default=12)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--keep", action="store_true", help="keep the temporary MLOPS_HOME")
    parser.add_argument("--no-shadow", dest="shadow", action="store_false",
                        help="turn shadow scoring off (on by default: a challenger scored in the writer process)")
    parser.add_argument("--idle", type=float, default=30.0,
                        help="after the load, wait up to this many seconds for shadow catch-up (0: do not wait)")
    args = parser.parse_args()
    wrk = ensure_wrk()
    home = Path(tempfile.mkdtemp(prefix="mlops-bench-serving-"))
    procs: list[subprocess.Popen] = []
    try:
        print(f"preparing a model and a snapshot in {home} ...", flush=True)
        env, features, symbols = prepare_home(home, args.features, args.symbols, args.shadow)
        ours_port, theirs_port, noop_port = free_port(), free_port(), free_port()
        print(f"ports (picked free): ours {ours_port}, mlflow {theirs_port}, do-nothing app {noop_port}")
        ours_url, theirs_url = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{theirs_port}"
        ours_cmd = [sys.executable, "-m", "uvicorn", "serving.inference.main:app",
                    "--host", "127.0.0.1", "--port", str(ours_port), "--workers", "1"]
        procs.append(start_server(ours_cmd, env, ours_url, home / "ours.log", "/ready"))
        theirs_cmd = ["mlflow", "models", "serve", "--env-manager", "local",
                      "-m", f"models:/{MODEL}@production", "-h", "127.0.0.1", "-p", str(theirs_port), "-w", "1"]
        procs.append(start_server(theirs_cmd, env, theirs_url, home / "mlflow.log", "/health"))
        (home / "noop_app.py").write_text(NOOP_APP)
        noop_url = f"http://127.0.0.1:{noop_port}"
        noop_cmd = [sys.executable, "-m", "uvicorn", "noop_app:app", "--port", str(noop_port)]
        procs.append(start_server(noop_cmd, {**env, "PYTHONPATH": str(home)}, noop_url, home / "noop.log", "/"))
        b = bodies(features, symbols[0], args.batch)
        diff = check_same_answer(ours_url + "/predict", theirs_url + "/invocations", b)
        print(f"same model, same answer: |P(up) ours - mlflow| = {diff:.2e}")
        rows = []
        for kind in ("single", "batch"):
            for conns in (8, 32):
                ours, theirs = [], []
                for _ in range(args.rounds):  # alternate the servers
                    ours.append(run_wrk(wrk, ours_url + "/predict", b[f"ours_{kind}"], conns, args.duration,
                                        home, procs[0].pid))
                    theirs.append(run_wrk(wrk, theirs_url + "/invocations", b[f"mlflow_{kind}"], conns,
                                          args.duration, home, procs[1].pid))
                rows.append((kind, conns, ours, theirs))
        # the saturating runs leave the worker a backlog of log rows to write (and the writer shadow rows
        # to catch up on): idle until it is done, so the latency runs below measure a settled server
        after_load, _ = shadow_counts(home / "serving")
        after_idle, idled = shadow_counts(home / "serving", args.idle, shadowed=args.shadow)
        enriched, floor = [], []
        for _ in range(args.rounds):  # alternate ours and the do-nothing app (both on core 0, as settled)
            enriched.append(run_wrk(wrk, ours_url + "/predict", b["ours_enriched"], 1, args.duration, home,
                                    procs[0].pid))
            floor.append(run_wrk(wrk, noop_url + "/", b["ours_enriched"], 1, args.duration, home, procs[2].pid))
        for proc in procs:
            stop_server(proc)
        procs.clear()
        logged, _ = shadow_counts(home / "serving")
    finally:
        for proc in procs:
            stop_server(proc)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)

    def med(results: list[Result], attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in results)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nload average (1/5/15 min) at the end: {load}; on a busy machine compare the server CPU time "
          "per request (us/req) rather than req/s")
    print(f"\n{'input':<16}{'conc':>5} | {'ours req/s':>11}{'p50 ms':>8}{'p99 ms':>8}{'us/req':>8} | "
          f"{'mlflow req/s':>13}{'p50 ms':>8}{'p99 ms':>8}{'us/req':>8} | {'ratio':>6}{'cpu ratio':>10}")
    ok = True
    for kind, conns, ours, theirs in rows:
        label = "single row" if kind == "single" else f"batch of {args.batch}"
        ratio = med(ours, "rps") / max(med(theirs, "rps"), 1e-9)
        errors = sum(r.errors for r in ours)
        cpu_ratio = med(theirs, "cpu_us") / max(med(ours, "cpu_us"), 1e-9)
        print(f"{label:<16}{conns:>5} | {med(ours, 'rps'):>11.0f}{med(ours, 'p50_ms'):>8.2f}"
              f"{med(ours, 'p99_ms'):>8.2f}{med(ours, 'cpu_us'):>8.0f} | {med(theirs, 'rps'):>13.0f}"
              f"{med(theirs, 'p50_ms'):>8.2f}{med(theirs, 'p99_ms'):>8.2f}{med(theirs, 'cpu_us'):>8.0f} | "
              f"{ratio:>5.1f}x{cpu_ratio:>9.1f}x" + (f"  ({errors} errors)" if errors else ""))
        if kind == "single":
            ok &= ratio >= 5.0 and med(ours, "rps") >= 4000 and errors == 0
    p99_c1 = med(enriched, "p99_ms")
    print(f"\nenriched single row ({{\"symbol\": ...}}) at concurrency 1: {med(enriched, 'rps'):.0f} req/s, "
          f"p50 {med(enriched, 'p50_ms'):.3f} ms, p99 {p99_c1:.3f} ms, "
          f"{med(enriched, 'cpu_us'):.0f} us CPU/req")
    print(f"same load against a do-nothing ASGI app on uvicorn (the machine's floor now): "
          f"p50 {med(floor, 'p50_ms'):.3f} ms, p99 {med(floor, 'p99_ms'):.3f} ms")
    spread = ", ".join(f"{r.p99_ms:.3f}" for r in enriched)
    floor_spread = ", ".join(f"{r.p99_ms:.3f}" for r in floor)
    p99_floor = med(floor, "p99_ms")
    print(f"p99 per round: ours {spread} ms; floor {floor_spread} ms; ours / floor = "
          f"{p99_c1 / max(p99_floor, 1e-9):.2f}x")
    cover = [f"{c['shadow']}/{c['served']} ({c['shadow'] / max(c['served'], 1):.0%})"
             for c in (after_load, after_idle, logged)]
    print(f"shadow scoring {'on' if args.shadow else 'off'}: shadow rows / served rows right after the saturating "
          f"runs {cover[0]}, after {idled:.0f} s idle (catch-up) {cover[1]}, after shutdown {cover[2]}")
    ok &= p99_c1 <= 1.5 * p99_floor
    print(f"\ntargets (single rows >= 5x mlflow and >= 4,000 req/s; c=1 enriched p99 <= 1.5x the do-nothing "
          f"floor's p99 of the same run): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
