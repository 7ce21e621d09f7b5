"""A Worker wired from settings (queue, executor, notifier), and the in-process worker `serve` runs."""

from __future__ import annotations

import importlib
import threading
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from control_tower.db import make_sessionmaker
from control_tower.logs import get_logger
from control_tower.serve import register_background
from control_tower.settings import Settings
from cwom.enums import RunStatus
from policy.redaction import Redactor
from worker.github.pump import github_side
from worker.loop import Worker, default_worker_id
from worker.notify import Notifier, PgNotifier
from worker.queue import Claim, Executor, RunControl, RunQueue

log = get_logger(__name__)

DEFAULT_GRACE_SECONDS = 30.0


def no_executor(claim: Claim, control: RunControl) -> None:
    """Fail the run cleanly: this installation has no executor for it."""
    control.queue.transition(
        claim, RunStatus.FAILED, error_code="NO_EXECUTOR", error_message="no executor is installed"
    )


def load_executor(settings: Settings, factory: sessionmaker[Session], **extra: Any) -> Executor:
    """`worker.executor.build_executor` with every playbook, or `no_executor` when that module is absent."""
    try:
        module = importlib.import_module("worker.executor")
    except ModuleNotFoundError as exc:
        if exc.name != "worker.executor":
            raise
        log.warning("worker.no_executor")
        return no_executor
    # The AI playbooks (code_change, docs, analysis) on top of the built-in ones.
    from worker.ai_playbooks import ai_runners, register_ai_playbooks
    from worker.playbooks import default_registry

    executor: Executor = module.build_executor(
        settings, factory, registry=register_ai_playbooks(default_registry()), runners=ai_runners(), **extra
    )
    return executor


def build_queue(settings: Settings, engine: Engine) -> RunQueue:
    """The run queue on this engine with the settings' lease and attempts."""
    factory = make_sessionmaker(engine, info={"redactor": Redactor(named=settings.secret_values())})
    return RunQueue(
        factory, lease_seconds=settings.worker_lease_seconds, max_attempts=settings.worker_max_attempts
    )


def build_worker(
    settings: Settings,
    engine: Engine,
    *,
    executor: Executor | None = None,
    concurrency: int | None = None,
    worker_id: str | None = None,
) -> Worker:
    """A Worker with LISTEN/NOTIFY on PostgreSQL and polling on SQLite."""
    queue = build_queue(settings, engine)
    notifier: Notifier | None = PgNotifier.for_engine(engine) if queue.is_postgresql else None
    worker_id = worker_id or default_worker_id()
    # GitHub, when configured: hooks around runs (comments, PRs) and a pump for `/tower` commands.
    hooks, pump = github_side(settings, queue, worker_id)
    return Worker(
        queue,
        executor or load_executor(settings, queue.factory, github=hooks),
        worker_id=worker_id,
        concurrency=concurrency or settings.worker_concurrency,
        poll_interval=settings.worker_poll_interval,
        notifier=notifier,
        companions=[pump] if pump is not None else [],
    )


class WorkerService:
    """The in-process worker `serve` runs in a thread beside the API.

    The worker is built in its thread (the sandbox probe takes a moment), so the API starts at once.
    """

    def __init__(self, settings: Settings, engine: Engine, *, grace_seconds: float = 10.0) -> None:
        self.settings = settings
        self.engine = engine
        self.grace_seconds = grace_seconds
        self.worker: Worker | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Build and run the worker in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="worker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            worker = build_worker(self.settings, self.engine)
        except Exception:
            log.exception("worker.start_failed")
            return
        with self._lock:
            self.worker = worker
            if self._stopping:
                return
        worker.run()

    def stop(self) -> None:
        """Drain: running runs get the grace period, then go back to the queue."""
        with self._lock:
            self._stopping = True
            worker = self.worker
        if worker is not None:
            worker.stop(self.grace_seconds)
        if self._thread is not None:
            self._thread.join(timeout=self.grace_seconds + 15)


register_background("worker", WorkerService, is_worker=True)
