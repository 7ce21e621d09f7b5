"""Reading the audit log: filtered keyset pages, one object's history, one trace, and chain verification."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, Select, select
from sqlalchemy.orm import Session

from cwom.audit import GENESIS_HASH, AuditHead, AuditRow, hashed_fields, row_hash

VERIFY_BATCH = 20_000
# The columns the verifier needs, in the order its tuples carry them.
_VERIFY_COLUMNS = (
    "id, seq, ts, actor_kind, actor_id, action, entity_kind, entity_id, before, after, note, trace_id, "
    "prev_hash, hash"
)


@dataclass(frozen=True)
class AuditFilter:
    """Conditions on an audit page; None means no condition. `until` is exclusive."""

    entity_kind: str | None = None
    entity_id: str | None = None
    actor_kind: str | None = None
    actor_id: str | None = None
    action: str | None = None
    trace_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _filtered(f: AuditFilter) -> Select[Any]:
    # Plain column tuples, not ORM objects: a page is read-only and hydration dominated its latency.
    t = AuditRow.__table__.c
    stmt = select(*t)
    for column, value in (
        (t.entity_kind, f.entity_kind),
        (t.entity_id, f.entity_id),
        (t.actor_kind, f.actor_kind),
        (t.actor_id, f.actor_id),
        (t.action, f.action),
        (t.trace_id, f.trace_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if f.since is not None:
        stmt = stmt.where(t.ts >= f.since)
    if f.until is not None:
        stmt = stmt.where(t.ts < f.until)
    return stmt


def page_statement(*, filters: AuditFilter, limit: int, before_seq: int | None = None) -> Select[Any]:
    """The SELECT behind `page` (the benchmark EXPLAINs it)."""
    stmt = _filtered(filters).order_by(AuditRow.seq.desc()).limit(limit)
    if before_seq is not None:
        stmt = stmt.where(AuditRow.seq < before_seq)
    return stmt


def page(
    session: Session, *, filters: AuditFilter, limit: int, before_seq: int | None = None
) -> list[Row[Any]]:
    """Rows matching `filters`, newest first by seq, strictly older than `before_seq` (the keyset cursor).

    Keyset on seq, not an offset: rows appended while a client pages only ever land before page one.
    """
    stmt = page_statement(filters=filters, limit=limit, before_seq=before_seq)
    return list(session.execute(stmt).all())


def history(
    session: Session, *, filters: AuditFilter, limit: int, after_seq: int | None = None
) -> list[Row[Any]]:
    """Rows matching `filters`, oldest first, after `after_seq` (one object's or one trace's story)."""
    stmt = _filtered(filters).order_by(AuditRow.seq).limit(limit)
    if after_seq is not None:
        stmt = stmt.where(AuditRow.seq > after_seq)
    return list(session.execute(stmt).all())


@dataclass(frozen=True)
class BrokenRow:
    """The first row at which the chain does not hold."""

    seq: int
    id: str | None
    reason: str


@dataclass(frozen=True)
class VerifyResult:
    """The verdict on the whole chain: `rows` is how many rows were checked."""

    ok: bool
    rows: int
    broken: BrokenRow | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of `GET /audit/verify` and `control-tower audit verify`."""
        out: dict[str, Any] = {"ok": self.ok, "rows": self.rows}
        if self.broken is not None:
            out["broken"] = {"seq": self.broken.seq, "id": self.broken.id, "reason": self.broken.reason}
        return out


def check_chain(rows: Iterable[Sequence[Any]], *, head_seq: int, head_hash: str) -> VerifyResult:
    """Check tuples in `_VERIFY_COLUMNS` order, ascending seq, against each other and the head."""
    expected = 1
    prev = GENESIS_HASH
    count = 0
    for row in rows:
        row_id, seq, ts = row[0], row[1], row[2]
        count += 1
        if seq != expected:
            reason = f"seq {seq} follows {expected - 1}: row {expected} is missing or moved"
            return VerifyResult(False, count, BrokenRow(seq, row_id, reason))
        if row[12] != prev:
            return VerifyResult(
                False, count, BrokenRow(seq, row_id, "prev_hash does not match the row before")
            )
        fields = hashed_fields(
            id=row_id,
            seq=seq,
            ts=ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC),
            actor_kind=row[3],
            actor_id=row[4],
            action=row[5],
            entity_kind=row[6],
            entity_id=row[7],
            before=row[8],
            after=row[9],
            note=row[10],
            trace_id=row[11],
        )
        if row_hash(prev, fields) != row[13]:
            return VerifyResult(False, count, BrokenRow(seq, row_id, "hash does not match the row's content"))
        prev = row[13]
        expected += 1
    last = expected - 1
    if last < head_seq:
        reason = f"the chain ends at seq {last} but audit_head is at seq {head_seq}: rows are missing"
        return VerifyResult(False, count, BrokenRow(last + 1, None, reason))
    if last > head_seq:
        reason = f"rows past audit_head (seq {head_seq}) were not written by the chain writer"
        return VerifyResult(False, count, BrokenRow(head_seq + 1, None, reason))
    if prev != head_hash:
        return VerifyResult(False, count, BrokenRow(last, None, "the last row's hash is not audit_head's"))
    return VerifyResult(True, count)


def _generic_rows(conn: Connection, batch: int) -> Iterator[Sequence[Any]]:
    t = AuditRow.__table__.c
    cols = [t[name.strip()] for name in _VERIFY_COLUMNS.split(",")]
    result = conn.execution_options(yield_per=batch).execute(select(*cols).order_by(t.seq))
    for partition in result.partitions():
        yield from partition


def verify(engine: Engine, *, batch: int = VERIFY_BATCH, workers: int | None = None) -> VerifyResult:
    """Recompute the whole chain from seq 1 and compare its end with `audit_head`.

    One snapshot (REPEATABLE READ, exported to the helper processes, on PostgreSQL; the single writer
    lock on SQLite) so the head and the rows agree while writers keep appending. Every row is read,
    including any past the head.
    """
    if engine.dialect.name == "postgresql":
        from cwom.audit_verify_pg import verify_pg

        return verify_pg(engine, batch=batch, workers=workers)
    with engine.connect() as conn:
        head = conn.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one()
        result = check_chain(_generic_rows(conn, batch), head_seq=head.seq, head_hash=head.hash)
        conn.rollback()
    return result
