"""The Worker: claims runs, runs them on a pool of threads, heartbeats their leases, reaps, drains on stop."""

from __future__ import annotations

import os
import queue as queue_mod
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from control_tower.logs import get_logger
from cwom.base import new_id
from cwom.enums import RunStatus
from worker.notify import Notifier
from worker.queue import Claim, Executor, Refill, RunControl, RunQueue

log = get_logger(__name__)


def default_worker_id() -> str:
    """host:pid:random, unique per process so two workers never share a fence."""
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[-6:]}"


@dataclass
class _Active:
    claim: Claim
    control: RunControl


class Companion(Protocol):
    """A background job that lives as long as the worker (e.g. the GitHub command pump)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Worker:
    """Claims queued runs and executes them; survives database outages; drains on `stop()`."""

    def __init__(
        self,
        queue: RunQueue,
        executor: Executor,
        *,
        worker_id: str | None = None,
        concurrency: int = 1,
        prefetch: int = 0,
        poll_interval: float = 0.5,
        notifier: Notifier | None = None,
        heartbeat_interval: float | None = None,
        reap_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        backoff_max: float = 5.0,
        companions: Sequence[Companion] = (),
    ) -> None:
        self.companions = list(companions)
        self.queue = queue
        self.executor = executor
        self.worker_id = worker_id or default_worker_id()
        self.concurrency = max(1, concurrency)
        # Runs claimed ahead of a free executor thread, so claims go in batches when busy (throughput);
        # 0 never holds a run no thread is ready for.
        self.prefetch = max(0, prefetch)
        self.poll_interval = poll_interval
        self.notifier = notifier
        lease = queue.lease.total_seconds()
        # Three heartbeats per lease: one lost round trip does not lose the run.
        self.heartbeat_interval = heartbeat_interval or max(lease / 3, 0.05)
        self.reap_interval = reap_interval or max(lease / 2, 0.05)
        self.clock = clock
        self.backoff_max = backoff_max
        self.completed = 0  # runs this worker executed (any outcome), for benches and tests
        self._lock = threading.Lock()
        self._active: dict[str, _Active] = {}
        # Slots held for runs a transition statement is claiming along with its changes.
        self._reserved = 0
        self._work: queue_mod.Queue[_Active | None] = queue_mod.Queue()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._deadline: float | None = None
        self._threads: list[threading.Thread] = []

    # -- public ---------------------------------------------------------------------------------------

    def run(self, until_idle: bool = False) -> None:
        """Claim and execute until `stop()` (or, with until_idle, until nothing is left to do)."""
        self._stopped.clear()
        self._threads = [
            threading.Thread(target=self._executor_thread, name=f"run-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        self._threads.append(threading.Thread(target=self._heartbeat_thread, name="heartbeat", daemon=True))
        for thread in self._threads:
            thread.start()
        self.queue.attach_refill(Refill(self.worker_id, self._reserve, self._deliver))
        self.queue.hold_connections()
        if self.notifier is not None:
            self.notifier.start(self._on_run, self._on_cancel)
        for companion in self.companions:
            companion.start()
        log.info("worker.started", worker_id=self.worker_id, concurrency=self.concurrency)
        try:
            self._dispatch(until_idle)
            self._drain()
        finally:
            self.queue.detach_refill(self.worker_id)
            for companion in self.companions:
                companion.stop()
            if self.notifier is not None:
                self.notifier.close()
            for _ in range(self.concurrency):
                self._work.put(None)
            self._stopped.set()
            for thread in self._threads:
                thread.join(timeout=5)
            close = getattr(self.executor, "close", None)
            if callable(close):
                close()  # what the executor keeps for the next run (sandbox spares)
            self.queue.release_connections()
            log.info("worker.stopped", worker_id=self.worker_id, executed=self.completed)

    def stop(self, grace_seconds: float = 30.0) -> None:
        """Stop claiming; running runs get `grace_seconds` to finish, then are released to the queue."""
        deadline = self.clock() + grace_seconds
        with self._lock:
            self._deadline = deadline if self._deadline is None else min(self._deadline, deadline)
            for item in self._active.values():
                item.control.deadline = self._deadline
                item.control.stopping.set()
        self._stopping.set()
        self._wake.set()

    def poke(self) -> None:
        """Wake the dispatcher (something may be claimable)."""
        self._wake.set()

    def active_runs(self) -> list[str]:
        """Ids of the runs this worker is executing now."""
        with self._lock:
            return list(self._active)

    # -- dispatcher -----------------------------------------------------------------------------------

    def _dispatch(self, until_idle: bool) -> None:
        backoff = 0.0
        next_reap = self.clock()
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                if self.clock() >= next_reap:
                    self.queue.reap_expired()
                    next_reap = self.clock() + self.reap_interval
                free = self._claimable()
                claims = self.queue.claim(self.worker_id, limit=free) if free > 0 else []
                backoff = 0.0
            except Exception as exc:  # a database outage must never kill the worker
                backoff = min(max(backoff * 2, 0.1), self.backoff_max)
                log.warning("worker.db_error", error=_short(exc), retry_in=backoff)
                self._wake.wait(backoff)
                continue
            for claim in claims:
                self._start(claim)
            if claims and len(claims) == free:
                continue  # there may be more: claim again as soon as a slot frees
            if until_idle and not claims and not self.active_runs():
                return
            self._wake.wait(self.poll_interval)

    def _claimable(self) -> int:
        """How many runs to claim now: all free slots, but with prefetch only in batches while busy."""
        with self._lock:
            active = self._holding() + self._reserved
        free = self.concurrency + self.prefetch - active
        if self.prefetch and active >= self.concurrency and free < self.prefetch:
            return 0
        return max(0, free)

    def _reserve(self, finishing: int) -> int:
        """Slots for a transition statement to fill: those its `finishing` runs free, and any free now."""
        with self._lock:
            if self._stopping.is_set():
                return 0
            free = self.concurrency + self.prefetch - self._holding() - self._reserved + finishing
            reserved = max(0, min(free, self.concurrency + self.prefetch))
            self._reserved += reserved
            return reserved

    def _holding(self) -> int:
        """Runs that occupy a slot: active ones, less those whose transition is written already (their
        threads are returning; counting them would leave the next group of transitions no slot to
        refill, and a statement of its own to make)."""
        return len(self._active) - self.queue.released(self.worker_id)

    def _deliver(self, claims: list[Claim], reserved: int) -> None:
        """Start what a transition statement claimed; its executor threads pick them as they return."""
        for claim in claims:
            self._start(claim)
        with self._lock:
            self._reserved -= reserved
        self._wake.set()

    def _start(self, claim: Claim) -> None:
        control = RunControl(queue=self.queue)
        with self._lock:
            if self._deadline is not None:
                control.deadline = self._deadline
                control.stopping.set()
            item = _Active(claim, control)
            self._active[claim.run_id] = item
        self.queue.track(claim)
        log.info("run.claimed", run_id=claim.run_id, attempt=claim.attempt, worker_id=self.worker_id)
        self._work.put(item)

    def _drain(self) -> None:
        """Wait for running runs until the grace deadline, then release what is left."""
        while self.active_runs():
            deadline = self._deadline
            if deadline is not None and self.clock() >= deadline:
                break
            self._wake.wait(0.05 if deadline is None else max(0.0, min(0.05, deadline - self.clock())))
            self._wake.clear()
        with self._lock:
            leftover = list(self._active.values())
        for item in leftover:
            released = self._retrying(
                lambda i=item: self.queue.transition(  # type: ignore[misc]
                    i.claim, RunStatus.QUEUED, note="released: worker shutting down"
                )
            )
            log.info("run.released", run_id=item.claim.run_id, released=released)
            item.control.stop("released")
        # Give executors a moment to notice the event and kill their sandboxes.
        end = self.clock() + 5.0
        while self.active_runs() and self.clock() < end:
            time.sleep(0.02)

    # -- threads --------------------------------------------------------------------------------------

    def _executor_thread(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            try:
                if self._stopping.is_set():
                    # Claimed but not started when the drain began: hand it straight back.
                    self._retrying(
                        lambda i=item: self.queue.transition(  # type: ignore[misc]
                            i.claim, RunStatus.QUEUED, note="released: worker shutting down"
                        )
                    )
                    continue
                self._execute(item)
            finally:
                self.queue.settled(item.claim)  # stop tracking, whatever happened
                with self._lock:
                    self._active.pop(item.claim.run_id, None)
                    self.completed += 1
                self._wake.set()

    def _execute(self, item: _Active) -> None:
        claim, control = item.claim, item.control
        try:
            self.executor(claim, control)
        except Exception as exc:
            if is_database_outage(exc):
                # Not the run's fault: hand it back for another attempt once the database answers.
                log.warning("run.db_error", run_id=claim.run_id, attempt=claim.attempt, error=_short(exc))
                released = self._retrying(
                    lambda: self.queue.transition(claim, RunStatus.QUEUED, note="released: database error"),
                    attempts=12,
                )
                if released:
                    control.stop("released")
                return
            log.exception("run.executor_error", run_id=claim.run_id, attempt=claim.attempt)
            message = _short(exc, 2000)
            self._retrying(
                lambda: self.queue.transition(
                    claim, RunStatus.FAILED, error_code="EXECUTOR_ERROR", error_message=message
                )
            )
            return
        if control.cancelled.is_set() or self.queue.settled(claim):
            return
        # The executor should have recorded the outcome; a run still held here was left behind.
        if control.stopping.is_set():
            self._retrying(
                lambda: self.queue.transition(claim, RunStatus.QUEUED, note="released: worker shutting down")
            )
        else:
            self._retrying(
                lambda: self.queue.transition(
                    claim,
                    RunStatus.FAILED,
                    error_code="EXECUTOR_ERROR",
                    error_message="the executor returned without finishing the run",
                )
            )

    def _heartbeat_thread(self) -> None:
        while not self._stopped.wait(self.heartbeat_interval):
            with self._lock:
                items = [i for i in self._active.values() if not i.control.cancelled.is_set()]
            if not items:
                continue
            try:
                # One statement renews every lease this worker holds.
                held = self.queue.heartbeat_all([item.claim for item in items])
            except Exception as exc:
                # Keep going: fenced writes protect the runs if a lease is lost meanwhile.
                log.warning("run.heartbeat_error", runs=len(items), error=_short(exc))
                continue
            for item in items:
                if item.claim.run_id not in held and item.claim.run_id in self._active:
                    reason = self._why_lost(item.claim)
                    log.info("run.lost", run_id=item.claim.run_id, reason=reason)
                    item.control.stop(reason)

    def _why_lost(self, claim: Claim) -> str:
        try:
            status = self.queue.status(claim.run_id)
        except Exception:
            return "lease_lost"
        return "cancelled" if status == RunStatus.CANCELLED.value else "lease_lost"

    # -- notifications --------------------------------------------------------------------------------

    def _on_run(self, _run_id: str) -> None:
        self._wake.set()

    def _on_cancel(self, run_id: str) -> None:
        with self._lock:
            item = self._active.get(run_id)
        if item is not None:
            log.info("run.cancel_notified", run_id=run_id)
            item.control.stop("cancelled")

    def _retrying(self, write: Callable[[], bool], attempts: int = 5) -> bool:
        """Retry a fenced write through a short database outage; fencing makes retries safe."""
        delay = 0.1
        for n in range(attempts):
            try:
                return write()
            except Exception as exc:
                if n == attempts - 1:
                    log.error("run.write_failed", error=_short(exc))
                    return False
                time.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
        return False


def is_database_outage(exc: BaseException) -> bool:
    """A lost or refused database connection (server restart, network), as opposed to a bad statement."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _short(exc: BaseException, limit: int = 300) -> str:
    return f"{type(exc).__name__}: {exc}".strip()[:limit]
