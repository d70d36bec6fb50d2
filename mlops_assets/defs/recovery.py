"""Crash recovery: runs whose process died, and the pool slots and pending claims they still hold.

Why this exists (dagster 1.13): a run killed with SIGKILL (or an OOM kill, a power cut) never writes
its end. It stays STARTED, and the ``duckdb_warehouse`` slot its step claimed, or the pending claim of
the step it was about to run, stays with it, so every later warehouse step waits "blocked by limit
for pool duckdb_warehouse" for ever. ``run_monitoring`` does not help here:

- it checks a STARTED run's worker only through the run launcher's ``check_run_worker_health``; the
  default run launcher does not support it, and runs started with ``execute_in_process`` /
  ``materialize`` (the demo, the CLI, the tests) have no run worker at all, so nothing fails them;
- ``free_slots_after_run_end_seconds`` frees the slots of *finished* runs only.

So the platform sweeps itself (:func:`sweep`): the ``run_recovery_sensor`` every 30 s while the daemon
runs, the start of the demo, ``mlops init`` and ``mlops doctor --repair``. A STARTED or CANCELING run
is judged dead

- on a local instance (SQLite storage under DAGSTER_HOME: every run of it ran on this machine) when
  none of the processes that wrote its events (the run's process, step processes) is alive: a pid
  that no longer exists, a zombie, or a pid reused by a process started after the event;
- on shared storage (Postgres: runs on other machines) only when it wrote no event for
  ``recovery.stale_run_seconds`` (0, the default: never; a long step writes no events).

A dead run is reported failed (an engine event saying why, then ``RUN_FAILURE``; a CANCELING one is
reported canceled) and its slots and pending claims are freed. Claims of a finished run are freed
once it has been over for ``free_slots_after_run_end_seconds``; claims of a deleted run at once. A
live run, a run on another host and a run that cannot be judged are never touched.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psutil

from mlops_assets.settings import get_settings

# a process started this long after the event that names its pid is another process (pid reuse)
PID_CLOCK_SLACK_SECONDS = 2.0
FINISHED_GRACE_DEFAULT_SECONDS = 30.0
SWEEP_INTERVAL_SECONDS = 30
# events written by the processes of a run: the run's own process, then each step's process
PID_EVENTS = {dg.DagsterEventType.RUN_START, dg.DagsterEventType.STEP_WORKER_STARTED,
              dg.DagsterEventType.STEP_START}
JUDGED_STATUSES = (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)


@dataclass(frozen=True)
class RunState:
    """What the sweep concluded about one run."""

    run_id: str
    status: str  # the Dagster run status, or "MISSING" when the run record is gone
    verdict: str  # "alive" | "dead" | "finished" | "missing" | "unknown"
    reason: str
    pids: tuple[int, ...] = ()
    ended_at: float | None = None


@dataclass(frozen=True)
class Claim:
    """A pool slot (``kind="slot"``) or a pending claim (``"pending"``: queued; ``"assigned"``: given a
    slot it has not taken yet) of one step of one run."""

    pool: str
    run_id: str
    step_key: str
    kind: str
    since: dt.datetime | None


@dataclass
class RecoveryReport:
    claims: list[Claim]
    runs: dict[str, RunState]
    actions: list[str] = field(default_factory=list)

    def state(self, run_id: str) -> RunState:
        return self.runs[run_id]

    def is_stuck(self, claim: Claim) -> bool:
        return self.runs[claim.run_id].verdict in ("dead", "finished", "missing")

    @property
    def stuck_claims(self) -> list[Claim]:
        return [c for c in self.claims if self.is_stuck(c)]

    @property
    def dead_runs(self) -> list[RunState]:
        return [r for r in self.runs.values() if r.verdict == "dead"]

    @property
    def healthy(self) -> bool:
        return not self.stuck_claims and not self.dead_runs


def instance_is_local(instance: dg.DagsterInstance) -> bool:
    """SQLite storage: one machine's instance, so a run's pids are this machine's pids."""
    return "sqlite" in type(instance.event_log_storage).__module__


def process_alive(pid: int, seen_at: float) -> bool:
    """Whether the process that wrote an event at ``seen_at`` with this pid still runs."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return proc.create_time() <= seen_at + PID_CLOCK_SLACK_SECONDS
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # it exists and we may not look: count it alive
        return True


def _run_pids(instance: dg.DagsterInstance, run_id: str) -> dict[int, float]:
    """pid -> the first time an event of the run came from it."""
    pids: dict[int, float] = {}
    for record in instance.get_records_for_run(run_id, of_type=PID_EVENTS).records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.pid is not None:
            pids.setdefault(event.pid, record.event_log_entry.timestamp)
    return pids


def _last_event_time(instance: dg.DagsterInstance, run_id: str) -> float | None:
    records = instance.get_records_for_run(run_id, limit=1, ascending=False).records
    return records[0].event_log_entry.timestamp if records else None


def judge_run(instance: dg.DagsterInstance, run_id: str, *, stale_after_seconds: float,
              local: bool, now: float | None = None) -> RunState:
    now = time.time() if now is None else now
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return RunState(run_id, "MISSING", "missing", "the run no longer exists")
    run = record.dagster_run
    status = run.status.value
    if run.is_finished:
        return RunState(run_id, status, "finished", f"the run ended ({status})", ended_at=record.end_time)
    if run.status not in JUDGED_STATUSES:
        return RunState(run_id, status, "unknown", f"{status}: not started yet (run monitoring's start timeout "
                                                   "covers it)")
    pids = _run_pids(instance, run_id) if local else {}
    if pids:
        alive = [pid for pid, seen in pids.items() if process_alive(pid, seen)]
        if alive:
            return RunState(run_id, status, "alive", f"process {', '.join(map(str, alive))} is running",
                            tuple(pids))
        return RunState(run_id, status, "dead", f"none of its processes runs any more (pid "
                                                f"{', '.join(map(str, pids))} on this host)", tuple(pids))
    last = _last_event_time(instance, run_id)
    if stale_after_seconds > 0 and last is not None and now - last > stale_after_seconds:
        return RunState(run_id, status, "dead", f"no event for {now - last:.0f} s (recovery.stale_run_seconds "
                                                f"= {stale_after_seconds:.0f})")
    where = "no process recorded" if local else "storage shared with other hosts"
    return RunState(run_id, status, "unknown", f"{where}; last event {now - last:.0f} s ago" if last
                    else f"{where}; no events")


def list_claims(instance: dg.DagsterInstance) -> list[Claim]:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    claims = []
    for pool, info in sorted(storage.get_concurrency_infos(sorted(storage.get_concurrency_keys())).items()):
        pending = {(p.run_id, p.step_key): p for p in info.pending_steps}
        claimed = set()
        for slot in info.claimed_slots:
            claimed.add((slot.run_id, slot.step_key))
            step = pending.get((slot.run_id, slot.step_key))
            since = (step.assigned_timestamp or step.enqueued_timestamp) if step else None
            claims.append(Claim(pool, slot.run_id, slot.step_key, "slot", since))
        for (run_id, step_key), step in pending.items():
            if (run_id, step_key) not in claimed:
                kind = "assigned" if step.assigned_timestamp else "pending"
                claims.append(Claim(pool, run_id, step_key, kind, step.assigned_timestamp or step.enqueued_timestamp))
    return claims


def _finished_grace(instance: dg.DagsterInstance) -> float:
    value = (instance.run_monitoring_settings or {}).get("free_slots_after_run_end_seconds")
    return float(value) if value else FINISHED_GRACE_DEFAULT_SECONDS


def sweep(instance: dg.DagsterInstance, *, repair: bool = True, stale_after_seconds: float | None = None,
          now: float | None = None) -> RecoveryReport:
    """Judge every run that holds a claim or is STARTED/CANCELING; with ``repair``, fail the dead ones and
    free what dead, finished and deleted runs hold. Returns what it saw and, in ``actions``, what it did."""
    now = time.time() if now is None else now
    stale = get_settings().recovery.stale_run_seconds if stale_after_seconds is None else stale_after_seconds
    local = instance_is_local(instance)
    claims = list_claims(instance)
    in_progress = instance.get_run_records(filters=dg.RunsFilter(statuses=list(JUDGED_STATUSES)))
    run_ids = list(dict.fromkeys([c.run_id for c in claims] + [r.dagster_run.run_id for r in in_progress]))
    runs = {run_id: judge_run(instance, run_id, stale_after_seconds=stale, local=local, now=now)
            for run_id in run_ids}
    report = RecoveryReport(claims, runs)
    if repair:
        grace = _finished_grace(instance)
        for state in runs.values():
            report.actions.extend(_repair(instance, state, [c for c in claims if c.run_id == state.run_id],
                                          grace=grace, now=now))
    return report


def _repair(instance: dg.DagsterInstance, state: RunState, claims: list[Claim], *, grace: float,
            now: float) -> list[str]:
    actions = []
    if state.verdict == "dead":
        run = instance.get_run_by_id(state.run_id)
        if run is not None and not run.is_finished:  # re-read: another sweeper may have been first
            message = f"run_recovery: {state.reason}; marking the run failed and freeing its pool claims"
            instance.report_engine_event(message, run)
            if run.status == dg.DagsterRunStatus.CANCELING:
                instance.report_run_canceled(run, message)
                actions.append(f"reported run {state.run_id} canceled ({state.reason})")
            else:
                instance.report_run_failed(run, message)
                actions.append(f"reported run {state.run_id} failed ({state.reason})")
    elif state.verdict == "finished" and claims:
        if state.ended_at is not None and now - state.ended_at < grace:
            return actions  # just ended: its own clean-up (or the daemon) may still be at work
    elif state.verdict != "missing" or not claims:
        return actions
    if claims:
        instance.event_log_storage.free_concurrency_slots_for_run(state.run_id)
        what = ", ".join(f"{c.kind} {c.pool}/{c.step_key}" for c in claims)
        actions.append(f"freed {len(claims)} claim(s) of run {state.run_id} ({state.verdict}): {what}")
    return actions


def describe(report: RecoveryReport, now: dt.datetime | None = None) -> list[str]:
    """One line per claim and per dead run without claims, for people."""
    now = now or dt.datetime.now(dt.UTC)
    lines = []
    for c in report.claims:
        state = report.runs[c.run_id]
        age = f"{(now - c.since).total_seconds():.0f} s ago" if c.since else "unknown time"
        mark = "STUCK" if report.is_stuck(c) else "ok   " if state.verdict == "alive" else "?    "
        lines.append(f"{mark} pool {c.pool}: {c.kind} of run {c.run_id} step {c.step_key} since {age} "
                     f"(run {state.status}, {state.verdict}: {state.reason})")
    claimed = {c.run_id for c in report.claims}
    for state in report.dead_runs:
        if state.run_id not in claimed:
            lines.append(f"DEAD  run {state.run_id} ({state.status}) holds no claim: {state.reason}")
    return lines


@contextmanager
def open_instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    """The instance whose config (``dagster.yaml``) and storage are in ``dagster_home``."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        yield instance


def recover_crashed_runs(instance: dg.DagsterInstance,
                         echo: Callable[[str], object] | None = None) -> RecoveryReport:
    """The sweep at the start of the demo and of ``mlops init``: repair, and say what was done."""
    report = sweep(instance, repair=True)
    for action in report.actions:
        if echo:
            echo(f"recovery: {action}")
    return report


@dg.sensor(name="run_recovery_sensor", minimum_interval_seconds=SWEEP_INTERVAL_SECONDS,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Fails runs whose process died (kill -9, OOM) and frees the warehouse pool slots and "
                       "pending claims they, finished or deleted runs still hold (run monitoring does neither "
                       "for in-process runs or the default run launcher).")
def run_recovery_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    report = sweep(context.instance, repair=True)
    for action in report.actions:
        context.log.warning(action)
    return dg.SkipReason("; ".join(report.actions) or _quiet(report.runs.values()))


def _quiet(states: Iterable[RunState]) -> str:
    states = list(states)
    return f"nothing to recover ({len(states)} run(s) with claims or in progress checked)"


defs = dg.Definitions(sensors=[run_recovery_sensor])
