"""The run queue on `cwom_runs`: claim with a lease, heartbeat, fenced writes, reaping, cancel and resume.

Every write a worker makes for a run is fenced by (run id, attempt, locked_by, status running): a
worker that lost its lease (paused, partitioned, reclaimed) is refused and nothing is written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from control_tower.task_status import mirror_run_status
from cwom import audit
from cwom.audit import Actor
from cwom.base import utcnow
from cwom.enums import RUN_TRANSITIONS, RunStatus
from cwom.tables import RunRow
from policy.errors import ControlTowerError

NOTIFY_CHANNEL = "control_tower_runs"
CANCEL_PREFIX = "cancel:"
_REAP_BATCH = 100
RUN_TERMINAL = frozenset({RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED})


class LostLease(ControlTowerError):
    """This worker no longer holds the run (cancelled, reclaimed or its lease expired)."""

    code = "LEASE_LOST"
    http_status = 409


class RunNotFound(ControlTowerError):
    """No run has this id."""

    code = "RUN_NOT_FOUND"
    http_status = 404


class InvalidTransition(ControlTowerError):
    """The run's current status does not allow this change."""

    code = "INVALID_TRANSITION"
    http_status = 409


@dataclass(frozen=True)
class Claim:
    """What a worker holds: one attempt at one run."""

    run_id: str
    task_id: str | None
    attempt: int
    worker_id: str
    trace_id: str | None


@dataclass
class RunControl:
    """What the loop hands the executor for one claim."""

    queue: RunQueue
    # Set when the run was cancelled, its lease was lost, or the worker released it on shutdown:
    # the executor must stop (kill its sandbox) and return.
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Set when the worker is draining: finish if you can before `deadline`, start nothing long.
    stopping: threading.Event = field(default_factory=threading.Event)
    # time.monotonic() by which the executor must have returned; None while not draining.
    deadline: float | None = None
    reason: str | None = None

    def stop(self, reason: str) -> None:
        """Tell the executor to stop now, saying why (cancelled, lease_lost, released)."""
        if self.reason is None:
            self.reason = reason
        self.cancelled.set()


Executor = Callable[[Claim, RunControl], None]


@dataclass(eq=False)
class _Change:
    """One requested transition, and (under group commit) its outcome."""

    claim: Claim
    to: RunStatus
    error_code: str | None
    error_message: str | None
    outputs: list[Any] | None
    telemetry: dict[str, Any] | None
    note: str | None
    done: threading.Event = field(default_factory=threading.Event)
    result: bool = False
    error: BaseException | None = None


def _status(value: str | RunStatus) -> RunStatus:
    return value if isinstance(value, RunStatus) else RunStatus(value)


class RunQueue:
    """Queue operations over `cwom_runs`, each one transaction with its audit rows."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        lease_seconds: float,
        max_attempts: int,
        clock: Callable[[], datetime] = utcnow,
        group_commit: bool = False,
    ) -> None:
        self.factory = factory
        # Concurrent transitions from one process share a transaction (and one audit-chain lock).
        self.group_commit = group_commit
        self._group_lock = threading.Lock()
        self._group: list[_Change] = []
        self._committing = False
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts
        self.clock = clock
        bind = factory.kw.get("bind")
        self.is_postgresql = bind is not None and bind.dialect.name == "postgresql"

    # -- claiming ---------------------------------------------------------------------------------

    def claim(self, worker_id: str, *, limit: int = 1) -> list[Claim]:
        """Take up to `limit` queued runs, best priority then oldest first, leased to `worker_id`."""
        now = self.clock()
        pick = (
            select(RunRow.id)
            .where(RunRow.status == RunStatus.QUEUED.value, RunRow.available_at <= now)
            .order_by(RunRow.priority, RunRow.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)  # ignored by SQLite, where BEGIN IMMEDIATE serialises
        )
        stmt = (
            update(RunRow)
            .where(RunRow.id.in_(pick.scalar_subquery()))
            .values(
                status=RunStatus.RUNNING.value,
                locked_by=worker_id,
                lease_expires_at=now + self.lease,
                attempt=RunRow.attempt + 1,
                started_at=now,
                updated_at=now,
                version=RunRow.version + 1,
            )
            .returning(
                RunRow.id, RunRow.task_id, RunRow.attempt, RunRow.trace_id, RunRow.priority, RunRow.created_at
            )
            .execution_options(synchronize_session=False)
        )
        actor = Actor("worker", worker_id)
        with self.factory() as session, session.begin():
            rows = sorted(session.execute(stmt).all(), key=lambda r: (r.priority, r.created_at))
            if not rows:
                return []
            self._mirror(session, [r.task_id for r in rows if r.task_id], RunStatus.RUNNING, now)
            for r in rows:
                audit.record(
                    session,
                    actor=actor,
                    action="status_changed",
                    entity_kind="run",
                    entity_id=r.id,
                    before={"status": RunStatus.QUEUED.value, "attempt": r.attempt - 1},
                    after={"status": RunStatus.RUNNING.value, "attempt": r.attempt, "locked_by": worker_id},
                    trace_id=r.trace_id,
                )
        return [Claim(r.id, r.task_id, r.attempt, worker_id, r.trace_id) for r in rows]

    def heartbeat(self, claim: Claim) -> bool:
        """Extend the lease; False when the run is no longer ours (cancelled, reclaimed, finished)."""
        now = self.clock()
        with self.factory() as session, session.begin():
            result = session.execute(
                update(RunRow)
                .where(*self._owned(claim))
                .values(lease_expires_at=now + self.lease)
                .execution_options(synchronize_session=False)
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def status(self, run_id: str) -> str | None:
        """The run's current status (None when there is no such run)."""
        with self.factory() as session:
            return session.scalar(select(RunRow.status).where(RunRow.id == run_id))

    # -- fenced writes ------------------------------------------------------------------------------

    @contextmanager
    def fenced(self, claim: Claim) -> Iterator[Session]:
        """A transaction that holds the run's row lock and proves the claim still owns it first."""
        with self.factory() as session, session.begin():
            self._lock_owned(session, claim)
            yield session

    def transition(
        self,
        claim: Claim,
        to: RunStatus,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        outputs: list[Any] | None = None,
        telemetry: dict[str, Any] | None = None,
        note: str | None = None,
    ) -> bool:
        """Move a claimed (running) run to `to`; False, with nothing written, when fenced out.

        Not to be called inside `fenced()` for the same run: that transaction holds the row lock.
        """
        to = _status(to)
        if to not in RUN_TRANSITIONS[RunStatus.RUNNING]:
            raise InvalidTransition(message=f"a running run cannot become {to.value}")
        change = _Change(claim, to, error_code, error_message, outputs, telemetry, note)
        if not self.group_commit:
            return self._apply([change])[0]
        return self._group_apply(change)

    def _group_apply(self, change: _Change) -> bool:
        """Group commit: whoever finds no commit under way commits everything queued meanwhile."""
        with self._group_lock:
            self._group.append(change)
            leader = not self._committing
            self._committing = True
        if leader:
            while True:
                with self._group_lock:
                    batch, self._group = self._group, []
                    if not batch:
                        self._committing = False
                        break
                self._apply_batch(batch)
        change.done.wait()
        if change.error is not None:
            raise change.error
        return change.result

    def _apply_batch(self, batch: list[_Change]) -> None:
        try:
            results = self._apply(batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                batch[0].done.set()
                return
            # One bad change must not fail its neighbours: redo them one by one to pin the error.
            for change in batch:
                self._apply_batch([change])
            return
        for change, ok in zip(batch, results, strict=True):
            change.result = ok
            change.done.set()

    def _apply(self, batch: list[_Change]) -> list[bool]:
        """Apply fenced transitions in one transaction; one bool per change."""
        now = self.clock()
        with self.factory() as session, session.begin():
            return [self._apply_one(session, change, now) for change in batch]

    def _apply_one(self, session: Session, change: _Change, now: datetime) -> bool:
        claim, to = change.claim, change.to
        values: dict[str, Any] = {"status": to.value, "updated_at": now, "version": RunRow.version + 1}
        if change.error_code is not None:
            values["error_code"], values["error_message"] = change.error_code, change.error_message
        if change.outputs is not None:
            values["outputs"] = change.outputs
        if to in RUN_TERMINAL:
            values.update(lease_expires_at=None, ended_at=now)
        elif to is RunStatus.WAITING:
            # Nobody holds a waiting run: resume() puts it back in the queue for any worker.
            values.update(locked_by=None, lease_expires_at=None)
        elif to is RunStatus.QUEUED:
            # A released lease (shutdown drain) is not a failed attempt: give the attempt back.
            values.update(
                locked_by=None, lease_expires_at=None, available_at=now, max_attempts=RunRow.max_attempts + 1
            )
        # One fenced UPDATE: on PostgreSQL it waits for the row lock and re-checks the fence after it,
        # so a concurrent reap or cancel makes it match nothing.
        row = session.execute(
            update(RunRow)
            .where(*self._owned(claim))
            .values(**values)
            .returning(RunRow.task_id, RunRow.trace_id, RunRow.error_code, RunRow.telemetry)
            .execution_options(synchronize_session=False)
        ).first()
        if row is None:
            return False
        if change.telemetry:
            session.execute(
                update(RunRow)
                .where(RunRow.id == claim.run_id)
                .values(telemetry={**(row.telemetry or {}), **change.telemetry})
                .execution_options(synchronize_session=False)
            )
        if to is RunStatus.QUEUED:
            self._notify(session, claim.run_id)
        task_ids = [row.task_id] if row.task_id else []
        self._mirror(session, task_ids, to, now, change.error_code, change.error_message)
        held = {"status": RunStatus.RUNNING.value, "attempt": claim.attempt, "locked_by": claim.worker_id}
        after: dict[str, Any] = {
            "status": to.value,
            "attempt": claim.attempt,
            "locked_by": None if to in (RunStatus.WAITING, RunStatus.QUEUED) else claim.worker_id,
        }
        if row.error_code:
            after["error_code"] = row.error_code
        audit.record(
            session,
            actor=Actor("worker", claim.worker_id),
            action="status_changed",
            entity_kind="run",
            entity_id=claim.run_id,
            before=held,
            after=after,
            note=change.note,
            trace_id=row.trace_id,
        )
        return True

    # -- recovery -----------------------------------------------------------------------------------

    def reap_expired(self) -> int:
        """Requeue runs whose lease expired (another attempt) or fail them when attempts are spent."""
        now = self.clock()
        reaped = 0
        with self.factory() as session, session.begin():
            runs = session.scalars(
                select(RunRow)
                .where(RunRow.status == RunStatus.RUNNING.value, RunRow.lease_expires_at < now)
                .order_by(RunRow.lease_expires_at)
                .limit(_REAP_BATCH)
                .with_for_update(skip_locked=True)
            ).all()
            for run in runs:
                before = self._state(run)
                expired_holder = run.locked_by
                run.locked_by, run.lease_expires_at, run.updated_at = None, None, now
                run.version += 1
                if run.attempt >= run.max_attempts:
                    run.status, run.ended_at = RunStatus.FAILED.value, now
                    run.error_code = "ATTEMPTS_EXHAUSTED"
                    run.error_message = f"lease expired on attempt {run.attempt} of {run.max_attempts}"
                else:
                    run.status, run.available_at = RunStatus.QUEUED.value, now
                    self._notify(session, run.id)
                status = _status(run.status)
                self._mirror(
                    session,
                    [run.task_id] if run.task_id else [],
                    status,
                    now,
                    run.error_code,
                    run.error_message,
                )
                self._audit(session, run, audit.SYSTEM, before, f"lease of {expired_holder} expired")
                reaped += 1
        return reaped

    # -- operator actions ---------------------------------------------------------------------------

    def cancel(self, run_id: str, *, actor: Actor, note: str | None) -> RunRow:
        """Cancel a queued, waiting or running run; a running worker notices on its next heartbeat."""
        now = self.clock()
        with self.factory() as session, session.begin():
            run = self._lock(session, run_id)
            current = _status(run.status)
            if RunStatus.CANCELLED not in RUN_TRANSITIONS[current]:
                raise InvalidTransition(message=f"run {run_id} is {current.value} and cannot be cancelled")
            before = self._state(run)
            run.status, run.ended_at, run.lease_expires_at = RunStatus.CANCELLED.value, now, None
            run.updated_at, run.version = now, run.version + 1
            self._mirror(session, [run.task_id] if run.task_id else [], RunStatus.CANCELLED, now)
            self._audit(session, run, actor, before, note)
            if current is RunStatus.RUNNING:
                self._notify(session, CANCEL_PREFIX + run.id)
        return run

    def resume(
        self,
        run_id: str,
        *,
        decision: Literal["approve", "reject"],
        actor: Actor,
        note: str | None,
    ) -> RunRow:
        """Answer a waiting run's approval: approve puts it back in the queue, reject fails it."""
        if decision not in ("approve", "reject"):
            raise InvalidTransition(message=f"unknown decision {decision!r}", field="decision")
        now = self.clock()
        with self.factory() as session, session.begin():
            run = self._lock(session, run_id)
            if run.status != RunStatus.WAITING.value:
                raise InvalidTransition(
                    "RUN_NOT_WAITING", f"run {run_id} is {run.status}, not waiting for approval"
                )
            before = self._state(run)
            approvals = list(run.telemetry.get("approvals", []))
            approvals.append(
                {
                    "decision": decision,
                    "by": f"{actor.kind}:{actor.id}",
                    "note": note,
                    "at": now.isoformat(),
                    "step": run.current_step,
                }
            )
            run.telemetry = {**run.telemetry, "approvals": approvals}
            run.updated_at, run.version = now, run.version + 1
            if decision == "approve":
                # The wait was not a failed attempt: the next claim must not eat into the crash budget.
                run.status, run.available_at = RunStatus.QUEUED.value, now
                run.max_attempts += 1
                self._notify(session, run.id)
                self._mirror(session, [run.task_id] if run.task_id else [], RunStatus.QUEUED, now)
            else:
                run.status, run.ended_at = RunStatus.FAILED.value, now
                run.error_code = "APPROVAL_REJECTED"
                run.error_message = note or f"rejected by {actor.id}"
                self._mirror(
                    session,
                    [run.task_id] if run.task_id else [],
                    RunStatus.FAILED,
                    now,
                    run.error_code,
                    run.error_message,
                )
            self._audit(session, run, actor, before, note, decision=decision)
        return run

    # -- helpers ------------------------------------------------------------------------------------

    @staticmethod
    def _owned(claim: Claim) -> tuple[Any, ...]:
        return (
            RunRow.id == claim.run_id,
            RunRow.attempt == claim.attempt,
            RunRow.locked_by == claim.worker_id,
            RunRow.status == RunStatus.RUNNING.value,
        )

    def _lock_owned(self, session: Session, claim: Claim) -> RunRow:
        run = session.scalars(select(RunRow).where(*self._owned(claim)).with_for_update()).first()
        if run is None:
            raise LostLease(
                message=f"run {claim.run_id} attempt {claim.attempt} is no longer held by {claim.worker_id}"
            )
        return run

    @staticmethod
    def _lock(session: Session, run_id: str) -> RunRow:
        run = session.scalars(select(RunRow).where(RunRow.id == run_id).with_for_update()).first()
        if run is None:
            raise RunNotFound(message=f"no run {run_id}", field="run_id")
        return run

    @staticmethod
    def _state(run: RunRow) -> dict[str, Any]:
        return {"status": run.status, "attempt": run.attempt, "locked_by": run.locked_by}

    @staticmethod
    def _audit(
        session: Session,
        run: RunRow,
        actor: Actor,
        before: dict[str, Any],
        note: str | None,
        **extra: Any,
    ) -> None:
        after: dict[str, Any] = {**RunQueue._state(run), **extra}
        if run.error_code:
            after["error_code"] = run.error_code
        audit.record(
            session,
            actor=actor,
            action="status_changed",
            entity_kind="run",
            entity_id=run.id,
            before=before,
            after=after,
            note=note,
            trace_id=run.trace_id,
        )

    _mirror = staticmethod(mirror_run_status)

    def _notify(self, session: Session, payload: str) -> None:
        # Delivered by PostgreSQL on commit, so a listener never sees a run it cannot yet read.
        if self.is_postgresql:
            session.execute(
                text("SELECT pg_notify(:channel, :payload)"), {"channel": NOTIFY_CHANNEL, "payload": payload}
            )
