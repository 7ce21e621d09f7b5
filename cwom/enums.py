"""Every enumeration the canonical work objects share, in one place."""

from __future__ import annotations

from enum import StrEnum


class ObjectKind(StrEnum):
    """The kinds a `Ref` can point at."""

    REPO = "repo"
    ISSUE = "issue"
    CONTEXT_PACKET = "context_packet"
    CONSTRAINT_SNAPSHOT = "constraint_snapshot"
    DOCTRINE_REF = "doctrine_ref"
    RUN = "run"
    ARTIFACT = "artifact"


class IssueType(StrEnum):
    FEATURE = "feature"
    BUG = "bug"
    DOC = "doc"
    RESEARCH = "research"
    OPS = "ops"
    CHORE = "chore"


class IssueStatus(StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    BLOCKED = "blocked"
    DONE = "done"
    CANCELLED = "cancelled"


class Priority(StrEnum):
    P0 = "p0"
    P1 = "p1"
    P2 = "p2"
    P3 = "p3"


class RunMode(StrEnum):
    HUMAN = "human"
    AGENT = "agent"
    SYSTEM = "system"


class RunStatus(StrEnum):
    PLANNED = "planned"
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ArtifactType(StrEnum):
    PR = "pr"
    COMMIT = "commit"
    PATCH = "patch"
    REPORT = "report"
    LOG = "log"
    TRACE = "trace"
    COMMENT = "comment"


class VerificationStatus(StrEnum):
    UNVERIFIED = "unverified"
    PASSED = "passed"
    FAILED = "failed"


class TaskStatus(StrEnum):
    """The intake task's status; the worker mirrors the run's onto it."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PLANNED: frozenset({RunStatus.QUEUED, RunStatus.CANCELLED}),
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED}),
    # running -> queued is a released lease (SIGTERM drain or a reclaimed crash).
    RunStatus.RUNNING: frozenset(
        {RunStatus.WAITING, RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.QUEUED}
    ),
    RunStatus.WAITING: frozenset(
        {RunStatus.RUNNING, RunStatus.QUEUED, RunStatus.FAILED, RunStatus.CANCELLED}
    ),
    RunStatus.DONE: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}

ISSUE_TRANSITIONS: dict[IssueStatus, frozenset[IssueStatus]] = {
    IssueStatus.OPEN: frozenset(
        {IssueStatus.IN_PROGRESS, IssueStatus.BLOCKED, IssueStatus.DONE, IssueStatus.CANCELLED}
    ),
    IssueStatus.IN_PROGRESS: frozenset(
        {IssueStatus.OPEN, IssueStatus.BLOCKED, IssueStatus.DONE, IssueStatus.CANCELLED}
    ),
    IssueStatus.BLOCKED: frozenset({IssueStatus.OPEN, IssueStatus.IN_PROGRESS, IssueStatus.CANCELLED}),
    IssueStatus.DONE: frozenset({IssueStatus.OPEN}),
    IssueStatus.CANCELLED: frozenset({IssueStatus.OPEN}),
}

RUN_TO_TASK: dict[RunStatus, TaskStatus] = {
    RunStatus.PLANNED: TaskStatus.QUEUED,
    RunStatus.QUEUED: TaskStatus.QUEUED,
    RunStatus.RUNNING: TaskStatus.RUNNING,
    RunStatus.WAITING: TaskStatus.WAITING,
    RunStatus.DONE: TaskStatus.COMPLETED,
    RunStatus.FAILED: TaskStatus.FAILED,
    RunStatus.CANCELLED: TaskStatus.CANCELLED,
}
