"""The run queue and the Worker on SQLite and PostgreSQL: claims, leases, fencing, cancel, resume, drain."""

from __future__ import annotations

import functools
import importlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker

from control_tower import intake
from control_tower.db import make_sessionmaker
from control_tower.serve import build_app, registered_background
from control_tower.settings import Settings
from control_tower.tables import TaskRow
from cwom.audit import Actor, AuditRow
from cwom.audit_query import verify
from cwom.base import utcnow
from cwom.enums import RunStatus
from cwom.tables import RunRow
from policy import TaskCreateV1
from policy.redaction import Redactor
from tests.conftest import task_body
from tests.support.servers import serve_in_thread
from worker.loop import Worker
from worker.notify import LocalNotifier, Notifier, PgNotifier
from worker.queue import (
    Claim,
    InvalidTransition,
    LostLease,
    Refill,
    RunControl,
    RunNotFound,
    RunQueue,
    _Change,
)

ALICE = Actor("human", "alice")


class FakeClock:
    """A wall clock the test moves by hand (starting a minute ahead, so runs enqueued now are due)."""

    def __init__(self) -> None:
        self.now = utcnow() + timedelta(minutes=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def enqueue(factory: sessionmaker[Session], settings: Settings, *, max_attempts: int = 3, **body: Any) -> str:
    accepted = intake.submit(
        factory,
        task=TaskCreateV1.model_validate(task_body(**body)),
        config=settings.policy_config(),
        max_attempts=max_attempts,
    )
    assert accepted.task.run_id is not None
    return accepted.task.run_id


def run_row(factory: sessionmaker[Session], run_id: str) -> RunRow:
    with factory() as session:
        return session.get_one(RunRow, run_id)


def task_status(factory: sessionmaker[Session], run_id: str) -> str:
    with factory() as session:
        return session.scalars(select(TaskRow.status).where(TaskRow.run_id == run_id)).one()


def run_audit(factory: sessionmaker[Session], run_id: str) -> list[dict[str, Any]]:
    with factory() as session:
        rows = session.scalars(
            select(AuditRow)
            .where(
                AuditRow.entity_kind == "run",
                AuditRow.entity_id == run_id,
                AuditRow.action == "status_changed",
            )
            .order_by(AuditRow.seq)
        ).all()
        return [{"before": r.before, "after": r.after, "actor": r.actor_id, "note": r.note} for r in rows]


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(factory: sessionmaker[Session], clock: FakeClock) -> RunQueue:
    return RunQueue(factory, lease_seconds=10, max_attempts=3, clock=clock)


# -- claiming -----------------------------------------------------------------------------------------


def test_claims_by_priority_then_age(
    factory: sessionmaker[Session], settings: Settings, queue: RunQueue
) -> None:
    low = enqueue(factory, settings, priority=500)
    old = enqueue(factory, settings, priority=10)
    new = enqueue(factory, settings, priority=10)
    order = [c.run_id for _ in range(3) for c in queue.claim("w1")]
    assert order == [old, new, low]
    assert queue.claim("w1") == []


def test_claim_sets_the_lease_attempt_and_task_status(
    factory: sessionmaker[Session], settings: Settings, queue: RunQueue, clock: FakeClock
) -> None:
    run_id = enqueue(factory, settings)
    [claim] = queue.claim("w1")
    assert claim == Claim(run_id, claim.task_id, 1, "w1", claim.trace_id) and claim.task_id
    row = run_row(factory, run_id)
    assert (row.status, row.locked_by, row.attempt) == ("running", "w1", 1)
    assert row.lease_expires_at == clock.now + timedelta(seconds=10)
    assert row.started_at == clock.now
    assert task_status(factory, run_id) == "running"
    [entry] = run_audit(factory, run_id)
    assert entry["before"]["status"] == "queued" and entry["after"]["status"] == "running"


def test_batch_claim_takes_up_to_the_limit(
    factory: sessionmaker[Session], settings: Settings, queue: RunQueue
) -> None:
    ids = {enqueue(factory, settings) for _ in range(5)}
    first = queue.claim("w1", limit=3)
    second = queue.claim("w1", limit=3)
    assert len(first) == 3 and len(second) == 2
    assert {c.run_id for c in first + second} == ids


def test_many_threads_never_claim_the_same_run(
    factory: sessionmaker[Session], settings: Settings, clock: FakeClock
) -> None:
    total = 60
    for _ in range(total):
        enqueue(factory, settings)
    claimed: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def drain(n: int) -> None:
        q = RunQueue(factory, lease_seconds=10, max_attempts=3, clock=clock)
        try:
            while batch := q.claim(f"w{n}", limit=1 + n % 3):
                with lock:
                    claimed.extend(c.run_id for c in batch)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(claimed) == total and len(set(claimed)) == total


# -- leases, reaping, fencing ------------------------------------------------------------------------


def test_expired_lease_is_reclaimed_with_the_next_attempt(
    factory: sessionmaker[Session], settings: Settings, queue: RunQueue, clock: FakeClock
) -> None:
    run_id = enqueue(factory, settings)
    [first] = queue.claim("w1")
    clock.advance(9)
    assert queue.reap_expired() == 0  # not yet expired
    assert queue.heartbeat(first)  # and the heartbeat pushes the lease out again
    clock.advance(9)
    assert queue.reap_expired() == 0
    clock.advance(11)
    assert queue.reap_expired() == 1
    row = run_row(factory, run_id)
    assert (row.status, row.locked_by, row.lease_expires_at) == ("queued", None, None)
    assert task_status(factory, run_id) == "queued"
    [second] = queue.claim("w2")
    assert (second.run_id, second.attempt, second.worker_id) == (run_id, 2, "w2")
    notes = [e["note"] for e in run_audit(factory, run_id)]
    assert "lease of w1 expired" in notes


def test_attempts_exhausted_fails_the_run(
    factory: sessionmaker[Session], settings: Settings, queue: RunQueue, clock: FakeClock
) -> None:
    run_id = enqueue(factory, settings, max_attempts=2)
    for n in (1, 2):
        [claim] = queue.claim(f"w{n}")
        assert claim.attempt == n
        clock.advance(11)
        assert queue.reap_expired() == 1
    row = run_row(factory, run_id)
    assert (row.status, row.error_code) == ("failed", "ATTEMPTS_EXHAUSTED")
    assert row.ended_at == clock.now
    assert task_status(factory, run_id) == "failed"
    assert queue.claim("w3") == []


def test_a_stale_claim_is_fenced_out_after_reclaim(
    factory: sessionmaker[Session], settings: Settings, queue: RunQueue, clock: FakeClock
) -> None:
    run_id = enqueue(factory, settings)
    [stale] = queue.claim("w1")
    clock.advance(11)
    queue.reap_expired()
    [fresh] = queue.claim("w2")
    assert not queue.heartbeat(stale)
    assert not queue.transition(stale, RunStatus.DONE, outputs=[{"by": "stale"}])
    with pytest.raises(LostLease) as lost, queue.fenced(stale):
        pytest.fail("a stale claim must not get a fenced session")
    assert lost.value.code == "LEASE_LOST"
    # Even the same worker id with the old attempt number is refused.
    assert not queue.transition(Claim(run_id, fresh.task_id, 1, "w2", None), RunStatus.FAILED)
    with queue.fenced(fresh) as session:
        session.get_one(RunRow, run_id).current_step = "step-1"
    assert queue.transition(fresh, RunStatus.DONE, outputs=[{"by": "fresh"}], telemetry={"k": 1})
    row = run_row(factory, run_id)
    assert (row.status, row.attempt, row.current_step) == ("done", 2, "step-1")
    assert row.outputs == [{"by": "fresh"}]
    assert row.telemetry["k"] == 1
    assert task_status(factory, run_id) == "completed"
    done = [e for e in run_audit(factory, run_id) if e["after"]["status"] == "done"]
    assert len(done) == 1 and done[0]["actor"] == "w2"


def test_transition_rejects_an_impossible_target(
    factory: sessionmaker[Session], settings: Settings, queue: RunQueue
) -> None:
    enqueue(factory, settings)
    [claim] = queue.claim("w1")
    with pytest.raises(InvalidTransition):
        queue.transition(claim, RunStatus.PLANNED)


def test_release_requeues_without_spending_an_attempt(
    factory: sessionmaker[Session], settings: Settings, queue: RunQueue
) -> None:
    run_id = enqueue(factory, settings, max_attempts=1)
    [claim] = queue.claim("w1")
    assert queue.transition(claim, RunStatus.QUEUED, note="released")
    row = run_row(factory, run_id)
    assert (row.status, row.locked_by, row.max_attempts) == ("queued", None, 2)
    [again] = queue.claim("w2")
    assert again.attempt == 2


# -- cancel and resume -------------------------------------------------------------------------------


def test_cancel_a_queued_run(factory: sessionmaker[Session], settings: Settings, queue: RunQueue) -> None:
    run_id = enqueue(factory, settings)
    row = queue.cancel(run_id, actor=ALICE, note="not needed")
    assert row.status == "cancelled" and row.ended_at is not None
    assert queue.claim("w1") == []
    assert task_status(factory, run_id) == "cancelled"
    last = run_audit(factory, run_id)[-1]
    assert (last["actor"], last["note"], last["after"]["status"]) == ("alice", "not needed", "cancelled")
    with pytest.raises(InvalidTransition):
        queue.cancel(run_id, actor=ALICE, note=None)
    with pytest.raises(RunNotFound):
        queue.cancel("01NOSUCHRUN000000000000000", actor=ALICE, note=None)


def test_waiting_run_approve_reject_and_cancel(
    factory: sessionmaker[Session], settings: Settings, queue: RunQueue
) -> None:
    approved, rejected, cancelled = (enqueue(factory, settings) for _ in range(3))
    claims = {c.run_id: c for c in queue.claim("w1", limit=3)}
    for run_id in (approved, rejected, cancelled):
        assert queue.transition(claims[run_id], RunStatus.WAITING, note="approval")
        row = run_row(factory, run_id)
        assert (row.status, row.locked_by, row.lease_expires_at) == ("waiting", None, None)
        assert task_status(factory, run_id) == "waiting"
    assert not queue.heartbeat(claims[approved])  # nobody holds a waiting run
    with pytest.raises(InvalidTransition) as not_waiting:
        queue.resume(enqueue(factory, settings), decision="approve", actor=ALICE, note=None)
    assert not_waiting.value.code == "RUN_NOT_WAITING"

    row = queue.resume(approved, decision="approve", actor=ALICE, note="lgtm")
    assert row.status == "queued" and row.max_attempts == 4
    assert row.telemetry["approvals"][0]["decision"] == "approve"
    assert row.telemetry["approvals"][0]["by"] == "human:alice"
    assert task_status(factory, approved) == "queued"
    assert run_audit(factory, approved)[-1]["after"]["decision"] == "approve"

    row = queue.resume(rejected, decision="reject", actor=ALICE, note="no")
    assert (row.status, row.error_code, row.error_message) == ("failed", "APPROVAL_REJECTED", "no")
    assert task_status(factory, rejected) == "failed"

    assert queue.cancel(cancelled, actor=ALICE, note=None).status == "cancelled"
    # The approved run is claimable again, by anyone, with the next attempt.
    reclaimed = [c for c in queue.claim("w2", limit=5) if c.run_id == approved]
    assert [c.attempt for c in reclaimed] == [2]


# -- the Worker --------------------------------------------------------------------------------------


def make_worker(
    factory: sessionmaker[Session],
    executor: Callable[[Claim, RunControl], None],
    *,
    lease: float = 1.0,
    concurrency: int = 2,
    notifier: Notifier | None = None,
    poll: float = 0.05,
) -> Worker:
    q = RunQueue(factory, lease_seconds=lease, max_attempts=3)
    return Worker(
        q,
        executor,
        worker_id="tw",
        concurrency=concurrency,
        poll_interval=poll,
        notifier=notifier,
        heartbeat_interval=0.1,
    )


@contextmanager
def running(worker: Worker, grace: float = 5.0) -> Iterator[Worker]:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop(grace)
        thread.join(timeout=grace + 10)
        assert not thread.is_alive()


def finish(claim: Claim, control: RunControl) -> None:
    control.queue.transition(claim, RunStatus.DONE)


def test_worker_runs_everything_until_idle(factory: sessionmaker[Session], settings: Settings) -> None:
    ids = [enqueue(factory, settings) for _ in range(6)]
    worker = make_worker(factory, finish, concurrency=3)
    worker.run(until_idle=True)
    assert worker.completed == 6
    assert {run_row(factory, i).status for i in ids} == {"done"}


def test_executor_errors_fail_the_run(factory: sessionmaker[Session], settings: Settings) -> None:
    raising, returning = enqueue(factory, settings, priority=1), enqueue(factory, settings, priority=2)

    def executor(claim: Claim, control: RunControl) -> None:
        if claim.run_id == raising:
            raise RuntimeError("boom")

    make_worker(factory, executor, concurrency=1).run(until_idle=True)
    row = run_row(factory, raising)
    assert (row.status, row.error_code) == ("failed", "EXECUTOR_ERROR")
    assert "boom" in (row.error_message or "")
    row = run_row(factory, returning)
    assert (row.status, row.error_code) == ("failed", "EXECUTOR_ERROR")
    assert "without finishing" in (row.error_message or "")


def test_heartbeats_keep_a_long_run_leased(factory: sessionmaker[Session], settings: Settings) -> None:
    run_id = enqueue(factory, settings)

    def slow(claim: Claim, control: RunControl) -> None:
        assert not control.cancelled.wait(2.5)  # 2.5 lease lengths, reaper running all along
        assert control.queue.transition(claim, RunStatus.DONE)

    worker = make_worker(factory, slow, lease=1.0)
    worker.run(until_idle=True)
    row = run_row(factory, run_id)
    assert (row.status, row.attempt) == ("done", 1)


def test_cancel_reaches_the_running_executor(factory: sessionmaker[Session], settings: Settings) -> None:
    run_id = enqueue(factory, settings)
    seen: dict[str, Any] = {}

    def waits(claim: Claim, control: RunControl) -> None:
        seen["claimed"] = True
        seen["cancelled"] = control.cancelled.wait(15)
        seen["reason"] = control.reason
        seen["wrote"] = control.queue.transition(claim, RunStatus.DONE)

    with running(make_worker(factory, waits)):
        wait_for(lambda: seen.get("claimed", False))
        RunQueue(factory, lease_seconds=1, max_attempts=3).cancel(run_id, actor=ALICE, note="stop")
        wait_for(lambda: "wrote" in seen)
    assert seen == {"claimed": True, "cancelled": True, "reason": "cancelled", "wrote": False}
    assert run_row(factory, run_id).status == "cancelled"


def test_stop_drains_then_releases(factory: sessionmaker[Session], settings: Settings) -> None:
    quick, stuck = enqueue(factory, settings, priority=1), enqueue(factory, settings, priority=2)
    started: set[str] = set()
    reasons: dict[str, str | None] = {}

    def executor(claim: Claim, control: RunControl) -> None:
        started.add(claim.run_id)
        if claim.run_id == quick:
            control.stopping.wait(10)
            assert control.deadline is not None
            control.queue.transition(claim, RunStatus.DONE)
            return
        control.cancelled.wait(10)
        reasons[claim.run_id] = control.reason

    worker = make_worker(factory, executor, concurrency=2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    wait_for(lambda: len(started) == 2)
    begun = time.monotonic()
    worker.stop(0.8)
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert 0.7 < time.monotonic() - begun < 5
    assert run_row(factory, quick).status == "done"
    row = run_row(factory, stuck)
    assert (row.status, row.locked_by, row.attempt, row.max_attempts) == ("queued", None, 1, 4)
    assert reasons == {stuck: "released"}
    assert worker.queue.claim("after", limit=5)[0].run_id == stuck  # nothing else left; it runs again


def test_notification_wakes_an_idle_worker(
    factory: sessionmaker[Session], settings: Settings, engine: Engine
) -> None:
    local = LocalNotifier()
    pg = PgNotifier.for_engine(engine) if engine.dialect.name == "postgresql" else None
    notifier: Notifier = pg or local
    starts: dict[str, float] = {}

    def record(claim: Claim, control: RunControl) -> None:
        starts[claim.run_id] = time.monotonic()
        control.queue.transition(claim, RunStatus.DONE)

    # Polling every 30 s: only the notification can make the worker start the run quickly.
    with running(make_worker(factory, record, notifier=notifier, poll=30.0)):
        if pg is not None:
            assert pg.listening.wait(10)
        time.sleep(0.3)  # let the first claim find nothing and go idle
        t0 = time.monotonic()
        run_id = enqueue(factory, settings)
        if pg is None:
            local.poke(run_id)
        wait_for(lambda: run_id in starts, timeout=10)
    assert starts[run_id] - t0 < 1.0


def test_serve_runs_the_in_process_worker(settings: Settings, engine: Engine) -> None:
    importlib.import_module("worker.service")  # registers the worker, as the console script does
    assert "worker" in registered_background()
    settings = settings.model_copy(update={"worker_poll_interval": 0.05})
    for with_worker in (False, True):
        app = build_app(settings, engine=engine, with_worker=with_worker)
        with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=30) as client:
            created = client.post("/tasks/enqueue", json=task_body())
            assert created.status_code == 201
            run_id = created.json()["cwom"]["run_id"]
            factory = app.state.session_factory
            if with_worker:
                wait_for(lambda f=factory, r=run_id: run_row(f, r).status != "queued", 60)  # type: ignore[misc]
            else:
                time.sleep(0.5)
                assert run_row(factory, run_id).status == "queued"


def test_group_commit_applies_each_change_fenced(
    factory: sessionmaker[Session], settings: Settings, clock: FakeClock
) -> None:
    grouped = RunQueue(factory, lease_seconds=10, max_attempts=3, clock=clock, group_commit=True)
    ids = [enqueue(factory, settings) for _ in range(12)]
    claims = grouped.claim("w1", limit=12)
    stale = Claim(claims[0].run_id, claims[0].task_id, claims[0].attempt + 1, "w1", None)
    results: dict[str, bool] = {}
    errors: dict[str, str] = {}

    def finish_one(claim: Claim, outputs: list[Any]) -> None:
        try:
            ok = grouped.transition(claim, RunStatus.DONE, outputs=outputs)
            results[claim.run_id + str(claim.attempt)] = ok
        except Exception as exc:
            errors[claim.run_id] = type(exc).__name__

    # One change carries a value that cannot be stored: it fails alone, its neighbours commit.
    jobs = [(c, [{"n": i}]) for i, c in enumerate(claims[1:], 1)]
    jobs += [(stale, []), (claims[0], [{"bad": object()}])]
    threads = [threading.Thread(target=finish_one, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert list(errors) == [claims[0].run_id]  # TypeError, wrapped by SQLAlchemy on SQLite
    assert results.pop(stale.run_id + str(stale.attempt)) is False
    assert all(results.values()) and len(results) == 11
    statuses = {i: run_row(factory, i).status for i in ids}
    assert statuses[claims[0].run_id] == "running"
    assert sum(1 for s in statuses.values() if s == "done") == 11


# -- one statement per claim and per group of transitions (PostgreSQL), one transaction (SQLite) -----


def chain_ok(engine: Engine) -> None:
    result = verify(engine)
    assert result.ok, result.to_dict()


def test_batch_claim_mirrors_and_audits_every_run(
    factory: sessionmaker[Session], settings: Settings, queue: RunQueue, engine: Engine
) -> None:
    low, high, mid = (enqueue(factory, settings, priority=p) for p in (300, 10, 100))
    extra = enqueue(factory, settings, priority=400)
    claims = queue.claim("w1", limit=3)
    assert [c.run_id for c in claims] == [high, mid, low]
    for claim in claims:
        assert (claim.attempt, claim.worker_id) == (1, "w1") and claim.task_id and claim.trace_id
        row = run_row(factory, claim.run_id)
        assert (row.status, row.locked_by, row.attempt) == ("running", "w1", 1)
        assert task_status(factory, claim.run_id) == "running"
        [entry] = run_audit(factory, claim.run_id)
        assert entry["before"] == {"status": "queued", "attempt": 0}
        assert entry["after"] == {"status": "running", "attempt": 1, "locked_by": "w1"}
        assert entry["actor"] == "w1"
    assert run_row(factory, extra).status == "queued" and run_audit(factory, extra) == []
    assert queue.claim("w1", limit=0) == []
    chain_ok(engine)


def test_a_group_writes_its_members_and_fences_out_the_stale_one(
    factory: sessionmaker[Session], settings: Settings, queue: RunQueue, clock: FakeClock, engine: Engine
) -> None:
    ids = [enqueue(factory, settings, priority=n) for n in range(6)]
    stale = queue.claim("w1")[0]
    clock.advance(11)
    assert queue.reap_expired() == 1
    claims = {c.run_id: c for c in queue.claim("w2", limit=6)}
    assert set(claims) == set(ids)
    fresh = claims[stale.run_id]
    # A run whose row carries an error code of its own takes the general path, with the same result.
    odd = claims[ids[3]]
    with factory() as session, session.begin():
        session.get_one(RunRow, odd.run_id).error_code = "EARLIER"
    change = functools.partial(_Change, error_code=None, error_message=None, note=None)
    outcomes = queue._write_group(
        [
            change(stale, RunStatus.DONE, outputs=[{"by": "stale"}], telemetry=None),
            change(fresh, RunStatus.DONE, outputs=[{"by": "fresh"}], telemetry={"k": 1}),
            change(claims[ids[1]], RunStatus.QUEUED, outputs=None, telemetry=None),
            _Change(claims[ids[2]], RunStatus.FAILED, "BOOM", "it broke", None, None, "failed here"),
            change(odd, RunStatus.DONE, outputs=None, telemetry=None),
            change(claims[ids[4]], RunStatus.WAITING, outputs=None, telemetry=None),
            change(fresh, RunStatus.FAILED, outputs=None, telemetry=None),  # second change of one run
        ]
    )
    assert outcomes == [False, True, True, True, True, True, False]
    row = run_row(factory, fresh.run_id)
    assert (row.status, row.attempt, row.outputs, row.telemetry.get("k")) == ("done", 2, [{"by": "fresh"}], 1)
    assert (row.lease_expires_at, row.ended_at) == (None, clock.now)
    assert task_status(factory, fresh.run_id) == "completed"
    row = run_row(factory, ids[1])
    assert (row.status, row.locked_by, row.max_attempts) == ("queued", None, 4)
    row = run_row(factory, ids[2])
    assert (row.status, row.error_code, row.error_message) == ("failed", "BOOM", "it broke")
    with factory() as session:
        task = session.scalars(select(TaskRow).where(TaskRow.run_id == ids[2])).one()
        assert (task.status, task.error_code) == ("failed", "BOOM")
    assert run_audit(factory, ids[2])[-1]["note"] == "failed here"
    assert run_audit(factory, ids[2])[-1]["after"]["error_code"] == "BOOM"
    assert run_row(factory, odd.run_id).status == "done"
    assert run_audit(factory, odd.run_id)[-1]["after"]["error_code"] == "EARLIER"
    assert (run_row(factory, ids[4]).status, task_status(factory, ids[4])) == ("waiting", "waiting")
    assert run_row(factory, ids[5]).status == "running"  # not in the group
    # One audit row per written change, none for the stale claim or the second change of a run.
    done = [e for e in run_audit(factory, fresh.run_id) if e["before"]["status"] == "running"]
    assert [(e["actor"], e["after"]["status"]) for e in done] == [("control-tower", "queued"), ("w2", "done")]
    chain_ok(engine)


def test_a_group_member_that_cannot_be_stored_fails_alone(
    factory: sessionmaker[Session], settings: Settings, queue: RunQueue
) -> None:
    ids = [enqueue(factory, settings) for _ in range(3)]
    claims = queue.claim("w1", limit=3)
    change = functools.partial(_Change, error_code=None, error_message=None, telemetry=None, note=None)
    batch = [
        change(c, RunStatus.DONE, outputs=[{"bad": object()}] if i == 1 else None)
        for i, c in enumerate(claims)
    ]
    with pytest.raises((TypeError, StatementError)):  # SQLAlchemy wraps it on SQLite
        queue._write_group(batch)  # the group is all or nothing...
    assert {run_row(factory, i).status for i in ids} == {"running"}
    results: dict[str, bool] = {}
    errors: list[str] = []

    def finish(item: _Change) -> None:
        try:
            results[item.claim.run_id] = queue.transition(item.claim, item.to, outputs=item.outputs)
        except Exception as exc:
            errors.append(type(exc).__name__)

    threads = [threading.Thread(target=finish, args=(item,)) for item in batch]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # ...and group commit writes the others again on their own: only the bad one fails.
    assert len(errors) == 1 and results == {claims[0].run_id: True, claims[2].run_id: True}
    assert [run_row(factory, c.run_id).status for c in claims] == ["done", "running", "done"]


def test_transitions_claim_the_slots_they_free(
    factory: sessionmaker[Session], settings: Settings, queue: RunQueue, engine: Engine
) -> None:
    ids = [enqueue(factory, settings, priority=n) for n in range(4)]
    first = queue.claim("w1", limit=2)
    asked: list[int] = []
    delivered: list[tuple[list[Claim], int]] = []

    def reserve(finishing: int) -> int:
        asked.append(finishing)
        return finishing + 1

    queue.attach_refill(Refill("w1", reserve, lambda claims, n: delivered.append((claims, n))))
    for claim in first:
        queue.track(claim)
    change = functools.partial(_Change, error_code=None, error_message=None, outputs=None, telemetry=None)
    assert queue._write_group([change(c, RunStatus.DONE, note=None) for c in first]) == [True, True]
    if engine.dialect.name != "postgresql":
        assert asked == [] and delivered == []  # SQLite: the dispatcher claims, as before
        return
    [(claims, reserved)] = delivered
    assert asked == [2] and reserved == 3
    assert [c.run_id for c in claims] == ids[2:]  # fewer than reserved: the queue ran dry
    for claim in claims:
        assert (claim.worker_id, claim.attempt) == ("w1", 1)
        assert run_row(factory, claim.run_id).status == "running"
        assert task_status(factory, claim.run_id) == "running"
        assert run_audit(factory, claim.run_id)[0]["after"] == {
            "status": "running",
            "attempt": 1,
            "locked_by": "w1",
        }
    queue.detach_refill("w1")
    queue.track(claims[0])
    assert queue.transition(claims[0], RunStatus.DONE) and queue.transition(claims[1], RunStatus.DONE)
    # The Worker learns that the executor finished the run, so it writes nothing more for it.
    assert queue.settled(claims[0]) and not queue.settled(claims[0]) and not queue.settled(claims[1])
    assert len(delivered) == 1
    chain_ok(engine)


def test_a_written_transition_frees_its_slot_before_the_executor_returns(
    factory: sessionmaker[Session], settings: Settings, queue: RunQueue
) -> None:
    for n in range(3):
        enqueue(factory, settings, priority=n)
    worker = Worker(queue, lambda claim, control: None, worker_id="w1", concurrency=2)
    first, second = queue.claim("w1", limit=2)
    worker._start(first)  # no executor threads: both stay active until settled
    worker._start(second)
    assert queue.released("w1") == 0 and worker._claimable() == 0
    assert queue.transition(first, RunStatus.DONE)
    # Its thread has not returned yet, but the run is no longer held: the slot can be refilled.
    assert queue.released("w1") == 1 and worker._claimable() == 1
    assert worker._reserve(1) == 2  # a group finishing `second` fills both slots
    assert queue.settled(first) and queue.released("w1") == 0
    assert not queue.transition(first, RunStatus.DONE)  # fenced: written once
    assert queue.released("w1") == 0 and not queue.settled(second)


def test_worker_ids_of_any_text_chain_and_redact(settings: Settings, engine: Engine) -> None:
    secret = "s3cr3t-value-42"
    factory = make_sessionmaker(engine, info={"redactor": Redactor(named={"WORKER_SECRET": secret})})
    queue = RunQueue(factory, lease_seconds=10, max_attempts=3)
    odd = 'w "1"\\ é ✓ \x01\t' + secret
    ids = [enqueue(factory, settings) for _ in range(3)]
    claims = queue.claim(odd, limit=3)
    assert {c.run_id for c in claims} == set(ids)
    assert queue.transition(claims[0], RunStatus.DONE, note='n "q" ✓')
    assert queue.transition(claims[1], RunStatus.FAILED, error_code="E", error_message=secret)
    entries = run_audit(factory, claims[0].run_id)
    assert [e["after"]["status"] for e in entries] == ["running", "done"]
    for entry in entries:
        assert secret not in entry["after"]["locked_by"] and "REDACTED" in entry["after"]["locked_by"]
        assert entry["actor"] == odd  # the actor is not a value the redactor scrubs
    chain_ok(engine)


def test_heartbeat_all_renews_what_is_held_and_names_what_was_lost(
    factory: sessionmaker[Session], settings: Settings, queue: RunQueue, clock: FakeClock
) -> None:
    for _ in range(3):
        enqueue(factory, settings)
    kept, done, cancelled = queue.claim("w1", limit=3)
    assert queue.transition(done, RunStatus.DONE)
    queue.cancel(cancelled.run_id, actor=ALICE, note=None)
    clock.advance(5)
    assert queue.heartbeat_all([kept, done, cancelled]) == {kept.run_id}
    assert run_row(factory, kept.run_id).lease_expires_at == clock.now + timedelta(seconds=10)
    assert queue.heartbeat_all([]) == set()


def test_a_transition_writes_its_step_rows_and_artifacts_fenced(
    factory: sessionmaker[Session], settings: Settings, queue: RunQueue, clock: FakeClock, engine: Engine
) -> None:
    """The last step rows and the artifacts go with the final transition (one statement on
    PostgreSQL): written only by the holder, audited before the status change, and an artifact a
    previous attempt made is updated (its id kept) rather than created twice."""
    from cwom.tables import ArtifactRow
    from worker.artifacts import artifact_values
    from worker.run_steps import RunStepRow, StepStatus
    from worker.step_rows import StepRows

    def final_writes(claim: Claim, digest: str) -> tuple[Any, list[dict[str, Any]]]:
        rows = StepRows()
        rows.begin(1, "shell", "shell")
        rows.end(1, "shell", "shell", StepStatus.COMPLETED, output={"exit_code": 0})
        art = artifact_values(
            run_id=claim.run_id, issue_id=None, key="trace", type="trace", title="t",
            uri=f"file:///t/{digest}", digest=digest, trace_id=claim.trace_id,
        )  # fmt: skip
        return rows.take(), [art]

    run_id = enqueue(factory, settings)
    [first] = queue.claim("w1")
    steps, arts = final_writes(first, "sha256:one")
    assert queue.transition(first, RunStatus.QUEUED, steps=steps, artifacts=arts, note="released")
    [second] = queue.claim("w2")
    steps2, arts2 = final_writes(second, "sha256:two")
    # The first attempt no longer holds the run: none of its writes land.
    stale_steps, stale_arts = final_writes(first, "sha256:stale")
    assert not queue.transition(first, RunStatus.DONE, steps=stale_steps, artifacts=stale_arts)
    assert queue.transition(second, RunStatus.DONE, steps=steps2, artifacts=arts2)
    with factory() as session:
        [artifact] = session.scalars(select(ArtifactRow).where(ArtifactRow.run_id == run_id)).all()
        step_rows = session.scalars(select(RunStepRow).where(RunStepRow.run_id == run_id)).all()
        audit_rows = session.scalars(select(AuditRow).order_by(AuditRow.seq)).all()
    assert (artifact.id, artifact.digest) == (arts[0]["id"], "sha256:two")  # the first id, updated
    assert sorted((s.attempt, s.step_id, s.status) for s in step_rows) == [
        (1, "shell", "completed"),
        (2, "shell", "completed"),
    ]
    row = run_row(factory, run_id)
    assert row.status == "done" and row.current_step == "shell"
    assert row.outputs == [{"kind": "artifact", "id": arts[0]["id"]}]
    mine = [(r.entity_kind, r.action) for r in audit_rows if r.entity_id in (run_id, arts[0]["id"])]
    assert mine[mine.index(("artifact", "created")) :] == [
        ("artifact", "created"),
        ("run", "status_changed"),  # released by attempt 1, in the same statement
        ("run", "status_changed"),  # claimed by attempt 2
        ("artifact", "updated"),  # the stale attempt's writes are nowhere
        ("run", "status_changed"),  # done
    ]
    assert not any(r.after and r.after.get("digest") == "sha256:stale" for r in audit_rows)
    chain_ok(engine)
