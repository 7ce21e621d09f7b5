"""Operations that change canonical work objects, each with its audit rows in the same transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from cwom import audit
from cwom.audit import Actor
from cwom.base import new_id, utcnow
from cwom.enums import ObjectKind
from cwom.errors import ObjectNotFound, RefKindMismatch, RefNotFound
from cwom.rows import insert_ignore, snapshot
from cwom.schemas import Ref
from cwom.tables import (
    ArtifactRow,
    ConstraintSnapshotRow,
    ContextPacketRow,
    DoctrineRefRow,
    IssueRow,
    RepoRow,
    RunRow,
    issue_constraint_snapshots,
    issue_context_packets,
    run_context_packets,
)
from cwom.task_adapter import CwomDraft


@dataclass(frozen=True)
class CwomIds:
    """The ids of the objects one task became."""

    repo_id: str
    issue_id: str
    context_packet_id: str
    constraint_snapshot_id: str
    run_id: str


def ensure_repo(session: Session, *, fields: dict[str, object], actor: Actor, trace_id: str) -> str:
    """The repo with this slug, created once (concurrent creators race on the unique slug, not a read)."""
    found = session.execute(select(RepoRow.id).where(RepoRow.slug == fields["slug"])).scalar()
    if found is not None:
        return str(found)
    now = utcnow()
    values = {**fields, "id": new_id(), "trace_id": trace_id, "created_at": now, "updated_at": now}
    if insert_ignore(session, RepoRow.__table__, values, conflict=["slug"]) is not None:
        audit.record(
            session,
            actor=actor,
            action="created",
            entity_kind=ObjectKind.REPO,
            entity_id=str(values["id"]),
            after={k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in values.items()},
            trace_id=trace_id,
        )
        return str(values["id"])
    return session.execute(select(RepoRow.id).where(RepoRow.slug == fields["slug"])).scalar_one()


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


def create_for_task(
    session: Session, *, draft: CwomDraft, task_id: str, trace_id: str, actor: Actor, max_attempts: int
) -> CwomIds:
    """Write the objects one accepted task becomes, with their links and audit rows."""
    repo_id = ensure_repo(session, fields=draft.repo, actor=actor, trace_id=trace_id)
    issue = IssueRow(id=new_id(), repo_id=repo_id, trace_id=trace_id, **draft.issue)
    packet = ContextPacketRow(id=new_id(), issue_id=issue.id, trace_id=trace_id, **draft.context_packet)
    constraints = ConstraintSnapshotRow(id=new_id(), trace_id=trace_id, **draft.constraint_snapshot)
    run = RunRow(
        id=new_id(),
        issue_id=issue.id,
        repo_id=repo_id,
        task_id=task_id,
        trace_id=trace_id,
        max_attempts=max_attempts,
        inputs=[
            {"kind": ObjectKind.CONTEXT_PACKET.value, "id": packet.id},
            {"kind": ObjectKind.CONSTRAINT_SNAPSHOT.value, "id": constraints.id},
        ],
        **draft.run,
    )
    now = utcnow()
    for obj in (issue, packet, constraints, run):
        obj.created_at = now
        obj.updated_at = now
    # Without relationship() the unit of work does not order tables by foreign key: issue goes first.
    session.add(issue)
    session.flush()
    session.add_all([packet, constraints, run])
    session.flush()
    for kind, obj in (
        (ObjectKind.ISSUE, issue),
        (ObjectKind.CONTEXT_PACKET, packet),
        (ObjectKind.CONSTRAINT_SNAPSHOT, constraints),
        (ObjectKind.RUN, run),
    ):
        audit.record(
            session,
            actor=actor,
            action="created",
            entity_kind=kind,
            entity_id=obj.id,
            after=snapshot(obj),
            trace_id=trace_id,
        )
    issue_ref = (ObjectKind.ISSUE, issue.id)
    packet_ref = (ObjectKind.CONTEXT_PACKET, packet.id)
    links = (
        (issue_context_packets.name, issue_ref, packet_ref),
        (issue_constraint_snapshots.name, issue_ref, (ObjectKind.CONSTRAINT_SNAPSHOT, constraints.id)),
        (run_context_packets.name, (ObjectKind.RUN, run.id), packet_ref),
    )
    for table_name, left, right in links:
        link(session, table_name=table_name, left=left, right=right, actor=actor, trace_id=trace_id)
    return CwomIds(repo_id, issue.id, packet.id, constraints.id, run.id)


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
    """A 32-hex trace id for objects created outside intake."""
    return uuid.uuid4().hex


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
