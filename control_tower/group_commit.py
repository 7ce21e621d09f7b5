"""Group commit: concurrent callers share one database statement.

The caller that finds no write under way becomes the leader: it writes everything queued meanwhile
(up to `batch_max` items, its own first) in one statement, then hands the lead to the oldest caller
still waiting, if any, and returns; the others wait for their result or for the lead. (A leader that
wrote until the queue ran dry would keep its own caller waiting for as long as the load lasted.)
One statement per group means one round trip, one commit (one WAL flush) and, for audited writes, one
acquisition of the audit chain's head lock, however many callers arrive at once. With one caller at a
time it degenerates to one statement per call, with no added wait.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Slot(Generic[T, R]):
    item: T
    result: R | None = None
    error: BaseException | None = None
    finished: bool = False
    # Set when the slot is finished, or when its caller is handed the lead.
    wake: threading.Event = field(default_factory=threading.Event)


class GroupCommit(Generic[T, R]):
    """Calls `write(items) -> results` (one result per item, in order) for groups of concurrent calls.

    `write` must be all-or-nothing for its group. When it raises for a group of several items, each
    item is written again on its own, so one bad item fails only its own caller.
    """

    def __init__(self, write: Callable[[Sequence[T]], Sequence[R]], *, batch_max: int = 64) -> None:
        self._write = write
        self.batch_max = batch_max
        self._lock = threading.Lock()
        self._queue: list[_Slot[T, R]] = []
        self._busy = False
        self.statements = 0
        self.items = 0

    def submit(self, item: T) -> R:
        """Write `item` (with whatever else is queued) and return its result, or raise its error."""
        slot: _Slot[T, R] = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            leader = not self._busy
            self._busy = True
        if not leader:
            slot.wake.wait()
            leader = not slot.finished
        if leader:
            self._lead()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _lead(self) -> None:
        """Write the oldest group (the leader's own slot is its first), then pass the lead on."""
        with self._lock:
            group, self._queue = self._queue[: self.batch_max], self._queue[self.batch_max :]
        self._run(group)
        with self._lock:
            if self._queue:
                self._queue[0].wake.set()
            else:
                self._busy = False

    def _run(self, group: list[_Slot[T, R]]) -> None:
        try:
            results = self._write([slot.item for slot in group])
        except BaseException as exc:
            if len(group) == 1:
                group[0].error = exc
                group[0].finished = True
                group[0].wake.set()
                return
            for slot in group:  # pin the failure on the item that caused it
                self._run([slot])
            return
        self.statements += 1
        self.items += len(group)
        for slot, result in zip(group, results, strict=True):
            slot.result = result
            slot.finished = True
            slot.wake.set()
