"""SQLAlchemy tables of the seven canonical work objects and their six join tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, String, Table, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from cwom.base import Base, ULIDStr, new_id, utcnow


class _Object:
    """Columns every CWOM object has."""

    id: Mapped[str] = mapped_column(ULIDStr, primary_key=True, default=new_id)
    # Not indexed: nothing looks objects up by trace (a trace is read from the audit log, whose
    # trace index serves it), and each index cost a btree insert per object (migration 0010).
    trace_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RepoRow(_Object, Base):
    __tablename__ = "cwom_repos"

    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(255), unique=True)
    source_system: Mapped[str] = mapped_column(String(64), default="github")
    source_external_id: Mapped[str | None] = mapped_column(String(200))
    default_branch: Mapped[str] = mapped_column(String(255), default="main")


class IssueRow(_Object, Base):
    __tablename__ = "cwom_issues"

    repo_id: Mapped[str] = mapped_column(ForeignKey("cwom_repos.id"), index=True)
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="")
    type: Mapped[str] = mapped_column(String(32))
    priority: Mapped[str] = mapped_column(String(8), default="p2")
    status: Mapped[str] = mapped_column(String(32), default="open", index=True)
    acceptance: Mapped[dict[str, Any]] = mapped_column(default=dict)
    labels: Mapped[list[Any]] = mapped_column(default=list)
    external_ref: Mapped[str | None] = mapped_column(String(300))
    # Where the issue came from (the task's requester, target ref/path, metadata), for the round trip.
    provenance: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ContextPacketRow(_Object, Base):
    __tablename__ = "cwom_context_packets"

    issue_id: Mapped[str] = mapped_column(ForeignKey("cwom_issues.id"), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    summary: Mapped[str] = mapped_column(Text, default="")
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    assumptions: Mapped[list[Any]] = mapped_column(default=list)
    instructions: Mapped[str] = mapped_column(Text, default="")


class ConstraintSnapshotRow(_Object, Base):
    __tablename__ = "cwom_constraint_snapshots"

    time_budget_seconds: Mapped[int] = mapped_column(Integer)
    allow_network: Mapped[bool]
    allow_secrets: Mapped[bool]
    tool_limits: Mapped[dict[str, Any]] = mapped_column(default=dict)
    policy_version: Mapped[str | None] = mapped_column(String(80))


class DoctrineRefRow(_Object, Base):
    __tablename__ = "cwom_doctrine_refs"

    namespace: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100))
    hash: Mapped[str] = mapped_column(String(100))
    uri: Mapped[str | None] = mapped_column(String(1000))
    content: Mapped[dict[str, Any] | None]


class RunRow(_Object, Base):
    """An execution attempt; also the worker's queue entry (lease columns)."""

    __tablename__ = "cwom_runs"

    issue_id: Mapped[str] = mapped_column(ForeignKey("cwom_issues.id"), index=True)
    # Neither is a filter of any query (runs are listed by issue and status; a run's task is read from
    # the run), and Repos are never deleted: no index (migration 0010).
    repo_id: Mapped[str] = mapped_column(ForeignKey("cwom_repos.id"))
    task_id: Mapped[str | None] = mapped_column(ULIDStr)
    mode: Mapped[str] = mapped_column(String(16), default="agent")
    executor: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    inputs: Mapped[list[Any]] = mapped_column(default=list)
    outputs: Mapped[list[Any]] = mapped_column(default=list)
    telemetry: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cost: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Queue and lease.
    priority: Mapped[int] = mapped_column(Integer, default=100)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    locked_by: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    available_at: Mapped[datetime] = mapped_column(default=utcnow)
    current_step: Mapped[str | None] = mapped_column(String(100))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(BigInteger, default=0)

    # PostgreSQL: partial, each holding only the rows its query looks for (migration 0009), so the
    # claim reads the queued runs in order whatever the planner's statistics say, and a run's update
    # adds an entry only to the index whose rows it joins (none when it finishes).
    __table_args__ = (
        Index(
            "ix_cwom_runs_claim",
            "status",
            "priority",
            "created_at",
            postgresql_where=text("status = 'queued'"),
        ),
        Index(
            "ix_cwom_runs_lease", "status", "lease_expires_at", postgresql_where=text("status = 'running'")
        ),
    )


class ArtifactRow(_Object, Base):
    __tablename__ = "cwom_artifacts"

    run_id: Mapped[str] = mapped_column(ForeignKey("cwom_runs.id"), index=True)
    issue_id: Mapped[str | None] = mapped_column(ForeignKey("cwom_issues.id"), index=True)
    type: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(500))
    uri: Mapped[str | None] = mapped_column(String(2000))
    digest: Mapped[str | None] = mapped_column(String(100))
    verification: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Write-backs are idempotent: one artifact per (run, key), e.g. the status comment or the PR.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)


def _join(name: str, left: str, left_table: str, right: str, right_table: str) -> Table:
    """A link table; its primary key (left, right) serves every read, which goes from the left side.
    The right side has no index of its own (migration 0010): no query starts from it, and the objects it
    references are never deleted, so no foreign-key check scans for it."""
    return Table(
        name,
        Base.metadata,
        Column(left, ULIDStr, ForeignKey(f"{left_table}.id"), primary_key=True),
        Column(right, ULIDStr, ForeignKey(f"{right_table}.id"), primary_key=True),
    )


issue_context_packets = _join(
    "cwom_issue_context_packets", "issue_id", "cwom_issues", "context_packet_id", "cwom_context_packets"
)
issue_doctrine_refs = _join(
    "cwom_issue_doctrine_refs", "issue_id", "cwom_issues", "doctrine_ref_id", "cwom_doctrine_refs"
)
issue_constraint_snapshots = _join(
    "cwom_issue_constraint_snapshots",
    "issue_id",
    "cwom_issues",
    "constraint_snapshot_id",
    "cwom_constraint_snapshots",
)
run_context_packets = _join(
    "cwom_run_context_packets", "run_id", "cwom_runs", "context_packet_id", "cwom_context_packets"
)
run_doctrine_refs = _join(
    "cwom_run_doctrine_refs", "run_id", "cwom_runs", "doctrine_ref_id", "cwom_doctrine_refs"
)
context_packet_doctrine_refs = _join(
    "cwom_context_packet_doctrine_refs",
    "context_packet_id",
    "cwom_context_packets",
    "doctrine_ref_id",
    "cwom_doctrine_refs",
)
