"""Helpers for executor tests: bare remotes, enqueueing ops tasks, draining the queue with a real Worker."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_tower import intake
from control_tower.settings import Settings
from control_tower.tables import TaskRow
from cwom.tables import ArtifactRow, RunRow
from policy import TaskCreateV1
from tests.conftest import task_body
from tests.fakes.git_remote import make_bare_repo
from worker.loop import Worker
from worker.queue import Executor, RunQueue
from worker.run_steps import list_steps

REPO_FILES: dict[str, bytes | str] = {"README.md": "# app\n", "src/app.py": "print('hello')\n"}


def make_remote(root: Path, full_name: str = "acme/app") -> str:
    """A bare repository `full_name` under `root`; returns the GIT_BASE_URL that reaches it."""
    make_bare_repo(root, full_name, REPO_FILES)
    return f"file://{root}"


def enqueue(factory: sessionmaker[Session], settings: Settings, **body: Any) -> str:
    """Submit a task through intake; returns its run id."""
    accepted = intake.submit(
        factory,
        task=TaskCreateV1.model_validate(task_body(**body)),
        config=settings.policy_config(),
        max_attempts=settings.worker_max_attempts,
    )
    assert accepted.task.run_id is not None
    return accepted.task.run_id


def ops(command: str, *, budget: int = 60, **inputs: Any) -> dict[str, Any]:
    """Task body overrides for an ops run of `command`."""
    return {"inputs": {"command": command, **inputs}, "constraints": {"time_budget_seconds": budget}}


def make_queue(factory: sessionmaker[Session], settings: Settings) -> RunQueue:
    return RunQueue(
        factory, lease_seconds=settings.worker_lease_seconds, max_attempts=settings.worker_max_attempts
    )


def drain(
    factory: sessionmaker[Session], settings: Settings, executor: Executor, *, concurrency: int = 1
) -> int:
    """Run a Worker until nothing is claimable; returns how many runs it executed."""
    worker = Worker(
        make_queue(factory, settings),
        executor,
        worker_id="test-worker",
        concurrency=concurrency,
        poll_interval=0.05,
    )
    worker.run(until_idle=True)
    return worker.completed


def run_row(factory: sessionmaker[Session], run_id: str) -> RunRow:
    with factory() as session:
        return session.get_one(RunRow, run_id)


def task_row(factory: sessionmaker[Session], run_id: str) -> TaskRow:
    with factory() as session:
        return session.scalars(select(TaskRow).where(TaskRow.run_id == run_id)).one()


def steps(factory: sessionmaker[Session], run_id: str) -> list[dict[str, Any]]:
    with factory() as session:
        return list_steps(session, run_id)


def artifacts(factory: sessionmaker[Session], run_id: str) -> dict[str, ArtifactRow]:
    with factory() as session:
        rows = session.scalars(select(ArtifactRow).where(ArtifactRow.run_id == run_id)).all()
        return {row.type: row for row in rows}


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met in time")
