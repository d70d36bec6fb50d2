"""The offline store: one DuckDB file, written safely.

Every write is one transaction, by column name, after comparing the schema with the existing table:
- a whole table: ``CREATE OR REPLACE TABLE t AS SELECT * FROM frame`` inside ``BEGIN``/``COMMIT``;
- a partition: ``DELETE`` the partition's rows and ``INSERT INTO t BY NAME`` in the same transaction.
A failed write rolls back and leaves the previous table exactly as it was. (The IO manager that
ships with dagster-duckdb deletes, then inserts positionally, in separate statements: same-typed
columns can swap and a failed insert leaves an empty table. ``defs/resources.py`` uses this class.)

DuckDB lets one process hold the file at a time; connections here are short-lived and retried
while another process holds the lock, and Dagster's concurrency pool keeps runs from contending.
Read-write connections can come from a factory (``write_connection``: the Dagster layer passes
dagster-duckdb's ``DuckDBResource.get_connection``, so this module stays dagster-free); reads always
open here, read-only, which that resource cannot do (see docs/architecture.md, "Packages").
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb
import polars as pl

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Write-time compression. "default": DuckDB analyses every method per column segment and keeps the
# smallest. "fast": skips the float methods (ALP, ALPRD) and FSST for strings, which cost most of the
# analysis and gain little on computed features (returns and ratios are not decimal-like): on the 10M-row
# feature views ~25% less write time for ~14% more disk. Raw prices (decimal-like) keep "default".
COMPRESSION: dict[str, str] = {"default": "", "fast": "alp,alprd,fsst"}

# Opens a read-write connection to the warehouse file (e.g. ``DuckDBResource.get_connection``).
ConnectionFactory = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


class WarehouseError(RuntimeError):
    """A warehouse read or write failed; the message names the table and the reason."""


@dataclass(frozen=True)
class SchemaDiff:
    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    retyped: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.retyped)

    def describe(self) -> str:
        parts = [f"added {sorted(self.added)}" if self.added else "",
                 f"removed {sorted(self.removed)}" if self.removed else "",
                 ", ".join(f"{c}: {a} -> {b}" for c, (a, b) in self.retyped.items())]
        return "; ".join(p for p in parts if p) or "unchanged"


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise WarehouseError(f"table or column name {name!r} is not a plain identifier")
    return f'"{name}"'


def diff_schemas(old: dict[str, str], new: dict[str, str]) -> SchemaDiff:
    return SchemaDiff(
        added={c: t for c, t in new.items() if c not in old},
        removed={c: t for c, t in old.items() if c not in new},
        retyped={c: (old[c], t) for c, t in new.items() if c in old and old[c] != t},
    )


def frame_schema(df: pl.DataFrame) -> dict[str, str]:
    """The DuckDB column types a frame would be stored with (to compare before writing)."""
    con = duckdb.connect()
    try:
        con.register("_frame", df.head(0).to_arrow())
        return {r[0]: r[1] for r in con.execute("DESCRIBE _frame").fetchall()}
    finally:
        con.close()


def _check_key(con: duckdb.DuckDBPyConnection, table: str, key_columns: tuple[str, ...]) -> None:
    cols = ", ".join(_ident(c) for c in key_columns)
    nulls = " OR ".join(f"{_ident(c)} IS NULL" for c in key_columns)
    n_null = con.execute(f"SELECT count(*) FROM {_ident(table)} WHERE {nulls}").fetchone()[0]
    if n_null:
        raise WarehouseError(f"{n_null} row(s) with a null in key column(s) {list(key_columns)}")
    n_dup = con.execute(
        f"SELECT count(*) FROM (SELECT {cols} FROM {_ident(table)} GROUP BY {cols} HAVING count(*) > 1)"
    ).fetchone()[0]
    if n_dup:
        raise WarehouseError(f"{n_dup} duplicate key(s) on {list(key_columns)}")


@dataclass
class Warehouse:
    path: Path
    lock_timeout_s: float = 120.0
    # DuckDB threads for writes; 0 keeps DuckDB's default (one per core). On the 2-core reference
    # machine two threads write 10M feature rows ~15% faster than one (quiet machine) for ~50% more
    # CPU; 1 is the better choice where many runs share few cores (``data.warehouse_threads``).
    write_threads: int = 0
    # Where read-write connections come from; None: opened here with the lock retry below. The
    # factory opens ``path`` and owns its connection settings (threads); compression is set here.
    write_connection: ConnectionFactory | None = None

    @contextmanager
    def connect(self, read_only: bool = False, compression: str = "default") -> Iterator[duckdb.DuckDBPyConnection]:
        if compression not in COMPRESSION:
            raise WarehouseError(f"compression: {compression!r} is not one of {sorted(COMPRESSION)}")
        path = Path(self.path)
        if read_only and not path.exists():
            raise WarehouseError(f"{path}: the warehouse does not exist yet; materialize raw_market_data first")
        path.parent.mkdir(parents=True, exist_ok=True)
        if not read_only and self.write_connection is not None:
            with self._factory_connection(path) as con:
                self._write_settings(con, compression)
                yield con
            return
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(path), read_only=read_only)
                break
            except duckdb.IOException as exc:  # another process holds the file
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise WarehouseError(f"{path}: cannot open the warehouse: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            if not read_only:
                if self.write_threads:
                    con.execute(f"SET threads = {int(self.write_threads)}")
                self._write_settings(con, compression)
            yield con
        finally:
            con.close()

    @contextmanager
    def _factory_connection(self, path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
        try:
            opened = self.write_connection()
            con = opened.__enter__()
        except duckdb.Error as exc:
            raise WarehouseError(f"{path}: cannot open the warehouse: {exc}") from exc
        try:
            yield con
        except BaseException:
            # close before the error leaves: DuckDBResource closes only on success, so a failed write
            # would keep the file locked for other processes as long as the traceback lives
            con.close()
            if not opened.__exit__(*sys.exc_info()):
                raise
        else:
            opened.__exit__(None, None, None)

    @staticmethod
    def _write_settings(con: duckdb.DuckDBPyConnection, compression: str) -> None:
        if COMPRESSION[compression]:
            con.execute(f"SET disabled_compression_methods = '{COMPRESSION[compression]}'")

    # -- reads ---------------------------------------------------------------------------------
    def table_schema(self, table: str, con: duckdb.DuckDBPyConnection | None = None) -> dict[str, str]:
        if con is None:
            if not Path(self.path).exists():
                return {}
            with self.connect(read_only=True) as c:
                return self.table_schema(table, c)
        rows = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
        return {name: dtype for name, dtype in rows}

    def has_table(self, table: str) -> bool:
        return bool(self.table_schema(table))

    def list_tables(self) -> list[str]:
        if not Path(self.path).exists():
            return []
        with self.connect(read_only=True) as con:
            return [r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema='main' ORDER BY 1").fetchall()]

    def read_table(self, table: str, where: str | None = None, params: list | None = None) -> pl.DataFrame:
        with self.connect(read_only=True) as con:
            if not self.table_schema(table, con):
                raise WarehouseError(f"table {table!r} does not exist in {self.path}")
            sql = f"SELECT * FROM {_ident(table)}" + (f" WHERE {where}" if where else "")
            return con.execute(sql, params or []).pl()

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        with self.connect(read_only=True) as con:
            return con.execute(sql, params or []).pl()

    # -- writes --------------------------------------------------------------------------------
    def write_table(
        self, table: str, df: pl.DataFrame, key_columns: tuple[str, ...] = (), compression: str = "default",
    ) -> SchemaDiff:
        """Replace ``table`` with ``df`` in one transaction; returns the schema change.

        ``key_columns`` are checked inside the transaction (no nulls, no duplicates) before commit,
        so a frame that breaks the table's key never replaces the previous table. ``compression``:
        a key of :data:`COMPRESSION`.
        """
        for c in (*df.columns, *key_columns):
            _ident(c)
        with self.connect(compression=compression) as con:
            old = self.table_schema(table, con)
            con.register("_incoming", df.to_arrow())
            try:
                con.execute("BEGIN TRANSACTION")
                con.execute(f"CREATE OR REPLACE TABLE {_ident(table)} AS SELECT * FROM _incoming")
                if key_columns:
                    _check_key(con, table, key_columns)
                con.execute("COMMIT")
            except Exception as exc:
                con.execute("ROLLBACK")
                raise WarehouseError(f"writing table {table!r} failed, previous table kept: {exc}") from exc
            finally:
                con.unregister("_incoming")
            return diff_schemas(old, self.table_schema(table, con))

    def write_partition(
        self, table: str, df: pl.DataFrame, partition_column: str, key: str | date, compression: str = "default",
    ) -> SchemaDiff:
        """Replace the rows of one partition in one transaction (``INSERT … BY NAME``)."""
        if partition_column not in df.columns:
            raise WarehouseError(f"partition column {partition_column!r} missing from the frame for {table!r}")
        for c in df.columns:
            _ident(c)
        with self.connect(compression=compression) as con:
            old = self.table_schema(table, con)
            con.register("_incoming", df.to_arrow())
            try:
                con.execute("BEGIN TRANSACTION")
                if not old:
                    con.execute(f"CREATE TABLE {_ident(table)} AS SELECT * FROM _incoming")
                else:
                    incoming = {r[0]: r[1] for r in con.execute("DESCRIBE _incoming").fetchall()}
                    diff = diff_schemas(old, incoming)
                    if diff.removed or diff.retyped or diff.added:
                        raise WarehouseError(f"schema of {table!r} differs from the stored table: {diff.describe()}")
                    con.execute(f"DELETE FROM {_ident(table)} WHERE {_ident(partition_column)} = ?", [key])
                    con.execute(f"INSERT INTO {_ident(table)} BY NAME SELECT * FROM _incoming")
                con.execute("COMMIT")
            except Exception as exc:
                con.execute("ROLLBACK")
                if isinstance(exc, WarehouseError):
                    raise
                raise WarehouseError(f"writing partition {key} of {table!r} failed, previous rows kept: {exc}") from exc
            finally:
                con.unregister("_incoming")
            return diff_schemas(old, self.table_schema(table, con)) if old else SchemaDiff()

    def append_rows(self, table: str, df: pl.DataFrame) -> None:
        """Append rows by name (history tables such as drift summaries); creates the table if needed."""
        with self.connect() as con:
            old = self.table_schema(table, con)
            con.register("_incoming", df.to_arrow())
            try:
                con.execute("BEGIN TRANSACTION")
                if old:
                    con.execute(f"INSERT INTO {_ident(table)} BY NAME SELECT * FROM _incoming")
                else:
                    con.execute(f"CREATE TABLE {_ident(table)} AS SELECT * FROM _incoming")
                con.execute("COMMIT")
            except Exception as exc:
                con.execute("ROLLBACK")
                raise WarehouseError(f"appending to {table!r} failed, nothing written: {exc}") from exc
            finally:
                con.unregister("_incoming")
