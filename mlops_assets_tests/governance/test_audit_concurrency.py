"""Several processes appending to one audit log at once leave one valid chain."""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter
from pathlib import Path

from mlops_assets.governance.audit import read_anchor
from mlops_assets.governance.store import GovernanceStore

KEY = b"c" * 32
PROCS, APPENDS = 4, 25


def _worker(db: str, anchor: str, worker: int, start: mp.synchronize.Event) -> None:
    store = GovernanceStore(f"sqlite:///{db}", KEY, Path(anchor))
    start.wait()
    for i in range(APPENDS):
        if i % 5 == 4:  # mix in a state change with its own audit entry
            store.record_drift_event(source=f"w{worker}", features=["x"], drifted_share=0.5, severity="low",
                                     actor=f"worker{worker}")
        else:
            store.append_audit(f"worker{worker}", "test.append", "test", f"{worker}/{i}", {"i": i})
    store.close()


def test_parallel_processes_leave_one_valid_chain(tmp_path: Path) -> None:
    db, anchor = tmp_path / "governance.db", tmp_path / "audit.head"
    GovernanceStore(f"sqlite:///{db}", KEY, anchor).close()  # tables exist before the race
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_worker, args=(str(db), str(anchor), w, start)) for w in range(PROCS)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * PROCS

    store = GovernanceStore(f"sqlite:///{db}", KEY, anchor)
    result = store.verify_audit()
    total = PROCS * APPENDS
    assert result.ok, result.reason
    assert (result.entries, result.head_seq, result.anchor_seq) == (total, total, total)
    entries = store.list_audit(limit=None, newest_first=False)
    assert [e.seq for e in entries] == list(range(1, total + 1))
    assert len({e.prev_hash for e in entries}) == total
    assert Counter(e.actor for e in entries) == {f"worker{w}": APPENDS for w in range(PROCS)}
    assert len(store.list_drift_events(limit=None)) == PROCS * (APPENDS // 5)
    assert read_anchor(anchor).hash == entries[-1].hash
