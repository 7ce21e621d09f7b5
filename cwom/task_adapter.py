"""Pure mapping between the V1 task contract and the canonical work objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cwom.enums import IssueType, Priority, RunMode
from policy.contract import Constraints, RequestedBy, Target, TaskCreateV1

OPERATION_TO_ISSUE_TYPE: dict[str, IssueType] = {
    "code_change": IssueType.FEATURE,
    "docs": IssueType.DOC,
    "analysis": IssueType.RESEARCH,
    "ops": IssueType.OPS,
}
ISSUE_TYPE_TO_OPERATION = {v: k for k, v in OPERATION_TO_ISSUE_TYPE.items()}
TITLE_MAX = 200
# The enums' values, looked up once (an enum member's `.value` is a descriptor call).
_ISSUE_TYPE_VALUES = {operation: kind.value for operation, kind in OPERATION_TO_ISSUE_TYPE.items()}
_PRIORITY_VALUES = {band: band.value for band in Priority}
_SYSTEM, _AGENT = RunMode.SYSTEM.value, RunMode.AGENT.value


def priority_band(priority: int) -> Priority:
    """The coarse CWOM priority for the contract's numeric priority (lower runs first)."""
    if priority <= 25:
        return Priority.P0
    if priority <= 75:
        return Priority.P1
    if priority <= 150:
        return Priority.P2
    return Priority.P3


def issue_title(objective: str) -> str:
    """The objective's first line, shortened to a title."""
    first = objective.strip().splitlines()[0] if objective.strip() else "untitled"
    return first if len(first) <= TITLE_MAX else first[: TITLE_MAX - 1] + "…"


@dataclass(frozen=True)
class CwomDraft:
    """Field values for the objects one task becomes (ids and timestamps are added by the writer)."""

    repo: dict[str, Any]
    issue: dict[str, Any]
    context_packet: dict[str, Any]
    constraint_snapshot: dict[str, Any]
    run: dict[str, Any]


def task_to_cwom(task: TaskCreateV1, *, policy_version: str) -> CwomDraft:
    """Map a normalised task onto Repo, Issue, ContextPacket, ConstraintSnapshot and Run fields."""
    _owner, name = task.target.repo.split("/", 1)
    requested_by = task.requested_by.model_dump(mode="json")
    title = issue_title(task.objective)
    provenance = {
        "kind": "task",
        "version": task.version,
        "requested_by": requested_by,
        "target": {"ref": task.target.ref, "path": task.target.path},
        "metadata": task.metadata,
        "priority": task.priority,
        "idempotency_key": task.idempotency_key,
    }
    is_ops = task.operation == "ops"
    return CwomDraft(
        repo={"name": name, "slug": task.target.repo, "source_system": "github", "default_branch": "main"},
        issue={
            "title": title,
            "description": task.objective,
            "type": _ISSUE_TYPE_VALUES[task.operation],
            "priority": _PRIORITY_VALUES[priority_band(task.priority)],
            "status": "open",
            "acceptance": {"criteria": [task.objective]},
            "labels": [f"operation:{task.operation}"],
            "provenance": provenance,
        },
        context_packet={
            "version": 1,
            "summary": title,
            "inputs": task.inputs,
            "assumptions": [],
            "instructions": task.objective,
        },
        constraint_snapshot={
            "time_budget_seconds": task.constraints.time_budget_seconds,
            "allow_network": task.constraints.allow_network,
            "allow_secrets": task.constraints.allow_secrets,
            "tool_limits": {},
            "policy_version": policy_version,
        },
        run={
            "mode": _SYSTEM if is_ops else _AGENT,
            "executor": {
                "actor": "control-tower-worker",
                "runtime": "sandbox-shell" if is_ops else "ai-agent",
                "requested_by": dict(requested_by),  # its own copy, as each dump gave
            },
            "status": "queued",
            "priority": task.priority,
        },
    )


def cwom_to_task(
    *,
    repo_slug: str,
    issue: dict[str, Any],
    context_packet: dict[str, Any],
    constraint_snapshot: dict[str, Any],
) -> TaskCreateV1:
    """Rebuild the normalised task from its canonical objects (the inverse of `task_to_cwom`)."""
    prov = issue.get("provenance") or {}
    target = prov.get("target") or {}
    return TaskCreateV1(
        version=prov.get("version", "v1"),
        requested_by=RequestedBy.model_validate(prov["requested_by"]),
        objective=issue["description"],
        operation=ISSUE_TYPE_TO_OPERATION[IssueType(issue["type"])],
        target=Target(repo=repo_slug, ref=target.get("ref", "main"), path=target.get("path")),
        constraints=Constraints(
            time_budget_seconds=constraint_snapshot["time_budget_seconds"],
            allow_network=constraint_snapshot["allow_network"],
            allow_secrets=constraint_snapshot["allow_secrets"],
        ),
        inputs=context_packet.get("inputs") or {},
        metadata=prov.get("metadata") or {},
        priority=prov.get("priority", 100),
        idempotency_key=prov.get("idempotency_key"),
    )
