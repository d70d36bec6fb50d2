"""A materialization in its own process, for the fault tests (it gets killed, or runs four at a time).

    python -m mlops_assets_tests.production.materialize_worker --selection features [--loop SEEDS] [--record FILE]

Reads MLOPS_HOME and MLOPS_CONFIG from the environment. ``--selection`` is ``features`` (ingestion and
the feature group), ``train`` (``trained_model``) or ``all`` (both). With ``--loop 7,8`` it materializes forever,
alternating the data seed, and after each successful run appends to ``--record`` one JSON line: the
seed and a digest of every deterministic warehouse table, i.e. each complete content a table can have
(a single run with ``--record`` appends its pid, start and end times and the digests).
Uses an ephemeral Dagster instance: no pool serialises it against other processes; only the warehouse's
own lock handling does.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import time
from pathlib import Path

import yaml

# tables whose content depends only on the data seed (the catalog and statistics carry timestamps)
DETERMINISTIC = ("raw_market_data", "market_data_quarantine", "training_dataset")


def table_digests(warehouse_path: Path) -> dict[str, str]:
    """sha256 of each deterministic table and feature-view table, rows in a canonical order."""
    from mlops_assets.data.warehouse import Warehouse

    out = {}
    with Warehouse(warehouse_path).connect(read_only=True) as con:  # waits while another process writes
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_schema = 'main'").fetchall()]
        for table in sorted(tables):
            if table in DETERMINISTIC or table.startswith("fv_"):
                frame = con.execute(f'SELECT * FROM "{table}"').pl()
                frame = frame.sort(frame.columns)
                out[table] = hashlib.sha256(frame.write_csv().encode()).hexdigest()
    return out


def _set_seed(config_path: Path, seed: int) -> None:
    config = yaml.safe_load(config_path.read_text()) or {}
    config.setdefault("data", {})["seed"] = seed
    config_path.write_text(yaml.safe_dump(config))


def materialize(selection_name: str, run_config: dict | None = None) -> bool:
    import dagster as dg

    from mlops_assets.definitions import build_defs
    from mlops_assets.settings import get_settings

    get_settings.cache_clear()
    defs = build_defs()
    selection = {"features": dg.AssetSelection.groups("ingestion", "features"),
                 "train": dg.AssetSelection.assets("trained_model"),
                 "all": dg.AssetSelection.groups("ingestion", "features") | dg.AssetSelection.assets("trained_model"),
                 }[selection_name]
    result = dg.materialize([*defs.assets, *(defs.asset_checks or [])], resources=defs.resources,
                            selection=selection, raise_on_error=False, run_config=run_config or {})
    if not result.success:
        for event in result.get_step_failure_events():
            print(f"STEP FAILED {event.step_key}: {event.event_specific_data.error.message}", file=sys.stderr)
    return result.success


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--selection", choices=("features", "train", "all"), default="features")
    parser.add_argument("--loop", default="", help="comma-separated seeds to alternate, forever")
    parser.add_argument("--record", type=Path)
    args = parser.parse_args(argv)
    from mlops_assets.settings import get_settings

    if not args.loop:
        started = time.time()
        ok = materialize(args.selection)
        if ok and args.record:
            record = {"pid": os.getpid(), "started": started, "finished": time.time(),
                      "tables": table_digests(get_settings().warehouse_path)}
            with args.record.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        return 0 if ok else 1

    config_path = Path(os.environ["MLOPS_CONFIG"])
    for seed in itertools.cycle(int(s) for s in args.loop.split(",")):
        _set_seed(config_path, seed)
        if not materialize(args.selection):
            return 1
        if args.record:
            record = {"seed": seed, "tables": table_digests(get_settings().warehouse_path)}
            with args.record.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
