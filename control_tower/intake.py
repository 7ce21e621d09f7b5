"""Intake: every task, from HTTP or a webhook, passes here: policy, then ONE transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from control_tower.tables import RefusalRow, TaskRow
from cwom import audit
from cwom.audit import Actor
from cwom.base import new_id, utcnow
from cwom.enums import TaskStatus
from cwom.rows import insert_ignore
from cwom.service import CwomIds, create_for_task
from cwom.tables import RunRow
from cwom.task_adapter import task_to_cwom
from policy import PolicyConfig, PolicyError, TaskCreateV1, evaluate
from policy.errors import ControlTowerError


class IdempotencyConflict(ControlTowerError):
    """This idempotency key was already used for a different request."""

    code = "IDEMPOTENCY_CONFLICT"
    http_status = 409


class FailureInjected(ControlTowerError):
    """A test asked intake to fail part-way through its transaction."""

    code = "FAILURE_INJECTED"


@dataclass(frozen=True)
class Accepted:
    """The outcome of a successful intake (`created` is False for an idempotent replay)."""

    task: TaskRow
    created: bool
    ids: CwomIds | None = None


def new_trace_id() -> str:
    """A W3C-style 32-hex trace id shared by everything one task causes."""
    return uuid.uuid4().hex


def actor_for(task: TaskCreateV1) -> Actor:
    """The audit actor for a task: whoever asked for it."""
    return Actor(task.requested_by.kind, task.requested_by.id)


def record_refusal(
    factory: sessionmaker[Session],
    *,
    task: TaskCreateV1,
    error: PolicyError,
    config: PolicyConfig,
    source: str,
) -> str:
    """Persist a policy refusal and its audit row; returns the refusal id."""
    trace_id = new_trace_id()
    refusal_id = new_id()
    with factory() as session, session.begin():
        session.add(
            RefusalRow(
                id=refusal_id,
                received_at=utcnow(),
                source=source,
                code=error.code,
                field=error.field,
                message=error.message,
                policy_version=config.version_hash,
                idempotency_key=task.idempotency_key,
                requested_by_kind=task.requested_by.kind,
                requested_by_id=task.requested_by.id,
                body=task.model_dump(mode="json"),
                trace_id=trace_id,
            )
        )
        audit.record(
            session,
            actor=actor_for(task),
            action="policy_denied",
            entity_kind="intake_refusal",
            entity_id=refusal_id,
            after={"code": error.code, "field": error.field, "policy_version": config.version_hash},
            note=error.message,
            trace_id=trace_id,
        )
    return refusal_id


def submit(
    factory: sessionmaker[Session],
    *,
    task: TaskCreateV1,
    config: PolicyConfig,
    source: str = "api",
    create_cwom: bool = True,
    max_attempts: int = 3,
    fail_after_cwom: bool = False,
) -> Accepted:
    """Evaluate and store one task; raises PolicyError (recorded) or IdempotencyConflict."""
    try:
        task = evaluate(task, config)
    except PolicyError as error:
        record_refusal(factory, task=task, error=error, config=config, source=source)
        raise
    with factory() as session, session.begin():
        row, created = _insert_task(session, task=task, config=config, source=source)
        if not created:
            if row.request_hash != task.request_hash():
                raise IdempotencyConflict(
                    message=f"idempotency key {task.idempotency_key!r} was used for a different request",
                    field="idempotency_key",
                )
            return Accepted(row, created=False, ids=cwom_ids(session, row))
        ids = None
        actor = actor_for(task)
        audit.record(
            session,
            actor=actor,
            action="policy_allowed",
            entity_kind="task",
            entity_id=row.id,
            after={"policy_version": config.version_hash, "operation": task.operation},
            trace_id=row.trace_id,
        )
        if create_cwom:
            ids = create_for_task(
                session,
                draft=task_to_cwom(task, policy_version=config.version_hash),
                task_id=row.id,
                trace_id=row.trace_id,
                actor=actor,
                max_attempts=max_attempts,
            )
            if fail_after_cwom:
                raise FailureInjected(message="failure injected after CWOM objects were written")
            row.cwom_issue_id, row.run_id = ids.issue_id, ids.run_id
            if session.get_bind().dialect.name == "postgresql":
                # Wakes idle workers (LISTEN control_tower_runs); PostgreSQL delivers it on commit.
                session.execute(text("SELECT pg_notify('control_tower_runs', :id)"), {"id": ids.run_id})
        audit.record(
            session,
            actor=actor,
            action="created",
            entity_kind="task",
            entity_id=row.id,
            after=_task_audit(row),
            trace_id=row.trace_id,
        )
        return Accepted(row, created=True, ids=ids)


def _insert_task(
    session: Session, *, task: TaskCreateV1, config: PolicyConfig, source: str
) -> tuple[TaskRow, bool]:
    """Insert the task row; on an idempotency-key collision return the row already stored (and False).

    The unique index decides, not a read before the write, so concurrent duplicates cannot both win.
    """
    now = utcnow()
    values: dict[str, Any] = {
        "id": new_id(),
        "idempotency_key": task.idempotency_key,
        "request_hash": task.request_hash(),
        "status": TaskStatus.QUEUED.value,
        "operation": task.operation,
        "repo": task.target.repo,
        "ref": task.target.ref,
        "priority": task.priority,
        "requested_by_kind": task.requested_by.kind,
        "requested_by_id": task.requested_by.id,
        "source": source,
        "body": task.model_dump(mode="json"),
        "policy_version": config.version_hash,
        "trace_id": new_trace_id(),
        "created_at": now,
        "updated_at": now,
    }
    if task.idempotency_key is None:
        return session.scalars(insert(TaskRow).values(**values).returning(TaskRow)).one(), True
    inserted = insert_ignore(session, TaskRow, values, conflict=["idempotency_key"])
    if inserted is not None:
        return inserted, True
    existing = session.execute(
        select(TaskRow).where(TaskRow.idempotency_key == task.idempotency_key)
    ).scalar_one()
    return existing, False


def _task_audit(row: TaskRow) -> dict[str, Any]:
    return {
        "status": row.status,
        "operation": row.operation,
        "repo": row.repo,
        "ref": row.ref,
        "source": row.source,
        "policy_version": row.policy_version,
        "cwom_issue_id": row.cwom_issue_id,
        "run_id": row.run_id,
    }


def cwom_ids(session: Session, row: TaskRow) -> CwomIds | None:
    """The CWOM ids a stored task became (None for tasks taken with create_cwom=false)."""
    if row.run_id is None:
        return None
    run = session.get_one(RunRow, row.run_id)
    refs = {ref["kind"]: ref["id"] for ref in run.inputs}
    return CwomIds(
        repo_id=run.repo_id,
        issue_id=run.issue_id,
        context_packet_id=refs.get("context_packet", ""),
        constraint_snapshot_id=refs.get("constraint_snapshot", ""),
        run_id=run.id,
    )
