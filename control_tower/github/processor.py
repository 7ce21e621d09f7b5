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

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_tower.github.ingest import process_delivery
from control_tower.github.tables import DeliveryRow
from control_tower.github.triggers import Plan, plan_delivery
from control_tower.logs import get_logger
from control_tower.settings import Settings
from cwom.base import utcnow
from policy import PolicyConfig

log = get_logger(__name__)
_STOP = object()
_GATE_POLL_S = 0.01


@dataclass(frozen=True)
class ProcessorConfig:
    """What processing needs besides the database."""

    policy: PolicyConfig
    max_attempts: int
    label_prefix: str
    bot_login: str
    # Many threads, because deliveries processed at the same time share intake's statement and the
    # outcome's (group commit): at 8 a burst of 5,000 was worked off at ~190/s, at 32 at ~300/s, with
    # a third of the database's CPU per delivery. They spend their time waiting for those statements.
    threads: int = 32
    sweep_after_s: float = 60.0
    sweep_every_s: float = 15.0
    # While webhook requests are being answered, deliveries wait: answers come first (GitHub's 10 s
    # deadline), the backlog is worked off behind them. Every `max_hold_s` a batch of `busy_batch`
    # goes through anyway, so a process that is never quiet still works its backlog off. Processing
    # beside answering costs the answers more than its CPU (the GIL's convoy effect: the event loop
    # waits for a switch interval after each I/O): a batch every second cut a burst's acknowledgement
    # rate by ~25%, hence the longer hold.
    max_hold_s: float = 5.0
    busy_batch: int = 8

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
        self._gate = threading.Lock()
        self._passes = 0
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

    def submit(self, delivery_id: str, event: str, raw: bytes, plan: Plan) -> None:
        """Process a stored delivery (its event name, body and plan) soon, on this process's threads."""
        self.start()
        self._queue.put((delivery_id, event, raw, plan))

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
            self._hold()
            self._process(*item)

    def _hold(self) -> None:
        """Wait while the process is answering webhook requests, but let a batch through now and then.

        One thread waits at the gate at a time, polling every few milliseconds (the others, each with
        its delivery, queue behind it on the lock), so the gate costs the answering thread almost no
        GIL switches. While busy, the thread at the gate goes through after `max_hold_s` and takes
        passes for `busy_batch - 1` other threads with it: the backlog is never starved, and the
        deliveries let through together share intake's statements.
        """
        busy = self._busy
        if busy is None:
            return
        with self._gate:
            deadline = time.monotonic() + self._config.max_hold_s
            while busy():
                if self._passes > 0:
                    self._passes -= 1
                    return
                now = time.monotonic()
                if now >= deadline:
                    self._passes = self._config.busy_batch - 1
                    return
                time.sleep(min(_GATE_POLL_S, deadline - now))
            self._passes = 0

    def _process(self, delivery_id: str, event: str, raw: bytes, plan: Plan) -> None:
        cfg = self._config
        try:
            process_delivery(self._factory, delivery_id, event, raw, plan, cfg.policy, cfg.max_attempts)
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
            self._process(delivery_id, event, orjson.dumps(payload), plan)
            done.append(delivery_id)
        if done:
            log.info("github_deliveries_swept", count=len(done))
        return done
