"""Create and update repos, issues, context packets, constraint snapshots, doctrine refs and artifacts.

Every function runs inside the caller's transaction and queues its audit rows there, so a change and
its audit record commit (or roll back) together.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cwom import audit
from cwom.audit import Actor
from cwom.base import new_id, utcnow
from cwom.enums import ISSUE_TRANSITIONS, IssueStatus, ObjectKind
from cwom.errors import ArtifactExists, InvalidTransition, RepoExists, VersionExists
from cwom.rows import insert_ignore
from cwom.schemas import (
    ArtifactCreate,
    ConstraintSnapshotCreate,
    ContextPacketCreate,
    DoctrineRefCreate,
    IssueCreate,
    IssueUpdate,
    RepoCreate,
)
from cwom.service import get_object, link, link_refs, new_trace_id, record_created, resolve, stamp
from cwom.tables import (
    ArtifactRow,
    ConstraintSnapshotRow,
    ContextPacketRow,
    DoctrineRefRow,
    IssueRow,
    RepoRow,
    context_packet_doctrine_refs,
    issue_constraint_snapshots,
    issue_context_packets,
    issue_doctrine_refs,
)


def create_repo(session: Session, *, body: RepoCreate, actor: Actor) -> RepoRow:
    """A new repo; 409 REPO_EXISTS when the slug is taken (the unique index decides, not a read)."""
    now = utcnow()
    values: dict[str, Any] = {
        "id": new_id(),
        "trace_id": body.trace_id or new_trace_id(),
        "created_at": now,
        "updated_at": now,
        "name": body.name,
        "slug": body.slug,
        "source_system": body.source.system,
        "source_external_id": body.source.external_id,
        "default_branch": body.default_branch,
    }
    row = insert_ignore(session, RepoRow, values, conflict=["slug"])
    if row is None:
        raise RepoExists(message=f"repo {body.slug!r} already exists", field="slug")
    record_created(session, actor=actor, kind=ObjectKind.REPO, row=row)
    return row  # type: ignore[no-any-return]


def create_issue(session: Session, *, body: IssueCreate, actor: Actor) -> IssueRow:
    """A new open issue in a repo, linked to the context packets, doctrine refs and snapshots named."""
    repo = resolve(session, body.repo, kind=ObjectKind.REPO, field="repo")
    row = stamp(
        IssueRow(
            repo_id=repo.id,
            title=body.title,
            description=body.description,
            type=body.type.value,
            priority=body.priority.value,
            status=IssueStatus.OPEN.value,
            acceptance=body.acceptance.model_dump(),
            labels=list(body.labels),
            external_ref=body.external_ref,
            provenance={"kind": "api"},
        ),
        trace_id=body.trace_id,
    )
    session.add(row)
    session.flush()
    record_created(session, actor=actor, kind=ObjectKind.ISSUE, row=row)
    left = (ObjectKind.ISSUE, row.id)
    for table, refs, kind, field in (
        (issue_context_packets, body.context_packets, ObjectKind.CONTEXT_PACKET, "context_packets"),
        (issue_doctrine_refs, body.doctrine_refs, ObjectKind.DOCTRINE_REF, "doctrine_refs"),
        (
            issue_constraint_snapshots,
            body.constraint_snapshots,
            ObjectKind.CONSTRAINT_SNAPSHOT,
            "constraint_snapshots",
        ),
    ):
        link_refs(
            session,
            table=table,
            left=left,
            refs=refs,
            kind=kind,
            field=field,
            actor=actor,
            trace_id=row.trace_id,
        )
    return row


def update_issue(session: Session, *, issue_id: str, body: IssueUpdate, actor: Actor) -> IssueRow:
    """Apply a PATCH: field changes audited `updated`, a status change audited `status_changed`."""
    row: IssueRow = get_object(session, ObjectKind.ISSUE, issue_id)
    # Lock the row so two PATCHes cannot both pass the transition check from the same status.
    session.refresh(row, with_for_update=True)
    changes = body.model_dump(exclude_unset=True, exclude={"note", "status"}, mode="json")
    # An explicit null only clears what may be empty; for the other fields it means "no change".
    changes = {k: v for k, v in changes.items() if v is not None or k == "external_ref"}
    before = {k: getattr(row, k) for k in changes if getattr(row, k) != changes[k]}
    after = {k: changes[k] for k in before}
    if body.status is not None and body.status.value != row.status:
        current = IssueStatus(row.status)
        if body.status not in ISSUE_TRANSITIONS[current]:
            raise InvalidTransition(
                message=f"an issue cannot go from {current.value} to {body.status.value}", field="status"
            )
        audit.record(
            session,
            actor=actor,
            action="status_changed",
            entity_kind=ObjectKind.ISSUE,
            entity_id=row.id,
            before={"status": row.status},
            after={"status": body.status.value},
            note=body.note,
            trace_id=row.trace_id,
        )
        row.status = body.status.value
    if after:
        for key, value in after.items():
            setattr(row, key, value)
        audit.record(
            session,
            actor=actor,
            action="updated",
            entity_kind=ObjectKind.ISSUE,
            entity_id=row.id,
            before=before,
            after=after,
            note=body.note,
            trace_id=row.trace_id,
        )
    row.updated_at = utcnow()
    session.flush()
    return row


def create_context_packet(session: Session, *, body: ContextPacketCreate, actor: Actor) -> ContextPacketRow:
    """A new (immutable) briefing for an issue, linked to it and to the doctrine refs named."""
    issue = resolve(session, body.for_issue, kind=ObjectKind.ISSUE, field="for_issue")
    latest = session.execute(
        select(func.max(ContextPacketRow.version)).where(ContextPacketRow.issue_id == issue.id)
    ).scalar()
    version = body.version if body.version is not None else (latest or 0) + 1
    if body.version is not None and latest is not None:
        taken = session.execute(
            select(ContextPacketRow.id).where(
                ContextPacketRow.issue_id == issue.id, ContextPacketRow.version == version
            )
        ).first()
        if taken is not None:
            raise VersionExists(message=f"issue {issue.id} already has version {version}", field="version")
    row = stamp(
        ContextPacketRow(
            issue_id=issue.id,
            version=version,
            summary=body.summary,
            inputs=body.inputs,
            assumptions=body.assumptions,
            instructions=body.instructions,
        ),
        trace_id=body.trace_id or issue.trace_id,
    )
    session.add(row)
    session.flush()
    record_created(session, actor=actor, kind=ObjectKind.CONTEXT_PACKET, row=row)
    link(
        session,
        table_name=issue_context_packets.name,
        left=(ObjectKind.ISSUE, issue.id),
        right=(ObjectKind.CONTEXT_PACKET, row.id),
        actor=actor,
        trace_id=row.trace_id,
    )
    link_refs(
        session,
        table=context_packet_doctrine_refs,
        left=(ObjectKind.CONTEXT_PACKET, row.id),
        refs=body.doctrine_refs,
        kind=ObjectKind.DOCTRINE_REF,
        field="doctrine_refs",
        actor=actor,
        trace_id=row.trace_id,
    )
    return row


def create_constraint_snapshot(
    session: Session, *, body: ConstraintSnapshotCreate, actor: Actor
) -> ConstraintSnapshotRow:
    """A new (immutable) operating envelope."""
    row = stamp(ConstraintSnapshotRow(**body.model_dump(exclude={"trace_id"})), trace_id=body.trace_id)
    session.add(row)
    session.flush()
    record_created(session, actor=actor, kind=ObjectKind.CONSTRAINT_SNAPSHOT, row=row)
    return row


def create_doctrine_ref(session: Session, *, body: DoctrineRefCreate, actor: Actor) -> DoctrineRefRow:
    """A new reference to a governing rule set."""
    row = stamp(DoctrineRefRow(**body.model_dump(exclude={"trace_id"})), trace_id=body.trace_id)
    session.add(row)
    session.flush()
    record_created(session, actor=actor, kind=ObjectKind.DOCTRINE_REF, row=row)
    return row


def create_artifact(session: Session, *, body: ArtifactCreate, actor: Actor) -> ArtifactRow:
    """A new output of a run; 409 ARTIFACT_EXISTS when its idempotency key was used."""
    run = resolve(session, body.produced_by, kind=ObjectKind.RUN, field="produced_by")
    issue_id = run.issue_id
    if body.for_issue is not None:
        issue_id = resolve(session, body.for_issue, kind=ObjectKind.ISSUE, field="for_issue").id
    now = utcnow()
    values: dict[str, Any] = {
        "id": new_id(),
        "trace_id": body.trace_id or run.trace_id or new_trace_id(),
        "created_at": now,
        "updated_at": now,
        "run_id": run.id,
        "issue_id": issue_id,
        "type": body.type.value,
        "title": body.title,
        "uri": body.uri,
        "digest": body.digest,
        "verification": body.verification.model_dump(mode="json"),
        "idempotency_key": body.idempotency_key,
    }
    if body.idempotency_key is None:
        row = ArtifactRow(**values)
        session.add(row)
        session.flush()
    else:
        row = insert_ignore(session, ArtifactRow, values, conflict=["idempotency_key"])
        if row is None:
            raise ArtifactExists(
                message=f"idempotency key {body.idempotency_key!r} was already used", field="idempotency_key"
            )
    record_created(session, actor=actor, kind=ObjectKind.ARTIFACT, row=row)
    return row
