"""A materialization on the real Dagster instance at DAGSTER_HOME, in its own process, for the crash tests
(it gets killed with SIGKILL while it holds, or waits for, the ``duckdb_warehouse`` pool).

    python -m mlops_assets_tests.production.crash_worker [--record FILE]

Materializes the ingestion and feature groups the way the demo does (``materialize`` against
``DagsterInstance.get()``, so the pool limit of the instance applies). Reads MLOPS_HOME, MLOPS_CONFIG and
DAGSTER_HOME from the environment. With ``--record`` it writes the run's id and result to FILE when done.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", type=Path)
    args = parser.parse_args(argv)

    import dagster as dg

    from mlops_assets.definitions import build_defs

    defs = build_defs()
    result = dg.materialize([*defs.assets, *(defs.asset_checks or [])], resources=defs.resources,
                            selection=dg.AssetSelection.groups("ingestion", "features"),
                            instance=dg.DagsterInstance.get(), raise_on_error=False)
    if args.record:
        args.record.write_text(json.dumps({"run_id": result.run_id, "success": result.success}))
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
