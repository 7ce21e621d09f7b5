"""Deliveries are processed after the webhook has answered: intake, commands, the stored outcome.

The webhook stores a delivery (`received`) and answers; what the delivery asks for goes through intake
here, on a few threads of the same process. GitHub waits 10 s for an answer and redelivers or gives
up after that, so the answer must not wait for intake: a burst of triggering deliveries is acknowledged
at the rate the database stores bodies, and worked off behind it.

Nothing is lost when the process dies between the two: a delivery still `received` after
`sweep_after` seconds is processed again by any server process's sweep (on start, then periodically).
Processing twice is harmless: the semantic keys of tasks and commands make the second pass a no-op
that records its duplicates.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_tower.github.ingest import process_plan
from control_tower.github.tables import DeliveryRow
from control_tower.github.triggers import Plan, plan_delivery
from control_tower.logs import get_logger
from control_tower.settings import Settings
from cwom.base import utcnow
from policy import PolicyConfig

log = get_logger(__name__)
_STOP = object()


@dataclass(frozen=True)
class ProcessorConfig:
    """What processing needs besides the database."""

    policy: PolicyConfig
    max_attempts: int
    label_prefix: str
    bot_login: str
    threads: int = 8
    sweep_after_s: float = 60.0
    sweep_every_s: float = 15.0
    # While webhook requests are being answered, a delivery waits up to this long before it is
    # processed: answers come first (GitHub's 10 s deadline), the backlog is worked off behind them.
    max_hold_s: float = 0.5

    @classmethod
    def from_settings(cls, settings: Settings) -> ProcessorConfig:
        return cls(
            policy=settings.policy_config(),
            max_attempts=settings.worker_max_attempts,
            label_prefix=settings.github_label_prefix,
            bot_login=settings.github_bot_login,
            threads=settings.github_delivery_threads,
            sweep_after_s=settings.github_sweep_after_seconds,
        )


class DeliveryProcessor:
    """A small pool of threads working off stored deliveries, plus the sweep for orphaned ones."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        config: ProcessorConfig,
        *,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        self._factory = factory
        self._config = config
        self._busy = busy
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.processed = 0
        self.failed = 0

    def start(self) -> None:
        """Start the threads (idempotent); the first sweep runs right away."""
        with self._lock:
            if self._threads or self._closed.is_set():
                return
            for n in range(self._config.threads):
                thread = threading.Thread(
                    target=self._loop, args=(n == 0,), name=f"github-deliveries-{n}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def submit(self, delivery_id: str, plan: Plan) -> None:
        """Process a stored delivery soon, on this process's threads."""
        self.start()
        self._queue.put((delivery_id, plan))

    def close(self, timeout: float = 10.0) -> None:
        """Work off what is queued (up to `timeout`), then stop; anything left is swept later."""
        with self._lock:
            self._closed.set()
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(_STOP)
        for thread in threads:
            thread.join(timeout / max(1, len(threads)))

    def _loop(self, sweeper: bool) -> None:
        if sweeper:
            self._sweep_quietly()
        while True:
            try:
                item = self._queue.get(timeout=self._config.sweep_every_s)
            except queue.Empty:
                if sweeper and not self._closed.is_set():
                    self._sweep_quietly()
                continue
            if item is _STOP:
                return
            delivery_id, plan = item
            self._hold()
            self._process(delivery_id, plan)

    def _hold(self) -> None:
        busy = self._busy
        if busy is None:
            return
        deadline = time.monotonic() + self._config.max_hold_s
        while busy() and time.monotonic() < deadline:
            time.sleep(0.002)

    def _process(self, delivery_id: str, plan: Plan) -> None:
        cfg = self._config
        try:
            process_plan(self._factory, plan, delivery_id, cfg.policy, cfg.max_attempts)
        except Exception:  # the row stays `received`: the sweep tries again later
            self.failed += 1
            log.exception("github_delivery_failed", delivery_id=delivery_id)
        else:
            self.processed += 1

    def _sweep_quietly(self) -> None:
        try:
            self.sweep()
        except Exception:  # the database may be down; the next sweep tries again
            log.exception("github_delivery_sweep_failed")

    def sweep(self, *, older_than_s: float | None = None, limit: int = 500) -> list[str]:
        """Process deliveries left `received` for longer than `sweep_after` (their process died)."""
        cfg = self._config
        age = cfg.sweep_after_s if older_than_s is None else older_than_s
        cutoff = utcnow() - timedelta(seconds=age)
        with self._factory() as session:
            rows = session.execute(
                select(DeliveryRow.delivery_id, DeliveryRow.event, DeliveryRow.payload)
                .where(DeliveryRow.status == "received", DeliveryRow.received_at <= cutoff)
                .order_by(DeliveryRow.received_at)
                .limit(limit)
            ).all()
        done = []
        for delivery_id, event, payload in rows:
            plan = plan_delivery(event, payload, label_prefix=cfg.label_prefix, bot_login=cfg.bot_login)
            self._process(delivery_id, plan)
            done.append(delivery_id)
        if done:
            log.info("github_deliveries_swept", count=len(done))
        return done
