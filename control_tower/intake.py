"""Intake: every task, from HTTP or a webhook, passes here: policy, then ONE transaction."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

from anyio.to_thread import run_sync
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from control_tower import intake_pg
from control_tower.intake_plan import FailureInjected, IntakePlan, actor_for, new_trace_id
from control_tower.tables import RefusalRow, TaskRow
from cwom import audit
from cwom.base import new_id, utcnow
from cwom.rows import insert_ignore
from cwom.tables import RepoRow, RunRow
from cwom.task_rows import CwomIds
from policy import PolicyConfig, PolicyError, TaskCreateV1, evaluate
from policy.errors import ControlTowerError

__all__ = [
    "Accepted",
    "FailureInjected",
    "IdempotencyConflict",
    "cwom_ids",
    "record_refusal",
    "submit",
    "submit_async",
]


class IdempotencyConflict(ControlTowerError):
    """This idempotency key was already used for a different request."""

    code = "IDEMPOTENCY_CONFLICT"
    http_status = 409


@dataclass(frozen=True)
class Accepted:
    """The outcome of a successful intake (`created` is False for an idempotent replay): the task's
    columns, and as `task` its row, an ORM object built only when asked for (~25 µs of CPU, a
    twentieth of a loaded intake server's time per request, which the HTTP answer does not need)."""

    columns: dict[str, Any]
    created: bool
    ids: CwomIds | None = None

    @cached_property
    def task(self) -> TaskRow:
        """The task as a (transient) row."""
        return TaskRow(**self.columns)

    @classmethod
    def of_row(cls, row: TaskRow, *, created: bool, ids: CwomIds | None) -> Accepted:
        """The outcome for a task read back from the database."""
        accepted = cls({c.key: getattr(row, c.key) for c in _TASK_COLUMNS}, created, ids)
        accepted.__dict__["task"] = row  # what `task` would build: the row itself
        return accepted


_TASK_COLUMNS = tuple(TaskRow.__mapper__.column_attrs)


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
    """Evaluate and store one task; raises PolicyError (recorded) or IdempotencyConflict.

    Everything one task writes (the task, its CWOM objects and links, their audit rows and the
    worker wake-up) commits together or not at all. PostgreSQL gets it as one statement
    (`intake_pg`); other databases as Core inserts in one transaction.
    """
    try:
        task = evaluate(task, config)
    except PolicyError as error:
        record_refusal(factory, task=task, error=error, config=config, source=source)
        raise
    plan = IntakePlan(task, config, source, create_cwom, max_attempts)
    engine = factory.kw["bind"]
    if engine.dialect.name == "postgresql":
        redactor = factory.kw.get("info", {}).get("redactor")
        created = intake_pg.write(engine, plan, redactor=redactor, fail_after_cwom=fail_after_cwom)
        if created is None:
            return _replay(factory, task)
        if fail_after_cwom:  # pragma: no cover - write() raised before committing
            raise FailureInjected(message="failure injected after CWOM objects were written")
        columns, ids = created
        return Accepted(columns, created=True, ids=ids)
    with factory() as session, session.begin():
        stored = _write_generic(session, plan, fail_after_cwom=fail_after_cwom)
        if stored is None:
            return _replay_in(session, task)
        columns, ids = stored
        return Accepted(columns, created=True, ids=ids)


async def submit_async(
    factory: sessionmaker[Session],
    *,
    task: TaskCreateV1,
    config: PolicyConfig,
    writer: intake_pg.AsyncWriter | None,
    source: str = "api",
    create_cwom: bool = True,
    max_attempts: int = 3,
) -> Accepted:
    """`submit` for a coroutine: the same outcome, and on PostgreSQL (given its `writer`) the same one
    statement, without leaving the event loop.

    Policy, plan and audit preparation are CPU work with no I/O, so they run right here; only the
    rare paths that read or write through a session (a refusal, a replay) and other databases go to
    a worker thread.
    """
    if writer is None:
        return await run_sync(
            partial(
                submit,
                factory,
                task=task,
                config=config,
                source=source,
                create_cwom=create_cwom,
                max_attempts=max_attempts,
            )
        )
    try:
        task = evaluate(task, config)
    except PolicyError as error:
        await run_sync(partial(record_refusal, factory, task=task, error=error, config=config, source=source))
        raise
    plan = IntakePlan(task, config, source, create_cwom, max_attempts)
    created = await writer.write(plan, redactor=factory.kw.get("info", {}).get("redactor"))
    if created is None:
        return await run_sync(partial(_replay, factory, task))
    columns, ids = created
    return Accepted(columns, created=True, ids=ids)


def _write_generic(
    session: Session, plan: IntakePlan, *, fail_after_cwom: bool
) -> tuple[dict[str, Any], CwomIds | None] | None:
    """Core inserts in the caller's transaction; None when the idempotency key is already taken."""
    repo_id = None
    if plan.create_cwom:
        repo_id = session.execute(select(RepoRow.id).where(RepoRow.slug == plan.task.target.repo)).scalar()
    built = plan.build(repo_id=repo_id)
    values = built.task
    if plan.task.idempotency_key is None:
        session.execute(insert(TaskRow), [values])
    elif insert_ignore(session, TaskRow.__table__, values, conflict=["idempotency_key"]) is None:
        return None
    if built.objects is not None:
        rows = built.objects.rows
        if built.objects.new_repo:
            # SQLite serialises writers (BEGIN IMMEDIATE): the slug looked up above is still free.
            session.execute(insert(RepoRow), [rows[0][1]])
            rows = rows[1:]
        for table, row in rows:
            session.execute(insert(table), [row])
        if fail_after_cwom:
            raise FailureInjected(message="failure injected after CWOM objects were written")
    audit.record_entries(session, built.audit)
    return values, built.objects.ids if built.objects is not None else None


def _replay(factory: sessionmaker[Session], task: TaskCreateV1) -> Accepted:
    with factory() as session:
        return _replay_in(session, task)


def _replay_in(session: Session, task: TaskCreateV1) -> Accepted:
    """The task already stored under this key: a replay of the same request, or a conflict."""
    existing = session.execute(
        select(TaskRow).where(TaskRow.idempotency_key == task.idempotency_key)
    ).scalar_one()
    if existing.request_hash != task.request_hash():
        raise IdempotencyConflict(
            message=f"idempotency key {task.idempotency_key!r} was used for a different request",
            field="idempotency_key",
        )
    return Accepted.of_row(existing, created=False, ids=cwom_ids(session, existing))


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
