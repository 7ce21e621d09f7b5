"""What one accepted task writes, built before any database work: the task row, its CWOM objects and
links, and the audit entries, in the order they are chained."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cwom import base
from cwom.audit import Actor, Entry, has_float
from cwom.base import new_id, utcnow
from cwom.enums import TaskStatus
from cwom.task_adapter import task_to_cwom
from cwom.task_rows import TaskObjects, task_objects
from policy import PolicyConfig, TaskCreateV1
from policy.errors import ControlTowerError


class FailureInjected(ControlTowerError):
    """A test asked intake to fail part-way through its transaction."""

    code = "FAILURE_INJECTED"


def new_trace_id() -> str:
    """A W3C-style 32-hex trace id shared by everything one task causes (`cwom.base.new_trace_id`)."""
    return base.new_trace_id()


def actor_for(task: TaskCreateV1) -> Actor:
    """The audit actor for a task: whoever asked for it."""
    return Actor(task.requested_by.kind, task.requested_by.id)


@dataclass(frozen=True)
class Built:
    """The rows of one intake: `task` (all columns), the CWOM objects (or None) and the audit entries."""

    task: dict[str, Any]
    objects: TaskObjects | None
    audit: list[Entry]


@dataclass(frozen=True)
class IntakePlan:
    """A policy-approved task and how to store it."""

    task: TaskCreateV1
    config: PolicyConfig
    source: str
    create_cwom: bool
    max_attempts: int

    def build(self, *, repo_id: str | None) -> Built:
        """The rows; `repo_id` is the stored Repo with the task's slug, None to create one."""
        task, now = self.task, utcnow()
        task_id, trace_id = new_id(), new_trace_id()
        actor = actor_for(task)
        objects = None
        if self.create_cwom:
            objects = task_objects(
                task_to_cwom(task, policy_version=self.config.version_hash),
                task_id=task_id,
                trace_id=trace_id,
                actor=actor,
                max_attempts=self.max_attempts,
                now=now,
                repo_id=repo_id,
                floatless=not (has_float(task.inputs) or has_float(task.metadata)),
            )
        values: dict[str, Any] = {
            "id": task_id,
            "idempotency_key": task.idempotency_key,
            "request_hash": task.request_hash(),
            "status": TaskStatus.QUEUED.value,
            "operation": task.operation,
            "repo": task.target.repo,
            "ref": task.target.ref,
            "priority": task.priority,
            "requested_by_kind": task.requested_by.kind,
            "requested_by_id": task.requested_by.id,
            "source": self.source,
            "body": task.model_dump(mode="json"),
            "policy_version": self.config.version_hash,
            "trace_id": trace_id,
            "cwom_issue_id": objects.ids.issue_id if objects else None,
            "run_id": objects.ids.run_id if objects else None,
            "error_code": None,
            "error_message": None,
            "created_at": now,
            "updated_at": now,
        }
        entries = [
            Entry(
                actor,
                "policy_allowed",
                "task",
                task_id,
                None,
                {"policy_version": self.config.version_hash, "operation": task.operation},
                None,
                trace_id,
                now,
                plain=True,
                floatless=True,  # a hash and an operation name
            ),
            *(objects.audit if objects else []),
            Entry(
                actor,
                "created",
                "task",
                task_id,
                None,
                task_audit(values),
                None,
                trace_id,
                now,
                plain=True,
                floatless=True,  # strings and ids only
            ),
        ]
        return Built(values, objects, entries)


def task_audit(row: dict[str, Any]) -> dict[str, Any]:
    """The task fields its `created` audit row carries."""
    keys = ("status", "operation", "repo", "ref", "source", "policy_version", "cwom_issue_id", "run_id")
    return {k: row[k] for k in keys}
