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

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
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


class AsyncGroupCommit(Generic[T, R]):
    """Group commit for coroutines on one event loop: `await write(items) -> results`.

    The same contract as `GroupCommit` (all-or-nothing per group; a failed group of several items is
    written again item by item), without threads: callers queue their item and await its future, and
    one drain task writes the oldest group (up to `batch_max`) whenever no write is under way, until
    the queue is empty. A caller that stops waiting (its request was cancelled) does not stop its
    item from being written, exactly as a thread that had handed its item over.
    """

    def __init__(
        self, write: Callable[[Sequence[T]], Awaitable[Sequence[R]]], *, batch_max: int = 64
    ) -> None:
        self._write = write
        self.batch_max = batch_max
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._drain_task: asyncio.Task[None] | None = None
        self.statements = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        """Write `item` (with whatever else is queued) and return its result, or raise its error."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._drain_task is None:
            self._drain_task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        group: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._queue:
                group, self._queue = self._queue[: self.batch_max], self._queue[self.batch_max :]
                await self._run(group)
        except BaseException as exc:  # cancelled (the loop is closing): nobody may wait forever
            for _, future in [*group, *self._queue]:
                _settle(future, error=exc)
            self._queue = []
            raise
        finally:
            self._drain_task = None

    async def _run(self, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._write([item for item, _ in group])
        except Exception as exc:
            if len(group) == 1:
                _settle(group[0][1], error=exc)
                return
            for one in group:  # pin the failure on the item that caused it
                await self._run([one])
            return
        self.statements += 1
        self.items += len(group)
        for (_, future), result in zip(group, results, strict=True):
            _settle(future, result=result)


def _settle(
    future: asyncio.Future[R], *, result: R | None = None, error: BaseException | None = None
) -> None:
    if future.done():  # its caller was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
