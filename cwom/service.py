"""Operations that change canonical work objects, each with its audit rows in the same transaction."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from cwom import audit, base
from cwom.audit import Actor
from cwom.base import new_id, utcnow
from cwom.enums import ObjectKind
from cwom.errors import ObjectNotFound, RefKindMismatch, RefNotFound
from cwom.rows import snapshot
from cwom.schemas import Ref
from cwom.tables import (
    ArtifactRow,
    ConstraintSnapshotRow,
    ContextPacketRow,
    DoctrineRefRow,
    IssueRow,
    RepoRow,
    RunRow,
)


def link(
    session: Session,
    *,
    table_name: str,
    left: tuple[ObjectKind, str],
    right: tuple[ObjectKind, str],
    actor: Actor,
    trace_id: str | None,
) -> None:
    """Insert one join-table row and audit it as `linked`."""
    table = IssueRow.metadata.tables[table_name]
    left_col, right_col = (c.name for c in table.primary_key.columns)
    session.execute(insert(table).values({left_col: left[1], right_col: right[1]}))
    audit.record(
        session,
        actor=actor,
        action="linked",
        entity_kind=left[0],
        entity_id=left[1],
        after={"kind": right[0].value, "id": right[1], "via": table_name},
        trace_id=trace_id,
    )


R = TypeVar("R")

KIND_ROWS: dict[ObjectKind, type[Any]] = {
    ObjectKind.REPO: RepoRow,
    ObjectKind.ISSUE: IssueRow,
    ObjectKind.CONTEXT_PACKET: ContextPacketRow,
    ObjectKind.CONSTRAINT_SNAPSHOT: ConstraintSnapshotRow,
    ObjectKind.DOCTRINE_REF: DoctrineRefRow,
    ObjectKind.RUN: RunRow,
    ObjectKind.ARTIFACT: ArtifactRow,
}


def new_trace_id() -> str:
    """A 32-hex trace id for objects created outside intake (`cwom.base.new_trace_id`)."""
    return base.new_trace_id()


def get_object(session: Session, kind: ObjectKind, object_id: str) -> Any:
    """The row of this kind and id, or ObjectNotFound (404)."""
    row = session.get(KIND_ROWS[kind], object_id)
    if row is None:
        raise ObjectNotFound(message=f"{kind.value} {object_id} not found", field="id")
    return row


def resolve(session: Session, ref: Ref, *, kind: ObjectKind, field: str) -> Any:
    """The row a Ref points at: 422 REF_KIND_MISMATCH or REF_NOT_FOUND naming the field."""
    if ref.kind != kind:
        raise RefKindMismatch(message=f"expected a {kind.value} ref, got {ref.kind.value}", field=field)
    row = session.get(KIND_ROWS[kind], ref.id)
    if row is None:
        raise RefNotFound(message=f"{kind.value} {ref.id} does not exist", field=field)
    return row


def link_refs(
    session: Session,
    *,
    table: Table,
    left: tuple[ObjectKind, str],
    refs: list[Ref],
    kind: ObjectKind,
    field: str,
    actor: Actor,
    trace_id: str | None,
) -> None:
    """Check every Ref, then link each distinct one through `table` (each audited `linked`)."""
    for i, ref in enumerate(refs):
        resolve(session, ref, kind=kind, field=f"{field}.{i}")
    for ref_id in dict.fromkeys(ref.id for ref in refs):
        link(session, table_name=table.name, left=left, right=(kind, ref_id), actor=actor, trace_id=trace_id)


def record_created(session: Session, *, actor: Actor, kind: ObjectKind, row: Any) -> None:
    """Audit a freshly flushed row as `created` with its full snapshot."""
    audit.record(
        session,
        actor=actor,
        action="created",
        entity_kind=kind,
        entity_id=row.id,
        after=snapshot(row),
        trace_id=row.trace_id,
    )


def stamp(row: R, *, trace_id: str | None) -> R:
    """Give a new row its id, trace id and timestamps (set here so the audit snapshot has them)."""
    now = utcnow()
    target: Any = row
    target.id = new_id()
    target.trace_id = trace_id or new_trace_id()
    target.created_at = now
    target.updated_at = now
    return row
