"""Crash recovery on a real Dagster instance (SQLite under a temporary DAGSTER_HOME, the project's
``dagster.yaml``): a materialization killed with SIGKILL while it holds the ``duckdb_warehouse`` slot, or
while it waits for it, must not block later runs once the recovery sweep (the ``run_recovery_sensor``,
``mlops doctor --repair``) has run; a live run is never touched.

Each test first shows the finding: after the kill the run stays STARTED, its claim stays, Dagster's own
run monitoring and slot clean-up (one iteration of each, as the daemon runs them) leave both alone, and a
rerun waits "blocked by limit for pool duckdb_warehouse".
"""

from __future__ import annotations

import re

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import psutil
import pytest

from mlops_assets.defs.recovery import Claim, list_claims, process_alive, run_recovery_sensor, sweep
from mlops_assets.defs.resources import WAREHOUSE_POOL
from mlops_assets.settings import PROJECT_ROOT
from mlops_assets_tests.production.helpers import child_env, wait_until, write_config

pytestmark = pytest.mark.xdist_group("production")
WORKER = "mlops_assets_tests.production.crash_worker"
RERUN_TIMEOUT = 180.0  # generous on two shared cores; the figures printed are the measurements


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SimpleNamespace]:
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    env = child_env(MLOPS_HOME=str(tmp_path / "home"), MLOPS_CONFIG=str(write_config(tmp_path / "config.yaml")),
                    DAGSTER_HOME=str(dagster_home), MLFLOW_TRACKING_URI=None, MLOPS_GOVERNANCE_URL=None)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        yield SimpleNamespace(tmp=tmp_path, dagster_home=dagster_home, env=env, instance=instance)


def _worker(site: SimpleNamespace, name: str) -> subprocess.Popen:
    log = site.tmp / f"{name}.log"
    return subprocess.Popen([sys.executable, "-m", WORKER, "--record", str(site.tmp / f"{name}.json")],
                            cwd=PROJECT_ROOT, env=site.env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _claims(instance: dg.DagsterInstance, kind: str | None = None, run_id: str | None = None) -> list[Claim]:
    return [c for c in list_claims(instance) if (kind is None or c.kind == kind)
            and (run_id is None or c.run_id == run_id)]


def _status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def _dagster_monitoring_leaves_it(instance: dg.DagsterInstance, run_id: str) -> None:
    """One iteration of the daemon's run monitoring and of its slot clean-up (free_slots_after_run_end_seconds)
    change nothing: the default run launcher cannot check a run worker, and the run has not ended."""
    from dagster._daemon.monitoring.concurrency import execute_concurrency_slots_iteration
    from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration

    assert instance.run_monitoring_enabled and instance.run_monitoring_settings["free_slots_after_run_end_seconds"]
    assert not instance.run_launcher.supports_check_run_worker_health
    before = [c for c in list_claims(instance) if c.run_id == run_id]
    context = SimpleNamespace(instance=instance, create_request_context=lambda: None)
    logger = logging.getLogger("run_monitoring")
    list(execute_run_monitoring_iteration(context, logger))
    list(execute_concurrency_slots_iteration(context, logger))
    assert _status(instance, run_id) == dg.DagsterRunStatus.STARTED
    assert [c for c in list_claims(instance) if c.run_id == run_id] == before


def _log(site: SimpleNamespace, name: str) -> str:
    path = site.tmp / f"{name}.log"
    return path.read_text()[-3000:] if path.exists() else ""


def test_run_killed_mid_step_holds_the_slot_until_the_recovery_sensor_frees_it(site: SimpleNamespace) -> None:
    instance = site.instance
    crashed = _worker(site, "crashed")
    try:
        slot = wait_until(lambda: _claims(instance, "slot") or crashed.poll() is not None, timeout=120,
                          interval=0.02, what="the worker to claim the warehouse slot")
        assert crashed.poll() is None, _log(site, "crashed")
        _kill(crashed)
    finally:
        if crashed.poll() is None:
            _kill(crashed)
    killed_at = time.monotonic()
    dead = slot[0].run_id
    assert slot[0].pool == WAREHOUSE_POOL and _claims(instance, "slot", dead), "the kill landed outside a step"

    # the finding: the run stays STARTED with its slot; Dagster's own monitoring leaves it; a rerun is blocked
    assert _status(instance, dead) == dg.DagsterRunStatus.STARTED
    _dagster_monitoring_leaves_it(instance, dead)
    report = sweep(instance, repair=False)
    assert report.state(dead).verdict == "dead" and [c.run_id for c in report.stuck_claims] == [dead]
    rerun = _worker(site, "rerun")
    try:
        blocked = wait_until(lambda: [c for c in _claims(instance, "pending") if c.run_id != dead], timeout=120,
                             what="the rerun to queue for the pool")
        rerun_id = blocked[0].run_id
        time.sleep(3.0)  # it stays queued behind the dead run's slot
        assert rerun.poll() is None and _claims(instance, "pending", rerun_id) and not _claims(instance, "slot", rerun_id)
        assert _claims(instance, "slot", dead)

        # one tick of the sensor: the dead run is failed, its slot freed; the queued rerun goes on, green
        result = run_recovery_sensor(dg.build_sensor_context(instance=instance))
        repaired_at = time.monotonic()
        assert f"reported run {dead} failed" in result.skip_message and "freed 1 claim" in result.skip_message
        assert _status(instance, dead) == dg.DagsterRunStatus.FAILURE and not _claims(instance, run_id=dead)
        assert _status(instance, rerun_id) == dg.DagsterRunStatus.STARTED, "the live rerun was touched"
        assert rerun.wait(timeout=RERUN_TIMEOUT) == 0, _log(site, "rerun")
        green_at = time.monotonic()
    finally:
        if rerun.poll() is None:
            _kill(rerun)
    assert _status(instance, rerun_id) == dg.DagsterRunStatus.SUCCESS
    assert not list_claims(instance) and sweep(instance, repair=False).healthy
    messages = [r.event_log_entry.dagster_event.message or "" for r in instance.get_records_for_run(dead).records
                if r.event_log_entry.dagster_event is not None]
    assert any("run_recovery" in m and "none of its processes runs" in m for m in messages), messages[-3:]
    print(f"\nkill -> repaired {repaired_at - killed_at:.1f}s (includes 3 s showing the rerun blocked); "
          f"repair -> rerun green {green_at - repaired_at:.1f}s; kill -> green {green_at - killed_at:.1f}s")


@dg.op(pool=WAREHOUSE_POOL)
def hold_warehouse(context) -> None:  # no hint: dagster reads it, and annotations are strings here
    gate = GATES[context.run.tags["gate"]]
    assert gate.wait(timeout=150), "the test never released the gate"


@dg.job
def holder_job() -> None:
    hold_warehouse()


GATES: dict[str, threading.Event] = {}


def _live_run(site: SimpleNamespace, name: str) -> threading.Thread:
    """A live run in this process (a thread) that claims the warehouse pool and holds it until released."""
    GATES[name] = threading.Event()

    def run() -> None:
        with dg.DagsterInstance.from_config(str(site.dagster_home)) as instance:
            holder_job.execute_in_process(instance=instance, tags={"gate": name}, raise_on_error=False)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def _run_of(instance: dg.DagsterInstance, gate: str) -> str | None:
    records = instance.get_run_records(filters=dg.RunsFilter(job_name="holder_job", tags={"gate": gate}))
    return records[0].dagster_run.run_id if records else None


def _mlops(site: SimpleNamespace, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlops_assets.cli", *args], check=False, cwd=PROJECT_ROOT, env=site.env,
                          capture_output=True, text=True, timeout=120)


def test_run_killed_while_queued_blocks_the_pool_until_doctor_repairs_it(site: SimpleNamespace) -> None:
    instance = site.instance
    first = _live_run(site, "first")
    first_id = wait_until(lambda: _run_of(instance, "first"), timeout=60, what="the first live run")
    wait_until(lambda: _claims(instance, "slot", first_id), timeout=60, what="the first live run's slot")
    crashed = _worker(site, "queued")
    second = None
    try:
        queued = wait_until(lambda: [c for c in _claims(instance, "pending") if c.run_id != first_id]
                            or crashed.poll() is not None, timeout=120, what="the worker to queue for the pool")
        assert crashed.poll() is None, _log(site, "queued")
        _kill(crashed)
        dead = queued[0].run_id
        second = _live_run(site, "second")  # a live run queued behind the dead one
        second_id = wait_until(lambda: _run_of(instance, "second"), timeout=60, what="the second live run")
        wait_until(lambda: _claims(instance, "pending", second_id), timeout=60, what="the second run to queue")
        GATES["first"].set()  # the slot goes to the oldest queued step: the dead run's, which never takes it
        first.join(timeout=120)
        assert _status(instance, first_id) == dg.DagsterRunStatus.SUCCESS
        # Dagster hands the freed slot to the oldest queued step, the dead run's, which never takes it; when the
        # hand-over has not happened yet the dead run's claim is still pending. Either way it is stuck.
        try:
            wait_until(lambda: _claims(instance, "assigned", dead), timeout=60, what="the slot assigned to the dead run")
        except AssertionError:
            assert _claims(instance, "pending", dead), "the dead run's claim is neither assigned nor pending"
        kind = "assigned" if _claims(instance, "assigned", dead) else "pending"
        _dagster_monitoring_leaves_it(instance, dead)
        time.sleep(2.0)
        assert _claims(instance, run_id=dead), "the dead run holds no claim"
        if kind == "assigned":
            assert _claims(instance, "pending", second_id) and not _claims(instance, "slot"), "the pool is not blocked"

        # doctor names the stuck claim and fails; --repair fails the dead run and frees it, the live run untouched
        shown = _mlops(site, "doctor")
        assert shown.returncode != 0, shown.stdout
        assert re.search(rf"STUCK pool {WAREHOUSE_POOL}: (assigned|pending) of run {dead}", shown.stdout), shown.stdout
        assert f"of run {second_id}" in shown.stdout and "alive" in shown.stdout
        assert "mlops doctor --repair" in shown.stderr, shown.stderr
        assert _status(instance, dead) == dg.DagsterRunStatus.STARTED, "doctor without --repair changed a run"
        repaired = _mlops(site, "doctor", "--repair")
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert f"repaired: reported run {dead} failed" in repaired.stdout and "ok: no stuck" in repaired.stdout
        assert _status(instance, dead) == dg.DagsterRunStatus.FAILURE and not _claims(instance, run_id=dead)
        wait_until(lambda: _claims(instance, "slot", second_id), timeout=60, what="the live run to get the slot")
        assert _status(instance, second_id) == dg.DagsterRunStatus.STARTED
        GATES["second"].set()
        second.join(timeout=60)
        assert _status(instance, second_id) == dg.DagsterRunStatus.SUCCESS
    finally:
        for gate in GATES.values():
            gate.set()
        if crashed.poll() is None:
            _kill(crashed)
    rerun = _worker(site, "rerun")
    assert rerun.wait(timeout=RERUN_TIMEOUT) == 0, _log(site, "rerun")
    assert _mlops(site, "doctor").returncode == 0


def test_a_pid_reused_by_a_later_process_is_not_the_runs_process() -> None:
    me = psutil.Process()
    assert process_alive(me.pid, seen_at=time.time())
    assert not process_alive(me.pid, seen_at=me.create_time() - 60)  # the event predates this process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not process_alive(child.pid, seen_at=time.time())


KILLED_IN_STEP = """
import os, signal, dagster as dg

@dg.op(pool="duckdb_warehouse")
def write():
    os.kill(os.getpid(), signal.SIGKILL)

@dg.job
def killed_job():
    write()

killed_job.execute_in_process(instance=dg.DagsterInstance.get())
"""


def test_mlops_init_fails_a_run_killed_in_its_step_and_frees_its_slot(site: SimpleNamespace) -> None:
    from mlops_assets.definitions import defs

    sensor = defs.resolve_sensor_def("run_recovery_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_STEP], check=False, cwd=PROJECT_ROOT, env=site.env,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    [slot] = _claims(site.instance, "slot")
    assert _status(site.instance, slot.run_id) == dg.DagsterRunStatus.STARTED
    init = _mlops(site, "init")
    assert init.returncode == 0, init.stderr
    assert f"recovery: reported run {slot.run_id} failed" in init.stdout and "freed 1 claim" in init.stdout
    assert _status(site.instance, slot.run_id) == dg.DagsterRunStatus.FAILURE and not list_claims(site.instance)
