"""Hash chain, HMAC and verification of the governance audit log (no database code here).

Each entry commits to its predecessor::

    hash = sha256(canonical_json({seq, ts, actor, action, subject: {kind, id}, details, prev_hash}))
    hmac = HMAC-SHA256(key, hash)

The first entry has ``seq == 1`` and ``prev_hash == GENESIS_HASH``. Editing an entry breaks its
hash; recomputing the hash needs the key (kept outside the database, see ``keys.py``) to redo the
HMAC; deleting an entry leaves a gap in ``seq``; inserting one needs a valid HMAC and breaks the
link of the next entry. Deleting the *last* entries leaves a valid but shorter chain, so the head
(last seq and hash, HMAC'd) is also written to an *anchor file* outside the database after every
append; verification reports a log whose head is behind its anchor as truncated.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac as hmac_lib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, UTC
from enum import Enum
from pathlib import Path
from typing import Any

from mlops_assets.errors import MessageInput

try:  # POSIX; elsewhere the anchor is still written atomically, just not serialised
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

GENESIS_HASH = "0" * 64


class AuditFormatError(MessageInput):
    """An audit entry or its details cannot be encoded canonically."""
    subject = "audit_log"


@dataclass(frozen=True)
class AuditEntry:
    """One sealed entry of the audit log."""

    seq: int
    ts: datetime
    actor: str
    action: str
    subject_kind: str
    subject_id: str
    details: dict[str, Any]
    prev_hash: str
    hash: str
    hmac: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamp as ISO-8601 UTC), for APIs and asset metadata."""
        out = asdict(self)
        out["ts"] = format_ts(self.ts)
        return out


@dataclass(frozen=True)
class AuditVerification:
    """The result of verifying the chain: ``ok`` or the first bad entry and why."""

    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str | None = None
    head_seq: int | None = None
    anchor_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Anchor:
    """The head of the chain as last written to the anchor file."""

    seq: int
    hash: str
    hmac: str = field(repr=False)


# --- canonical encoding ----------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8, no NaN/Infinity."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
            default=_json_default,
        )
    except (TypeError, ValueError) as exc:
        raise AuditFormatError(
            f"audit details must be JSON-serialisable (str, numbers, bools, lists, dicts, "
            f"dates; no NaN): {exc}"
        ) from exc


def normalize_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """Round-trip ``details`` through canonical JSON so what is stored is exactly what is hashed."""
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise AuditFormatError(f"audit details must be a mapping, got {type(details).__name__}")
    return json.loads(canonical_json(dict(details)))


def as_utc(ts: datetime) -> datetime:
    """Timestamps without a zone are taken as UTC (SQLite drops the zone)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def format_ts(ts: datetime) -> str:
    return as_utc(ts).isoformat(timespec="microseconds")


# --- sealing ---------------------------------------------------------------------------------


def entry_hash(
    seq: int, ts: datetime, actor: str, action: str, subject_kind: str, subject_id: str,
    details: Mapping[str, Any], prev_hash: str,
) -> str:
    payload = {
        "seq": int(seq),
        "ts": format_ts(ts),
        "actor": actor,
        "action": action,
        "subject": {"kind": subject_kind, "id": subject_id},
        "details": dict(details),
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def entry_hmac(key: bytes, digest: str) -> str:
    return hmac_lib.new(key, digest.encode("ascii"), hashlib.sha256).hexdigest()


def seal_entry(
    key: bytes, *, seq: int, ts: datetime, actor: str, action: str, subject_kind: str,
    subject_id: str, details: Mapping[str, Any] | None, prev_hash: str,
) -> AuditEntry:
    """Build the next entry: normalise details, compute hash and HMAC."""
    clean = normalize_details(details)
    ts = as_utc(ts)
    digest = entry_hash(seq, ts, actor, action, subject_kind, subject_id, clean, prev_hash)
    return AuditEntry(seq, ts, actor, action, subject_kind, subject_id, clean, prev_hash, digest,
                      entry_hmac(key, digest))


def row_digest(table: str, values: Mapping[str, Any]) -> str:
    """sha256 of a governed row (its table name and every column but ``audit_seq``), canonically."""
    payload = {"table": table, "row": {k: v for k, v in values.items() if k != "audit_seq"}}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def entry_seal_problem(entry: AuditEntry, key: bytes) -> str | None:
    """Why one entry's own hash or HMAC does not hold (no chain links), or ``None``."""
    recomputed = entry_hash(entry.seq, entry.ts, entry.actor, entry.action, entry.subject_kind,
                            entry.subject_id, entry.details, entry.prev_hash)
    if recomputed != entry.hash:
        return f"audit entry seq {entry.seq} does not match its hash (edited after it was written)"
    if not hmac_lib.compare_digest(entry_hmac(key, entry.hash), entry.hmac):
        return f"audit entry seq {entry.seq} has an invalid HMAC"
    return None


@dataclass(frozen=True)
class RowRef:
    """What an audit entry says about the governed row it wrote: ``details["row"]``."""

    table: str
    id: int
    digest: str
    seq: int

    @classmethod
    def of(cls, entry: AuditEntry) -> RowRef | None:
        row = entry.details.get("row") if isinstance(entry.details, dict) else None
        if not isinstance(row, dict) or not {"table", "id", "digest"} <= set(row):
            return None
        return cls(str(row["table"]), int(row["id"]), str(row["digest"]), entry.seq)


def row_binding_problems(refs: Iterable[RowRef], rows: Iterable[tuple[str, int, int | None, str]],
                         *, limit: int = 20) -> list[str]:
    """Compare governed rows with the audit entries that wrote them, both ways.

    ``refs`` are the row references of (already verified) audit entries, in ``seq`` order; ``rows``
    are ``(table, id, audit_seq, digest)`` of every governed row. A row must be referenced, by its
    *latest* referencing entry (``audit_seq``), with the digest it has now; every referenced row must
    still exist. Returns at most ``limit`` problems, each naming the table and row.
    """
    latest: dict[tuple[str, int], RowRef] = {}
    for ref in refs:
        latest[(ref.table, ref.id)] = ref
    problems: list[str] = []
    seen: set[tuple[str, int]] = set()
    for table, row_id, audit_seq, digest in rows:
        key = (table, int(row_id))
        seen.add(key)
        ref = latest.get(key)
        if ref is None:
            why = ("has no audit entry (inserted outside the store, or written by an older version: "
                   "run `mlops audit seal-legacy` once if the chain verifies)" if audit_seq is None
                   else f"claims audit entry seq {audit_seq}, which does not record it (inserted by hand)")
            problems.append(f"{table} row {row_id} {why}")
        elif audit_seq != ref.seq:
            problems.append(f"{table} row {row_id} points at audit entry seq {audit_seq}, but its latest "
                            f"entry is seq {ref.seq} (rolled back or rewritten by hand)")
        elif digest != ref.digest:
            problems.append(f"{table} row {row_id} differs from what audit entry seq {ref.seq} recorded "
                            "(edited after it was written)")
    for (table, row_id), ref in latest.items():
        if (table, row_id) not in seen:
            problems.append(f"{table} row {row_id} recorded by audit entry seq {ref.seq} is missing (deleted)")
    return problems[:limit]


# --- verification ----------------------------------------------------------------------------


def _check_entry(entry: AuditEntry, key: bytes, expected_seq: int, prev_hash: str) -> str | None:
    if entry.seq != expected_seq:
        return (f"entry seq {expected_seq} is missing (deleted): the next entry is seq {entry.seq}"
                if entry.seq > expected_seq else f"entry seq {entry.seq} is out of order")
    recomputed = entry_hash(entry.seq, entry.ts, entry.actor, entry.action, entry.subject_kind,
                            entry.subject_id, entry.details, entry.prev_hash)
    if recomputed != entry.hash:
        return f"entry seq {entry.seq} does not match its hash (edited after it was written)"
    if not hmac_lib.compare_digest(entry_hmac(key, entry.hash), entry.hmac):
        return (f"entry seq {entry.seq} has an invalid HMAC (inserted or rewritten without the "
                f"audit key, or verified with the wrong key)")
    if entry.prev_hash != prev_hash:
        return f"entry seq {entry.seq} does not link to entry seq {entry.seq - 1} (chain broken)"
    return None


def verify_entries(
    entries: Iterable[AuditEntry], key: bytes, anchor: Anchor | None = None,
    *, anchor_expected: bool = False,
) -> AuditVerification:
    """Verify entries given in ``seq`` order; compare the head with ``anchor`` if there is one.

    ``anchor_expected`` says an anchor file is configured, so a missing anchor with a non-empty
    log is itself a failure (someone may have removed both the tail and the anchor).
    """
    count, head_seq, prev_hash, anchored_hash = 0, 0, GENESIS_HASH, None
    anchor_seq = anchor.seq if anchor else None
    for entry in entries:
        problem = _check_entry(entry, key, head_seq + 1, prev_hash)
        if problem:
            bad = min(entry.seq, head_seq + 1)
            return AuditVerification(False, count, bad, problem, head_seq or None, anchor_seq)
        count, head_seq, prev_hash = count + 1, entry.seq, entry.hash
        if anchor is not None and entry.seq == anchor.seq:
            anchored_hash = entry.hash
    head = head_seq or None
    if anchor is None:
        if anchor_expected and count:
            return AuditVerification(False, count, None, "the anchor file is missing, so truncation "
                                     "of the log cannot be ruled out", head, None)
        return AuditVerification(True, count, None, None, head, None)
    if not hmac_lib.compare_digest(anchor_hmac(key, anchor.seq, anchor.hash), anchor.hmac):
        return AuditVerification(False, count, None, "the anchor file has an invalid HMAC "
                                 "(tampered, or written with another key)", head, anchor_seq)
    if head_seq < anchor.seq:
        return AuditVerification(False, count, head_seq + 1, f"log truncated: the last entry is seq "
                                 f"{head_seq} but the anchor records seq {anchor.seq}", head, anchor_seq)
    if anchored_hash != anchor.hash:
        return AuditVerification(False, count, anchor.seq, f"entry seq {anchor.seq} differs from "
                                 "the anchored head (history rewritten)", head, anchor_seq)
    return AuditVerification(True, count, None, None, head, anchor_seq)


# --- anchor file -----------------------------------------------------------------------------


def anchor_hmac(key: bytes, seq: int, digest: str) -> str:
    return hmac_lib.new(key, f"anchor:{int(seq)}:{digest}".encode("ascii"), hashlib.sha256).hexdigest()


def read_anchor(path: Path) -> Anchor | None:
    """The anchor at ``path``, or ``None`` if there is none. A malformed file raises."""
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
        return Anchor(seq=int(data["seq"]), hash=str(data["hash"]), hmac=str(data["hmac"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise AuditFormatError(f"anchor file {path} is malformed ({exc}); it should hold "
                               "{seq, hash, hmac} as JSON") from exc


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover - non-POSIX
        yield
        return
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_anchor(path: Path, key: bytes, seq: int, digest: str, *, force: bool = False) -> bool:
    """Atomically record ``(seq, digest)`` as the head unless the anchor is already further ahead.

    Writers serialise on a lock file next to the anchor, so the anchor only moves forward even when
    processes finish their appends out of order. A malformed anchor is left alone (it is evidence;
    verification reports it) unless ``force`` is set, which also allows moving the anchor back
    (after restoring the database from a backup). Returns whether the file was written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_name(path.name + ".lock")):
        if not force:
            try:
                current = read_anchor(path)
            except AuditFormatError:
                return False
            if current is not None and current.seq >= seq:
                return False
        body = json.dumps({"seq": int(seq), "hash": digest, "hmac": anchor_hmac(key, seq, digest)})
        fd, tmp = tempfile.mkstemp(prefix=".anchor-", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return True
