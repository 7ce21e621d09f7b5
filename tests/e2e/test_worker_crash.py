"""Worker processes on SQLite and PostgreSQL: kill -9, SIGSTOP past the lease, SIGTERM drain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_tower import intake
from control_tower.settings import Settings
from cwom.audit import AuditRow
from cwom.tables import RunRow
from policy import TaskCreateV1
from tests.conftest import task_body

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def worker_process(
    db_url: str, worker_id: str, markers: Path, *, lease: float, sleep: float, grace: float = 30.0
) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker process (tests/e2e/worker_proc.py); killed at the end if still alive."""
    args = [
        sys.executable,
        "-m",
        "tests.e2e.worker_proc",
        db_url,
        worker_id,
        str(lease),
        str(sleep),
        str(markers),
        str(grace),
    ]
    log = (markers / f"{worker_id}.log").open("wb")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_marker(markers, f"ready.{worker_id}")
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait(timeout=10)
        log.close()


def wait_marker(markers: Path, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not (markers / name).exists():
        if time.monotonic() > deadline:
            logs = {p.name: p.read_text()[-2000:] for p in markers.glob("*.log")}
            raise AssertionError(f"marker {name} never appeared; logs: {logs}")
        time.sleep(0.02)


def enqueue(factory: sessionmaker[Session], settings: Settings) -> str:
    accepted = intake.submit(
        factory, task=TaskCreateV1.model_validate(task_body()), config=settings.policy_config()
    )
    assert accepted.task.run_id is not None
    return accepted.task.run_id


def run_state(factory: sessionmaker[Session], run_id: str) -> tuple[RunRow, list[dict[str, Any]]]:
    with factory() as session:
        row = session.get_one(RunRow, run_id)
        changes = session.scalars(
            select(AuditRow.after).where(
                AuditRow.entity_kind == "run",
                AuditRow.entity_id == run_id,
                AuditRow.action == "status_changed",
            )
        ).all()
        return row, [c for c in changes if c is not None]


def completions(changes: list[dict[str, Any]]) -> int:
    return sum(1 for c in changes if c["status"] == "done")


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


def test_kill_9_mid_run_another_worker_finishes_once(
    db_url: str, factory: sessionmaker[Session], settings: Settings, markers: Path
) -> None:
    run_id = enqueue(factory, settings)
    with worker_process(db_url, "A", markers, lease=1.5, sleep=60) as a:
        wait_marker(markers, f"{run_id}.1.A.start")
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=10)
    row, _ = run_state(factory, run_id)
    assert (row.status, row.locked_by) == ("running", "A")  # the dead worker still "holds" it
    with worker_process(db_url, "B", markers, lease=1.5, sleep=0.2):
        wait_marker(markers, f"{run_id}.2.B.done")
    row, changes = run_state(factory, run_id)
    assert (row.status, row.attempt, row.current_step) == ("done", 2, "B#2")
    assert row.outputs == [{"worker": "B", "attempt": 2}]
    assert completions(changes) == 1
    assert [c["status"] for c in changes if c["status"] == "running"] == ["running", "running"]


def test_a_paused_worker_cannot_overwrite_the_newer_attempt(
    db_url: str, factory: sessionmaker[Session], settings: Settings, markers: Path
) -> None:
    run_id = enqueue(factory, settings)
    with worker_process(db_url, "A", markers, lease=1.0, sleep=1.5) as a:
        wait_marker(markers, f"{run_id}.1.A.start")
        a.send_signal(signal.SIGSTOP)
        with worker_process(db_url, "B", markers, lease=1.0, sleep=3.0):
            wait_marker(markers, f"{run_id}.2.B.start")
            a.send_signal(signal.SIGCONT)
            # A wakes up mid-way through B's attempt and tries to write its results.
            wait_marker(markers, f"{run_id}.1.A.lost_lease")
            wait_marker(markers, f"{run_id}.1.A.refused")
            assert run_state(factory, run_id)[0].status == "running"
            wait_marker(markers, f"{run_id}.2.B.done")
    row, changes = run_state(factory, run_id)
    assert (row.status, row.attempt, row.current_step) == ("done", 2, "B#2")
    assert row.outputs == [{"worker": "B", "attempt": 2}]
    assert completions(changes) == 1
    assert not (markers / f"{run_id}.1.A.done").exists()


def test_sigterm_drains_finishing_or_releasing(
    db_url: str, factory: sessionmaker[Session], settings: Settings, markers: Path
) -> None:
    # A run that ends inside the grace period completes.
    quick = enqueue(factory, settings)
    with worker_process(db_url, "A", markers, lease=2.0, sleep=1.0, grace=20) as a:
        wait_marker(markers, f"{quick}.1.A.start")
        a.send_signal(signal.SIGTERM)
        assert a.wait(timeout=15) == 0
    assert run_state(factory, quick)[0].status == "done"

    # A run that outlives it goes back to the queue, without spending an attempt, and runs again.
    slow = enqueue(factory, settings)
    with worker_process(db_url, "B", markers, lease=2.0, sleep=60, grace=0.5) as b:
        wait_marker(markers, f"{slow}.1.B.start")
        begun = time.monotonic()
        b.send_signal(signal.SIGTERM)
        assert b.wait(timeout=15) == 0
        assert time.monotonic() - begun < 10
    row, _ = run_state(factory, slow)
    assert (row.status, row.locked_by, row.attempt, row.max_attempts) == ("queued", None, 1, 4)
    assert (markers / f"{slow}.1.B.refused").exists()
    with worker_process(db_url, "C", markers, lease=2.0, sleep=0.1):
        wait_marker(markers, f"{slow}.2.C.done")
    row, changes = run_state(factory, slow)
    assert (row.status, row.attempt) == ("done", 2) and completions(changes) == 1
