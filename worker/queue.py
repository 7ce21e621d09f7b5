"""The run queue on `cwom_runs`: claim with a lease, heartbeat, fenced writes, reaping, cancel and resume.

Every write a worker makes for a run is fenced by (run id, attempt, locked_by, status running): a
worker that lost its lease (paused, partitioned, reclaimed) is refused and nothing is written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine, literal, select, text, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from control_tower.group_commit import GroupCommit
from control_tower.task_status import mirror_run_status
from cwom import audit
from cwom.audit import Actor
from cwom.base import utcnow
from cwom.enums import RUN_TRANSITIONS, RunStatus
from cwom.tables import RunRow
from policy.errors import ControlTowerError
from worker import queue_pg, step_rows
from worker.artifacts import record_values
from worker.queue_pg import artifact_outputs

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


@dataclass(frozen=True)
class _Change:
    """One requested transition."""

    claim: Claim
    to: RunStatus
    error_code: str | None
    error_message: str | None
    outputs: list[Any] | None
    telemetry: dict[str, Any] | None
    note: str | None
    # The attempt's last step rows (rows, current step) and new artifacts (`artifact_values` rows),
    # written with the transition, fenced by it, their audit rows before its own.
    steps: tuple[list[dict[str, Any]], str | None] | None = None
    artifacts: list[dict[str, Any]] | None = None


# A change's outcome under group commit: written or fenced out, or the error that failed it alone.
_Outcome = bool | BaseException


@dataclass(frozen=True)
class Refill:
    """How a Worker lets the transitions of its runs claim the slots they free, in the same statement.

    `reserve(finishing)` is told how many of the Worker's runs a statement is about to move out of
    `running` and answers how many runs to claim (it holds that many slots for them); `deliver(claims,
    reserved)` gets what was claimed (possibly fewer, or none when the statement failed).
    """

    worker_id: str
    reserve: Callable[[int], int]
    deliver: Callable[[list[Claim], int], None]


def _lost(claim: Claim) -> LostLease:
    return LostLease(
        message=f"run {claim.run_id} attempt {claim.attempt} is no longer held by {claim.worker_id}"
    )


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
        group_commit: bool = True,
    ) -> None:
        self.factory = factory
        # Concurrent transitions from one process share a statement (and one audit-chain lock).
        self.group_commit = group_commit
        self._group: GroupCommit[_Change, _Outcome] = GroupCommit(self._write_group)
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts
        self.clock = clock
        bind = factory.kw.get("bind")
        self.engine: Engine | None = bind if isinstance(bind, Engine) else None
        self.is_postgresql = self.engine is not None and self.engine.dialect.name == "postgresql"
        self.redactor: audit.Redacts | None = (factory.kw.get("info") or {}).get("redactor")
        # PostgreSQL: claims (the dispatcher) and transition groups (one leader at a time) each have
        # their own connection, kept while a Worker runs (`hold_connections`).
        self._claim_link = queue_pg.Link(self.engine) if self.is_postgresql and self.engine else None
        self._write_link = queue_pg.Link(self.engine) if self.is_postgresql and self.engine else None
        # ...and executors' step-row writes (`write_steps`) one more, and their loads (`load`) another.
        self._steps_link = queue_pg.Link(self.engine) if self.is_postgresql and self.engine else None
        self._load_link = queue_pg.Link(self.engine) if self.is_postgresql and self.engine else None
        # Claims a Worker is executing -> whether a transition of theirs was written (see `settled`).
        self._tracked: dict[tuple[str, int, str], bool] = {}
        # Per worker: tracked claims whose transition was written but whose executor has not returned
        # yet (their slots are as good as free: see `released`).
        self._written: dict[str, int] = {}
        self._tracked_lock = threading.Lock()
        self._refills: dict[str, Refill] = {}

    # -- claiming ---------------------------------------------------------------------------------

    def claim(self, worker_id: str, *, limit: int = 1) -> list[Claim]:
        """Take up to `limit` queued runs, best priority then oldest first, leased to `worker_id`.

        PostgreSQL: one statement (`queue_pg.claim`); SQLite: one `BEGIN IMMEDIATE` transaction.
        """
        now = self.clock()
        if self._claim_link is not None:
            taken = queue_pg.claim(
                self._claim_link,
                worker_id=worker_id,
                limit=limit,
                now=now,
                lease=self.lease,
                redactor=self.redactor,
            )
            return [Claim(r.run_id, r.task_id, r.attempt, worker_id, r.trace_id) for r in taken]
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
        return claim.run_id in self.heartbeat_all([claim])

    def heartbeat_all(self, claims: list[Claim]) -> set[str]:
        """Extend every lease in one statement; the ids of the runs still held (the rest were lost)."""
        if not claims:
            return set()
        now = self.clock()
        keys = [(c.run_id, c.attempt, c.worker_id) for c in claims]
        with self.factory() as session, session.begin():
            held = session.scalars(
                update(RunRow)
                .where(
                    tuple_(RunRow.id, RunRow.attempt, RunRow.locked_by).in_(keys),
                    RunRow.status == RunStatus.RUNNING.value,
                )
                .values(lease_expires_at=now + self.lease)
                .returning(RunRow.id)
                .execution_options(synchronize_session=False)
            ).all()
        return set(held)

    def status(self, run_id: str) -> str | None:
        """The run's current status (None when there is no such run)."""
        with self.factory() as session:
            return session.scalar(select(RunRow.status).where(RunRow.id == run_id))

    # -- fenced writes ------------------------------------------------------------------------------

    @contextmanager
    def fenced(
        self, claim: Claim, *, steps: tuple[list[dict[str, Any]], str | None] | None = None
    ) -> Iterator[Session]:
        """A transaction that holds the run's row lock and proves the claim still owns it first.

        `steps` (rows, current step) are written first, in the same transaction; on PostgreSQL the lock,
        the proof and those writes are one statement.
        """
        with self.factory() as session, session.begin():
            if steps is not None and self.is_postgresql:
                params = step_rows.pg_fenced_params(
                    run_id=claim.run_id,
                    attempt=claim.attempt,
                    worker_id=claim.worker_id,
                    rows=steps[0],
                    current=steps[1],
                )
                result = session.connection().exec_driver_sql(step_rows.PG_FENCED_WRITE, params).one()
                if not result.owned:
                    raise _lost(claim)
                yield session
                return
            # The id only: the lock and the proof, without loading the whole row into the session.
            owned = session.execute(select(RunRow.id).where(*self._owned(claim)).with_for_update()).first()
            if owned is None:
                raise _lost(claim)
            if steps is not None:
                step_rows.write_step_rows(
                    session, run_id=claim.run_id, attempt=claim.attempt, rows=steps[0], current=steps[1]
                )
            yield session

    @property
    def writes_steps_directly(self) -> bool:
        """Whether `write_steps` is available (PostgreSQL)."""
        return self._steps_link is not None

    def write_steps(self, claim: Claim, rows: list[dict[str, Any]], current: str | None) -> None:
        """PostgreSQL: upsert step rows and move the current step, fenced, in one statement.

        Raises LostLease, with nothing written, when the claim no longer holds the run.
        """
        if self._steps_link is None:
            raise RuntimeError("write_steps needs PostgreSQL")
        params = step_rows.pg_fenced_params(
            run_id=claim.run_id, attempt=claim.attempt, worker_id=claim.worker_id, rows=rows, current=current
        )
        result = self._steps_link.execute(step_rows.PG_FENCED_WRITE, params)
        if not result.owned:
            raise _lost(claim)

    @property
    def loads_directly(self) -> bool:
        """Whether `load` is available (PostgreSQL)."""
        return self._load_link is not None

    def load(self, run_id: str) -> Any:
        """PostgreSQL: the run's issue id, telemetry and creation time, its task's body and policy
        version, and its doctrines (`[[content, namespace], ...]`), in one statement; None when the
        run does not exist."""
        if self._load_link is None:
            raise RuntimeError("load needs PostgreSQL")
        return self._load_link.execute(queue_pg.LOAD, {"run_id": run_id})

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
        steps: tuple[list[dict[str, Any]], str | None] | None = None,
        artifacts: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Move a claimed (running) run to `to`; False, with nothing written, when fenced out.

        `steps` (step rows, current step) and `artifacts` (new rows from `artifact_values`; a later
        attempt's update of an existing one is handled too) are written with it, fenced by it, in
        the same statement on PostgreSQL; each artifact adds `{"kind": "artifact", "id": ...}` to
        the run's outputs. Not to be called inside `fenced()` for the same run: that transaction
        holds the row lock.
        """
        to = _status(to)
        if to not in RUN_TRANSITIONS[RunStatus.RUNNING]:
            raise InvalidTransition(message=f"a running run cannot become {to.value}")
        change = _Change(
            claim, to, error_code, error_message, outputs, telemetry, note, steps, artifacts or None
        )
        outcome = self._group.submit(change) if self.group_commit else self._write_group([change])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def hold_connections(self) -> None:
        """Keep the PostgreSQL statements' connections checked out (no checkout or ping per statement)."""
        for link in (self._claim_link, self._write_link, self._steps_link, self._load_link):
            if link is not None:
                link.hold()

    def release_connections(self) -> None:
        """Give the kept connections back to the pool."""
        for link in (self._claim_link, self._write_link, self._steps_link, self._load_link):
            if link is not None:
                link.release()

    def attach_refill(self, refill: Refill) -> None:
        """Transitions of this worker's runs also claim runs for the slots they free (PostgreSQL)."""
        self._refills[refill.worker_id] = refill

    def detach_refill(self, worker_id: str) -> None:
        """Stop claiming along with this worker's transitions."""
        self._refills.pop(worker_id, None)

    def track(self, claim: Claim) -> None:
        """Remember whether this claim gets moved out of `running` here (the Worker asks afterwards)."""
        with self._tracked_lock:
            self._tracked[(claim.run_id, claim.attempt, claim.worker_id)] = False

    def settled(self, claim: Claim) -> bool:
        """Stop tracking the claim; True when one of its transitions was written by this queue, so
        the run is no longer held and nothing is left to record for it."""
        with self._tracked_lock:
            written = self._tracked.pop((claim.run_id, claim.attempt, claim.worker_id), False)
            if written:
                self._written[claim.worker_id] -= 1
            return written

    def released(self, worker_id: str) -> int:
        """How many of the worker's tracked claims left `running` here and are not settled yet: their
        executors are returning, so their slots may be filled already."""
        with self._tracked_lock:
            return self._written.get(worker_id, 0)

    def _mark_written(self, batch: Sequence[_Change], outcomes: Sequence[_Outcome]) -> None:
        # Marked by the writer, before the next group is formed, so its refill counts these slots.
        with self._tracked_lock:
            for change, outcome in zip(batch, outcomes, strict=True):
                claim = change.claim
                key = (claim.run_id, claim.attempt, claim.worker_id)
                if outcome is True and self._tracked.get(key) is False:
                    self._tracked[key] = True
                    self._written[claim.worker_id] = self._written.get(claim.worker_id, 0) + 1

    def _write_group(self, batch: Sequence[_Change]) -> list[_Outcome]:
        """Write a group of transitions; all-or-nothing unless an outcome is an error of its own.

        PostgreSQL: one statement for the first change of each run and task. What it cannot express
        (a second change of the same run or task, a run whose row differs from the claim) is then
        applied in order, each change in its own transaction, its error kept as its own outcome.
        SQLite: one transaction, the changes applied in order.
        """
        outcomes: list[_Outcome] = []
        outcomes += self._write_pg(batch) if self._write_link is not None else self._apply(batch)
        self._mark_written(batch, outcomes)
        return outcomes

    def _write_pg(self, batch: Sequence[_Change]) -> list[_Outcome]:
        assert self._write_link is not None
        fast: list[int] = []
        later: list[int] = []
        runs: set[str] = set()
        tasks: set[str] = set()
        for i, change in enumerate(batch):
            task = change.claim.task_id
            if change.claim.run_id in runs or (task is not None and task in tasks):
                later.append(i)
                continue
            runs.add(change.claim.run_id)
            if task is not None:
                tasks.add(task)
            fast.append(i)
        changes = [self._pg_change(batch[i]) for i in fast]
        refill, reserved = self._reserve(changes)
        try:
            applied = queue_pg.transitions(
                self._write_link,
                changes,
                now=self.clock(),
                channel=NOTIFY_CHANNEL,
                redactor=self.redactor,
                refill=queue_pg.Refill(refill.worker_id, reserved, self.lease) if refill else None,
            )
        except BaseException:
            if refill is not None:
                refill.deliver([], reserved)
            raise
        if refill is not None:
            worker = refill.worker_id
            refill.deliver(
                [Claim(r.run_id, r.task_id, r.attempt, worker, r.trace_id) for r in applied.claimed], reserved
            )
        outcomes: list[_Outcome] = [False] * len(batch)
        for n, i in enumerate(fast):
            if n in applied.general:
                later.append(i)
            outcomes[i] = n in applied.written
        for i in sorted(later):
            try:
                outcomes[i] = self._apply([batch[i]])[0]
            except Exception as exc:
                outcomes[i] = exc
        return outcomes

    def _reserve(self, changes: list[queue_pg.Change]) -> tuple[Refill | None, int]:
        """The refill for a group of transitions, if a Worker of this queue frees slots with them."""
        if not self._refills or not changes:
            return None, 0
        finishing: dict[str, int] = {}
        with self._tracked_lock:
            for c in changes:
                if (c.run_id, c.attempt, c.worker_id) in self._tracked:
                    finishing[c.worker_id] = finishing.get(c.worker_id, 0) + 1
        # One claim per statement: for the worker that frees the most slots in it.
        for worker_id, count in sorted(finishing.items(), key=lambda kv: -kv[1]):
            refill = self._refills.get(worker_id)
            if refill is not None:
                reserved = refill.reserve(count)
                return (refill, reserved) if reserved > 0 else (None, 0)
        return None, 0

    @staticmethod
    def _pg_change(change: _Change) -> queue_pg.Change:
        claim = change.claim
        return queue_pg.Change(
            run_id=claim.run_id,
            task_id=claim.task_id,
            trace_id=claim.trace_id,
            attempt=claim.attempt,
            worker_id=claim.worker_id,
            to=change.to,
            error_code=change.error_code,
            error_message=change.error_message,
            outputs=change.outputs,
            telemetry=change.telemetry,
            note=change.note,
            steps=change.steps,
            artifacts=change.artifacts,
        )

    def _apply(self, batch: Sequence[_Change]) -> list[bool]:
        """Apply fenced transitions in one transaction; one bool per change."""
        now = self.clock()
        with self.factory() as session, session.begin():
            return [self._apply_one(session, change, now) for change in batch]

    def _apply_one(self, session: Session, change: _Change, now: datetime) -> bool:
        claim, to = change.claim, change.to
        outputs = change.outputs
        if change.steps is not None or change.artifacts:
            # Fence first: a stale worker writes no step row and no artifact either.
            owned = session.execute(select(RunRow.id).where(*self._owned(claim)).with_for_update()).first()
            if owned is None:
                return False
            if change.steps is not None:
                step_rows.write_step_rows(
                    session,
                    run_id=claim.run_id,
                    attempt=claim.attempt,
                    rows=change.steps[0],
                    current=change.steps[1],
                )
            ids = [record_values(session, values) for values in change.artifacts or []]
            outputs = artifact_outputs(outputs, ids)
        values: dict[str, Any] = {"status": to.value, "updated_at": now, "version": RunRow.version + 1}
        if change.error_code is not None:
            values["error_code"], values["error_message"] = change.error_code, change.error_message
        if outputs is not None:
            values["outputs"] = outputs
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
                # The status inline, so a prepared plan can still use the partial lease index.
                .where(RunRow.status == literal(RunStatus.RUNNING.value, literal_execute=True))
                .where(RunRow.lease_expires_at < now)
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
            raise _lost(claim)
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
