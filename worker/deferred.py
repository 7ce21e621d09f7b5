"""Writes that wait a moment before they start, so that a step which ends sooner takes its write along.

The executor writes a step's row as the step starts, so that `GET /runs/{id}` shows it running and a
lost lease stops it. Most steps of a quick run end within milliseconds, and their write cost a
statement, a thread hop and a round trip of their own just before the run's last write, which
carries the same rows anyway. A `DeferredWrite` starts only after `delay`: the caller either takes it
back before then (`cancel`, and writes its rows with its next write) or, when the step runs longer,
it starts on the pool as the write behind did. `result` waits for it, running it at once in the
caller's thread if it has not started yet.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class DeferredWrite:
    """One write due at a time; `cancel` before it starts, or `result` to wait for (or run) it."""

    def __init__(self, fn: Callable[[], None], due: float, payload: Any) -> None:
        self.fn = fn
        self.due = due
        self.payload = payload  # what the caller takes back when it cancels
        self._lock = threading.Lock()
        self._state = "pending"  # pending | started | cancelled
        self._future: Future[None] = Future()

    def cancel(self) -> bool:
        """Take the write back if it has not started (True); False when it has, or was run."""
        with self._lock:
            if self._state != "pending":
                return False
            self._state = "cancelled"
            return True

    def result(self) -> None:
        """Wait for the write (running it now, in this thread, if it has not started); raise its error."""
        if self._claim():
            self._run()
        self._future.result()

    def _claim(self) -> bool:
        with self._lock:
            if self._state != "pending":
                return False
            self._state = "started"
            return True

    def _run(self) -> None:
        try:
            self.fn()
        except BaseException as exc:
            self._future.set_exception(exc)
        else:
            self._future.set_result(None)


class Deferrer:
    """Starts each DeferredWrite on `pool` when it is due (one timer thread for all of them)."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._pool = pool
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, DeferredWrite]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[[], None], *, delay: float, payload: Any = None) -> DeferredWrite:
        write = DeferredWrite(fn, time.monotonic() + delay, payload)
        with self._cond:
            heapq.heappush(self._due, (write.due, next(self._seq), write))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="ct-step-writes-due", daemon=True)
                self._thread.start()
            elif self._due[0][2] is write:
                self._cond.notify()  # earlier than whatever the timer waits for
        return write

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._cond.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, write = heapq.heappop(self._due)
            if write._claim():
                self._pool.submit(write._run)
