"""Group commit (threads and coroutines): concurrent callers share writes, each gets its own result,
one bad item fails alone."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from control_tower.group_commit import AsyncGroupCommit, GroupCommit


class Recorder:
    """A write function that holds its first call until `waiting` callers have queued behind it."""

    def __init__(self, waiting: int) -> None:
        self.calls: list[list[int]] = []
        self.waiting = waiting
        self.group: GroupCommit[int, int] | None = None
        self.lock = threading.Lock()

    def __call__(self, items: Sequence[int]) -> list[int]:
        with self.lock:
            first = not self.calls
            self.calls.append(list(items))
        if first and self.group is not None:
            deadline = time.monotonic() + 10
            while len(self.group._queue) < self.waiting and time.monotonic() < deadline:
                time.sleep(0.001)
        if 13 in items:
            raise ValueError("13 is refused")
        return [i * 10 for i in items]


def test_callers_queued_behind_a_write_share_the_next_one() -> None:
    rec = Recorder(waiting=20)
    group = GroupCommit(rec, batch_max=8)
    rec.group = group
    with ThreadPoolExecutor(max_workers=21) as pool:
        first = pool.submit(group.submit, 0)
        while not rec.calls:
            time.sleep(0.001)
        rest = [pool.submit(group.submit, i) for i in range(21, 41)]
        assert first.result(timeout=10) == 0
        assert [f.result(timeout=10) for f in rest] == [i * 10 for i in range(21, 41)]
    # The first write held the lead while 20 callers queued: they went in groups of at most 8.
    assert rec.calls[0] == [0]
    assert sorted(i for call in rec.calls[1:] for i in call) == list(range(21, 41))
    assert all(len(call) <= 8 for call in rec.calls) and len(rec.calls) == 1 + 3
    assert group.statements == 4 and group.items == 21


def test_a_failing_item_fails_only_its_own_caller() -> None:
    rec = Recorder(waiting=5)
    group = GroupCommit(rec, batch_max=16)
    rec.group = group
    with ThreadPoolExecutor(max_workers=6) as pool:
        first = pool.submit(group.submit, 1)
        while not rec.calls:
            time.sleep(0.001)
        rest = {i: pool.submit(group.submit, i) for i in (11, 12, 13, 14, 15)}
        assert first.result(timeout=10) == 10
        with pytest.raises(ValueError, match="13 is refused"):
            rest[13].result(timeout=10)
        assert [rest[i].result(timeout=10) for i in (11, 12, 14, 15)] == [110, 120, 140, 150]
    # The group with 13 failed whole, then each item was written on its own.
    assert sorted(rec.calls[1]) == [11, 12, 13, 14, 15]
    assert sorted(c[0] for c in rec.calls[2:]) == [11, 12, 13, 14, 15]


def test_one_caller_at_a_time_writes_alone() -> None:
    rec = Recorder(waiting=0)
    group = GroupCommit(rec)
    assert [group.submit(i) for i in range(5)] == [0, 10, 20, 30, 40]
    assert rec.calls == [[0], [1], [2], [3], [4]]


class AsyncRecorder:
    """An async write function whose first call waits until `waiting` callers have queued behind it."""

    def __init__(self, waiting: int) -> None:
        self.calls: list[list[int]] = []
        self.waiting = waiting
        self.group: AsyncGroupCommit[int, int] | None = None

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.calls.append(list(items))
        if len(self.calls) == 1 and self.group is not None:
            for _ in range(10_000):
                if len(self.group._queue) >= self.waiting:
                    break
                await asyncio.sleep(0.001)
        if 13 in items:
            raise ValueError("13 is refused")
        return [i * 10 for i in items]


def test_async_callers_queued_behind_a_write_share_the_next_one() -> None:
    async def scenario() -> None:
        rec = AsyncRecorder(waiting=20)
        group = AsyncGroupCommit(rec, batch_max=8)
        rec.group = group
        first = asyncio.create_task(group.submit(0))
        await asyncio.sleep(0)
        rest = [asyncio.create_task(group.submit(i)) for i in range(21, 41)]
        assert await first == 0
        assert await asyncio.gather(*rest) == [i * 10 for i in range(21, 41)]
        assert rec.calls[0] == [0]
        assert rec.calls[1:] == [list(range(21, 29)), list(range(29, 37)), list(range(37, 41))]
        assert group.statements == 4 and group.items == 21

    asyncio.run(scenario())


def test_async_failing_item_fails_only_its_own_caller() -> None:
    async def scenario() -> None:
        rec = AsyncRecorder(waiting=5)
        group = AsyncGroupCommit(rec, batch_max=16)
        rec.group = group
        first = asyncio.create_task(group.submit(1))
        await asyncio.sleep(0)
        rest = {i: asyncio.create_task(group.submit(i)) for i in (11, 12, 13, 14, 15)}
        assert await first == 10
        with pytest.raises(ValueError, match="13 is refused"):
            await rest[13]
        assert [await rest[i] for i in (11, 12, 14, 15)] == [110, 120, 140, 150]
        assert rec.calls[1] == [11, 12, 13, 14, 15]
        assert [c[0] for c in rec.calls[2:]] == [11, 12, 13, 14, 15]

    asyncio.run(scenario())


def test_async_cancelled_caller_does_not_stop_the_others() -> None:
    """A caller that stops waiting leaves its item written and every other caller answered."""

    async def scenario() -> None:
        rec = AsyncRecorder(waiting=3)
        group = AsyncGroupCommit(rec)
        rec.group = group
        first = asyncio.create_task(group.submit(1))
        await asyncio.sleep(0)
        gone = asyncio.create_task(group.submit(2))
        rest = [asyncio.create_task(group.submit(i)) for i in (3, 4)]
        await asyncio.sleep(0)
        gone.cancel()
        assert await first == 10
        assert await asyncio.gather(*rest) == [30, 40]
        assert gone.cancelled()
        assert rec.calls == [[1], [2, 3, 4]]
        assert [await group.submit(5)] == [50]

    asyncio.run(scenario())
