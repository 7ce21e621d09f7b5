"""Pydantic in/out models of the seven canonical work objects; every link is a `Ref {kind, id}`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from cwom.enums import (
    ArtifactType,
    IssueStatus,
    IssueType,
    ObjectKind,
    Priority,
    RunMode,
    RunStatus,
    VerificationStatus,
)

SLUG_PATTERN = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"
T = TypeVar("T")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Ref(_In):
    """A link to another canonical object."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ObjectKind
    id: str = Field(min_length=1, max_length=26)


class _Out(BaseModel):
    id: str
    trace_id: str | None
    created_at: datetime
    updated_at: datetime


class RepoSource(_In):
    system: str = Field(default="github", min_length=1, max_length=64)
    external_id: str | None = Field(default=None, max_length=200)


class RepoCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    slug: str = Field(pattern=SLUG_PATTERN, max_length=255, description='"owner/name"')
    source: RepoSource = Field(default_factory=RepoSource)
    default_branch: str = Field(default="main", min_length=1, max_length=255)
    trace_id: str | None = Field(default=None, max_length=64)


class RepoOut(_Out):
    name: str
    slug: str
    source: RepoSource
    default_branch: str


class Acceptance(_In):
    criteria: list[str] = Field(default_factory=list)


class IssueCreate(_In):
    repo: Ref
    title: str = Field(min_length=1, max_length=500)
    description: str = ""
    type: IssueType
    priority: Priority = Priority.P2
    acceptance: Acceptance = Field(default_factory=Acceptance)
    labels: list[str] = Field(default_factory=list)
    external_ref: str | None = Field(default=None, max_length=300)
    context_packets: list[Ref] = Field(default_factory=list)
    doctrine_refs: list[Ref] = Field(default_factory=list)
    constraint_snapshots: list[Ref] = Field(default_factory=list)
    trace_id: str | None = Field(default=None, max_length=64)


class IssueUpdate(_In):
    """Fields a PATCH may change; a status change follows ISSUE_TRANSITIONS."""

    title: str | None = Field(default=None, min_length=1, max_length=500)
    description: str | None = None
    type: IssueType | None = None
    priority: Priority | None = None
    status: IssueStatus | None = None
    acceptance: Acceptance | None = None
    labels: list[str] | None = None
    external_ref: str | None = Field(default=None, max_length=300)
    note: str | None = Field(default=None, max_length=2000, description="kept in the audit row")


class IssueOut(_Out):
    repo: Ref
    title: str
    description: str
    type: str
    priority: str
    status: str
    acceptance: dict[str, Any]
    labels: list[Any]
    external_ref: str | None
    context_packets: list[Ref]
    doctrine_refs: list[Ref]
    constraint_snapshots: list[Ref]


class ContextPacketCreate(_In):
    for_issue: Ref
    version: int | None = Field(default=None, ge=1, description="default: the issue's next version")
    summary: str = ""
    inputs: dict[str, Any] = Field(default_factory=dict)
    assumptions: list[Any] = Field(default_factory=list)
    instructions: str = ""
    doctrine_refs: list[Ref] = Field(default_factory=list)
    trace_id: str | None = Field(default=None, max_length=64)


class ContextPacketOut(_Out):
    for_issue: Ref
    version: int
    summary: str
    inputs: dict[str, Any]
    assumptions: list[Any]
    instructions: str
    doctrine_refs: list[Ref]


class ConstraintSnapshotCreate(_In):
    time_budget_seconds: int = Field(ge=1)
    allow_network: bool = False
    allow_secrets: bool = False
    tool_limits: dict[str, Any] = Field(default_factory=dict)
    policy_version: str | None = Field(default=None, max_length=80)
    trace_id: str | None = Field(default=None, max_length=64)


class ConstraintSnapshotOut(_Out):
    time_budget_seconds: int
    allow_network: bool
    allow_secrets: bool
    tool_limits: dict[str, Any]
    policy_version: str | None


class DoctrineRefCreate(_In):
    namespace: str = Field(min_length=1, max_length=100)
    name: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=100)
    hash: str = Field(min_length=1, max_length=100)
    uri: str | None = Field(default=None, max_length=1000)
    content: dict[str, Any] | None = None
    trace_id: str | None = Field(default=None, max_length=64)


class DoctrineRefOut(_Out):
    namespace: str
    name: str
    version: str
    hash: str
    uri: str | None
    content: dict[str, Any] | None


class RunCreate(_In):
    """A run recorded by hand; it starts `planned` (queueing work goes through intake and policy)."""

    for_issue: Ref
    repo: Ref | None = Field(default=None, description="default: the issue's repo")
    mode: RunMode = RunMode.HUMAN
    executor: dict[str, Any] = Field(default_factory=dict, description="{actor, runtime}")
    inputs: list[Ref] = Field(default_factory=list)
    context_packets: list[Ref] = Field(default_factory=list)
    doctrine_refs: list[Ref] = Field(default_factory=list)
    trace_id: str | None = Field(default=None, max_length=64)


class RunUpdate(_In):
    """An operator's status change (see `cwom.service_runs.OPERATOR_RUN_TRANSITIONS`)."""

    status: RunStatus
    note: str | None = Field(default=None, max_length=2000)


class RunOut(_Out):
    for_issue: Ref
    repo: Ref
    task_id: str | None
    mode: str
    executor: dict[str, Any]
    status: str
    inputs: list[Any]
    outputs: list[Any]
    telemetry: dict[str, Any]
    cost: dict[str, Any]
    attempt: int
    max_attempts: int
    current_step: str | None
    error_code: str | None
    error_message: str | None
    started_at: datetime | None
    ended_at: datetime | None
    context_packets: list[Ref]
    doctrine_refs: list[Ref]


class Verification(_In):
    status: VerificationStatus = VerificationStatus.UNVERIFIED
    checks: list[Any] = Field(default_factory=list)


class ArtifactCreate(_In):
    produced_by: Ref
    for_issue: Ref | None = Field(default=None, description="default: the run's issue")
    type: ArtifactType
    title: str = Field(min_length=1, max_length=500)
    uri: str | None = Field(default=None, max_length=2000)
    digest: str | None = Field(default=None, max_length=100)
    verification: Verification = Field(default_factory=Verification)
    idempotency_key: str | None = Field(default=None, max_length=200)
    trace_id: str | None = Field(default=None, max_length=64)


class ArtifactOut(_Out):
    produced_by: Ref
    for_issue: Ref | None
    type: str
    title: str
    uri: str | None
    digest: str | None
    verification: dict[str, Any]
    idempotency_key: str | None


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None
