"""Wake-ups for idle workers: PostgreSQL LISTEN/NOTIFY, or an in-process poke; polling stays the fallback."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

import psycopg
from sqlalchemy import Engine

from control_tower.logs import get_logger
from worker.queue import CANCEL_PREFIX, NOTIFY_CHANNEL

log = get_logger(__name__)

OnRun = Callable[[str], None]
OnCancel = Callable[[str], None]


class Notifier(Protocol):
    """Calls `on_run(run_id)` when a run may be claimable and `on_cancel(run_id)` when one was cancelled."""

    def start(self, on_run: OnRun, on_cancel: OnCancel) -> None: ...

    def close(self) -> None: ...


class LocalNotifier:
    """In-process pokes (SQLite, tests): whoever enqueues calls `poke(run_id)`."""

    def __init__(self) -> None:
        self._on_run: OnRun | None = None
        self._on_cancel: OnCancel | None = None

    def start(self, on_run: OnRun, on_cancel: OnCancel) -> None:
        """Remember the callbacks."""
        self._on_run, self._on_cancel = on_run, on_cancel

    def poke(self, payload: str = "") -> None:
        """Deliver one notification, in the same form PostgreSQL would."""
        if payload.startswith(CANCEL_PREFIX):
            if self._on_cancel is not None:
                self._on_cancel(payload.removeprefix(CANCEL_PREFIX))
        elif self._on_run is not None:
            self._on_run(payload)

    def close(self) -> None:
        """Forget the callbacks."""
        self._on_run = self._on_cancel = None


class PgNotifier:
    """A dedicated autocommit psycopg connection doing `LISTEN control_tower_runs`, reconnecting forever."""

    # How long one wait for notifications lasts: `close()` returns within it. A notification ends the
    # wait at once, so this costs no latency (a worker used to take half a second to stop).
    WAIT_SECONDS = 0.05

    def __init__(self, conninfo: str, *, reconnect_max: float = 5.0) -> None:
        self.conninfo = conninfo
        self.reconnect_max = reconnect_max
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self.listening = threading.Event()

    @classmethod
    def for_engine(cls, engine: Engine) -> PgNotifier:
        """A notifier on the same database as a SQLAlchemy engine."""
        url = engine.url.set(drivername="postgresql")
        return cls(url.render_as_string(hide_password=False))

    def start(self, on_run: OnRun, on_cancel: OnCancel) -> None:
        """Listen in a daemon thread."""
        self._thread = threading.Thread(
            target=self._listen, args=(on_run, on_cancel), name="pg-notify", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop listening and close the connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _listen(self, on_run: OnRun, on_cancel: OnCancel) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.listening.set()
                    delay = 0.1
                    # Anything sent while we were not listening was missed: look once.
                    on_run("")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=self.WAIT_SECONDS):
                            if note.payload.startswith(CANCEL_PREFIX):
                                on_cancel(note.payload.removeprefix(CANCEL_PREFIX))
                            else:
                                on_run(note.payload)
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("notify.disconnected", error=str(exc).strip()[:300], retry_in=delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.reconnect_max)
        self.listening.clear()
