"""Runs recorded by hand and the status changes an operator may make to any run.

`cwom_runs` is also the worker's queue, so an operator can only do what cannot fight the worker:
cancel a run that has not finished. Queueing work goes through intake (and so through policy); every
other move (claim, waiting, done, failed, release) belongs to the worker alone. The change is a
compare-and-set on (status, version): if the worker moved the run in the meantime, nothing is
overwritten and the caller gets 409 CONCURRENT_UPDATE.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from cwom import audit
from cwom.audit import Actor
from cwom.base import utcnow
from cwom.enums import RUN_TRANSITIONS, ObjectKind, RunStatus
from cwom.errors import ConcurrentUpdate, InvalidTransition
from cwom.schemas import RunCreate
from cwom.service import get_object, link_refs, record_created, resolve, stamp
from cwom.tables import RunRow, run_context_packets, run_doctrine_refs

OPERATOR_RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PLANNED: frozenset({RunStatus.CANCELLED}),
    RunStatus.QUEUED: frozenset({RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset({RunStatus.CANCELLED}),
    RunStatus.WAITING: frozenset({RunStatus.CANCELLED}),
}


def create_run(session: Session, *, body: RunCreate, actor: Actor) -> RunRow:
    """A `planned` run of an issue (never `queued`: the worker only takes runs that passed intake)."""
    issue = resolve(session, body.for_issue, kind=ObjectKind.ISSUE, field="for_issue")
    repo_id = issue.repo_id
    if body.repo is not None:
        repo_id = resolve(session, body.repo, kind=ObjectKind.REPO, field="repo").id
    for i, ref in enumerate(body.inputs):
        resolve(session, ref, kind=ref.kind, field=f"inputs.{i}")
    row = stamp(
        RunRow(
            issue_id=issue.id,
            repo_id=repo_id,
            mode=body.mode.value,
            executor=body.executor,
            status=RunStatus.PLANNED.value,
            inputs=[ref.model_dump(mode="json") for ref in body.inputs],
            outputs=[],
            telemetry={},
            cost={},
            priority=100,
            attempt=0,
            max_attempts=1,
            available_at=utcnow(),
            version=0,
        ),
        trace_id=body.trace_id or issue.trace_id,
    )
    session.add(row)
    session.flush()
    record_created(session, actor=actor, kind=ObjectKind.RUN, row=row)
    left = (ObjectKind.RUN, row.id)
    link_refs(
        session,
        table=run_context_packets,
        left=left,
        refs=body.context_packets,
        kind=ObjectKind.CONTEXT_PACKET,
        field="context_packets",
        actor=actor,
        trace_id=row.trace_id,
    )
    link_refs(
        session,
        table=run_doctrine_refs,
        left=left,
        refs=body.doctrine_refs,
        kind=ObjectKind.DOCTRINE_REF,
        field="doctrine_refs",
        actor=actor,
        trace_id=row.trace_id,
    )
    return row


def transition_run(
    session: Session, *, run_id: str, status: RunStatus, actor: Actor, note: str | None = None
) -> RunRow:
    """An operator's status change; 409 INVALID_TRANSITION or CONCURRENT_UPDATE as described above."""
    row: RunRow = get_object(session, ObjectKind.RUN, run_id)
    current = RunStatus(row.status)
    if status == current:
        return row
    if status not in RUN_TRANSITIONS[current]:
        raise InvalidTransition(
            message=f"a run cannot go from {current.value} to {status.value}", field="status"
        )
    if status not in OPERATOR_RUN_TRANSITIONS.get(current, frozenset()):
        raise InvalidTransition(
            message=f"only the worker moves a run from {current.value} to {status.value}", field="status"
        )
    now = utcnow()
    changed = session.execute(
        update(RunRow)
        .where(RunRow.id == row.id, RunRow.status == current.value, RunRow.version == row.version)
        .values(status=status.value, ended_at=now, updated_at=now, version=RunRow.version + 1)
        .returning(RunRow.id)
        .execution_options(synchronize_session=False)
    ).first()
    if changed is None:
        raise ConcurrentUpdate(message=f"run {row.id} changed meanwhile; read it again", field="status")
    audit.record(
        session,
        actor=actor,
        action="status_changed",
        entity_kind=ObjectKind.RUN,
        entity_id=row.id,
        before={"status": current.value},
        after={"status": status.value},
        note=note,
        trace_id=row.trace_id,
    )
    session.refresh(row)
    return row
