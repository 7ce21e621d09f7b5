"""Reading canonical objects: keyset pages (newest first by ULID id) and rows turned into out-models."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from cwom.enums import ObjectKind
from cwom.schemas import (
    ArtifactOut,
    ConstraintSnapshotOut,
    ContextPacketOut,
    DoctrineRefOut,
    IssueOut,
    Ref,
    RepoOut,
    RepoSource,
    RunOut,
)
from cwom.tables import (
    ArtifactRow,
    ConstraintSnapshotRow,
    ContextPacketRow,
    DoctrineRefRow,
    IssueRow,
    RepoRow,
    RunRow,
    context_packet_doctrine_refs,
    issue_constraint_snapshots,
    issue_context_packets,
    issue_doctrine_refs,
    run_context_packets,
    run_doctrine_refs,
)


def keyset(
    session: Session, model: type[Any], *, filters: dict[str, Any], limit: int, before_id: str | None
) -> tuple[list[Any], str | None]:
    """Rows newest first (ULID ids sort by creation time); returns the page and the last id if more."""
    stmt = select(model).order_by(model.id.desc()).limit(limit + 1)
    for column, value in filters.items():
        if value is not None:
            stmt = stmt.where(getattr(model, column) == value)
    if before_id is not None:
        stmt = stmt.where(model.id < before_id)
    rows = list(session.execute(stmt).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


def _links(session: Session, table: Table, kind: ObjectKind, ids: list[str]) -> dict[str, list[Ref]]:
    left, right = (c for c in table.primary_key.columns)
    out: dict[str, list[Ref]] = defaultdict(list)
    if ids:
        for lid, rid in session.execute(select(left, right).where(left.in_(ids)).order_by(left, right)):
            out[lid].append(Ref(kind=kind, id=rid))
    return out


def _base(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "trace_id": row.trace_id,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def repos_out(rows: list[RepoRow]) -> list[RepoOut]:
    return [
        RepoOut(
            **_base(r),
            name=r.name,
            slug=r.slug,
            source=RepoSource(system=r.source_system, external_id=r.source_external_id),
            default_branch=r.default_branch,
        )
        for r in rows
    ]


def issues_out(session: Session, rows: list[IssueRow]) -> list[IssueOut]:
    ids = [r.id for r in rows]
    packets = _links(session, issue_context_packets, ObjectKind.CONTEXT_PACKET, ids)
    doctrine = _links(session, issue_doctrine_refs, ObjectKind.DOCTRINE_REF, ids)
    snapshots = _links(session, issue_constraint_snapshots, ObjectKind.CONSTRAINT_SNAPSHOT, ids)
    return [
        IssueOut(
            **_base(r),
            repo=Ref(kind=ObjectKind.REPO, id=r.repo_id),
            title=r.title,
            description=r.description,
            type=r.type,
            priority=r.priority,
            status=r.status,
            acceptance=r.acceptance,
            labels=r.labels,
            external_ref=r.external_ref,
            context_packets=packets[r.id],
            doctrine_refs=doctrine[r.id],
            constraint_snapshots=snapshots[r.id],
        )
        for r in rows
    ]


def context_packets_out(session: Session, rows: list[ContextPacketRow]) -> list[ContextPacketOut]:
    doctrine = _links(session, context_packet_doctrine_refs, ObjectKind.DOCTRINE_REF, [r.id for r in rows])
    return [
        ContextPacketOut(
            **_base(r),
            for_issue=Ref(kind=ObjectKind.ISSUE, id=r.issue_id),
            version=r.version,
            summary=r.summary,
            inputs=r.inputs,
            assumptions=r.assumptions,
            instructions=r.instructions,
            doctrine_refs=doctrine[r.id],
        )
        for r in rows
    ]


def constraint_snapshots_out(rows: list[ConstraintSnapshotRow]) -> list[ConstraintSnapshotOut]:
    return [
        ConstraintSnapshotOut(
            **_base(r),
            time_budget_seconds=r.time_budget_seconds,
            allow_network=r.allow_network,
            allow_secrets=r.allow_secrets,
            tool_limits=r.tool_limits,
            policy_version=r.policy_version,
        )
        for r in rows
    ]


def doctrine_refs_out(rows: list[DoctrineRefRow]) -> list[DoctrineRefOut]:
    return [
        DoctrineRefOut(
            **_base(r),
            namespace=r.namespace,
            name=r.name,
            version=r.version,
            hash=r.hash,
            uri=r.uri,
            content=r.content,
        )
        for r in rows
    ]


def runs_out(session: Session, rows: list[RunRow]) -> list[RunOut]:
    ids = [r.id for r in rows]
    packets = _links(session, run_context_packets, ObjectKind.CONTEXT_PACKET, ids)
    doctrine = _links(session, run_doctrine_refs, ObjectKind.DOCTRINE_REF, ids)
    return [
        RunOut(
            **_base(r),
            for_issue=Ref(kind=ObjectKind.ISSUE, id=r.issue_id),
            repo=Ref(kind=ObjectKind.REPO, id=r.repo_id),
            task_id=r.task_id,
            mode=r.mode,
            executor=r.executor,
            status=r.status,
            inputs=r.inputs,
            outputs=r.outputs,
            telemetry=r.telemetry,
            cost=r.cost,
            attempt=r.attempt,
            max_attempts=r.max_attempts,
            current_step=r.current_step,
            error_code=r.error_code,
            error_message=r.error_message,
            started_at=r.started_at,
            ended_at=r.ended_at,
            context_packets=packets[r.id],
            doctrine_refs=doctrine[r.id],
        )
        for r in rows
    ]


def artifacts_out(rows: list[ArtifactRow]) -> list[ArtifactOut]:
    return [
        ArtifactOut(
            **_base(r),
            produced_by=Ref(kind=ObjectKind.RUN, id=r.run_id),
            for_issue=Ref(kind=ObjectKind.ISSUE, id=r.issue_id) if r.issue_id else None,
            type=r.type,
            title=r.title,
            uri=r.uri,
            digest=r.digest,
            verification=r.verification,
            idempotency_key=r.idempotency_key,
        )
        for r in rows
    ]
