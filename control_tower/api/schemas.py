"""Response models of the task and policy endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import orjson
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
        return cls(**_out_fields({name: getattr(row, name) for name in _COLUMNS}, ids, replay))


def task_out_json(columns: Mapping[str, Any], *, ids: CwomIds | None, replay: bool) -> bytes:
    """`TaskOut.from_row(...).model_dump_json()` from a task's columns, with no model built: orjson
    writes the same text for these fields (a test compares the two), ~20 µs less per request.
    What orjson refuses (an integer past 64 bits in the body) goes through the model."""
    fields = _out_fields(columns, ids, replay)
    try:
        return orjson.dumps(fields, option=orjson.OPT_UTC_Z)
    except TypeError:
        return TaskOut(**fields).model_dump_json().encode()


_COLUMNS = (
    "id",
    "status",
    "operation",
    "repo",
    "ref",
    "priority",
    "source",
    "body",
    "policy_version",
    "trace_id",
    "created_at",
    "updated_at",
    "run_id",
    "cwom_issue_id",
    "error_code",
    "error_message",
)


def _out_fields(columns: Mapping[str, Any], ids: CwomIds | None, replay: bool) -> dict[str, Any]:
    """TaskOut's fields, in its order, from a task's columns."""
    error_code = columns["error_code"]
    body = columns["body"]
    return {
        "task_id": columns["id"],
        "status": columns["status"],
        "operation": columns["operation"],
        "repo": columns["repo"],
        "ref": columns["ref"],
        "priority": columns["priority"],
        "source": columns["source"],
        "requested_by": body.get("requested_by", {}),
        "policy_version": columns["policy_version"],
        "trace_id": columns["trace_id"],
        "created_at": columns["created_at"],
        "updated_at": columns["updated_at"],
        "run_id": columns["run_id"],
        "cwom_issue_id": columns["cwom_issue_id"],
        "cwom": ids.__dict__ if ids is not None else None,
        "error": (
            {"code": error_code, "field": None, "message": columns["error_message"] or ""}
            if error_code is not None
            else None
        ),
        "task": body,
        "idempotent_replay": replay,
    }


class TaskPage(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None


class PolicyDecisionOut(BaseModel):
    """A dry-run decision: nothing is stored."""

    decision: Literal["allow", "deny"]
    policy_version: str
    task: dict[str, Any] | None = None
    error: ErrorInfo | None = None
