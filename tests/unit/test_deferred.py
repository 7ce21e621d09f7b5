"""Deferred step writes: taken back before they start, run when due, or run at once when waited for."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from worker.deferred import Deferrer
from worker.run_steps import StepStatus
from worker.step_rows import StepRows


def test_a_write_taken_back_before_it_is_due_never_runs() -> None:
    ran: list[str] = []
    with ThreadPoolExecutor(2) as pool:
        deferrer = Deferrer(pool)
        write = deferrer.submit(lambda: ran.append("early"), delay=0.1, payload="rows")
        assert write.cancel() and write.payload == "rows"
        assert not write.cancel()  # once
        time.sleep(0.2)
    assert ran == []


def test_a_due_write_runs_on_the_pool_and_can_no_longer_be_taken_back() -> None:
    ran: list[str] = []
    with ThreadPoolExecutor(2) as pool:
        deferrer = Deferrer(pool)
        late = deferrer.submit(lambda: ran.append(threading.current_thread().name), delay=0.05)
        soon = deferrer.submit(lambda: ran.append("soon"), delay=0.01)  # earlier than the timer waits for
        time.sleep(0.2)
        assert not late.cancel() and not soon.cancel()
        late.result()
        soon.result()
    assert ran[0] == "soon" and len(ran) == 2 and ran[1] != threading.current_thread().name


def test_waiting_for_a_write_not_yet_due_runs_it_now_in_the_caller_and_raises_its_error() -> None:
    ran: list[str] = []

    def fails() -> None:
        ran.append(threading.current_thread().name)
        raise ValueError("lost")

    with ThreadPoolExecutor(2) as pool:
        write = Deferrer(pool).submit(fails, delay=30)
        started = time.monotonic()
        with pytest.raises(ValueError, match="lost"):
            write.result()
        assert time.monotonic() - started < 1
        assert not write.cancel()
    assert ran == [threading.current_thread().name]


def test_rows_taken_back_merge_under_the_changes_made_since() -> None:
    rows = StepRows()
    rows.begin(1, "checkout", "checkout")
    rows.end(1, "checkout", "checkout", StepStatus.COMPLETED)
    rows.begin(2, "shell", "shell")
    taken = rows.take()
    rows.end(2, "shell", "shell", StepStatus.COMPLETED)
    rows.restore(*taken)
    merged, current = rows.take()
    assert [(r["n"], r["status"]) for r in merged] == [(1, "completed"), (2, "completed")]
    assert current == "shell"
    rows.begin(3, "collect", "collect")
    rows.restore(*taken)
    merged, current = rows.take()
    assert [r["n"] for r in merged] == [1, 2, 3] and current == "collect"
