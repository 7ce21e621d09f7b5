"""Response models of the task and policy endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from control_tower.tables import TaskRow
from cwom.task_rows import CwomIds


class ErrorInfo(BaseModel):
    code: str
    field: str | None = None
    message: str


class ErrorResponse(BaseModel):
    error: ErrorInfo


class CwomIdsOut(BaseModel):
    repo_id: str
    issue_id: str
    context_packet_id: str
    constraint_snapshot_id: str
    run_id: str


class TaskOut(BaseModel):
    """A stored task as clients see it."""

    task_id: str
    status: str
    operation: str
    repo: str
    ref: str
    priority: int
    source: str
    requested_by: dict[str, Any]
    policy_version: str
    trace_id: str
    created_at: datetime
    updated_at: datetime
    run_id: str | None
    cwom_issue_id: str | None
    cwom: CwomIdsOut | None = None
    error: ErrorInfo | None = None
    task: dict[str, Any]
    idempotent_replay: bool = False

    @classmethod
    def from_row(cls, row: TaskRow, *, ids: CwomIds | None = None, replay: bool = False) -> TaskOut:
        """Build from a row (and the CWOM ids when known)."""
        error = (
            ErrorInfo(code=row.error_code, message=row.error_message or "")
            if row.error_code is not None
            else None
        )
        return cls(
            task_id=row.id,
            status=row.status,
            operation=row.operation,
            repo=row.repo,
            ref=row.ref,
            priority=row.priority,
            source=row.source,
            requested_by=row.body.get("requested_by", {}),
            policy_version=row.policy_version,
            trace_id=row.trace_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
            run_id=row.run_id,
            cwom_issue_id=row.cwom_issue_id,
            cwom=CwomIdsOut(**ids.__dict__) if ids is not None else None,
            error=error,
            task=row.body,
            idempotent_replay=replay,
        )


class TaskPage(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None


class PolicyDecisionOut(BaseModel):
    """A dry-run decision: nothing is stored."""

    decision: Literal["allow", "deny"]
    policy_version: str
    task: dict[str, Any] | None = None
    error: ErrorInfo | None = None
