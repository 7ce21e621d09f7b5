"""Runs through HTTP with a worker beside the server: approval, rejection, cancel, trace listing and CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from control_tower.api.app import create_app
from control_tower.settings import Settings
from tests.conftest import make_settings, task_body
from tests.support.runs import make_queue, make_remote, ops, wait_for
from tests.support.servers import serve_in_thread
from worker.api import router
from worker.executor import build_executor
from worker.loop import Worker


@dataclass
class System:
    client: httpx.Client
    settings: Settings
    worker: Worker


@pytest.fixture
def system(db_url: str, tmp_path: Path, engine: Engine, factory: sessionmaker[Session]) -> Iterator[System]:
    settings = make_settings(
        db_url,
        tmp_path,
        git_base_url=make_remote(tmp_path / "remote"),
        policy_min_time_budget=1,
        worker_lease_seconds=5,
    )
    worker = Worker(
        make_queue(factory, settings),
        build_executor(settings, factory),
        worker_id="http-worker",
        concurrency=2,
        poll_interval=0.05,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    app = create_app(settings, engine=engine, extra_routers=[router])
    try:
        with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=30) as client:
            yield System(client, settings, worker)
    finally:
        worker.stop(5)
        thread.join(timeout=20)


def submit(client: httpx.Client, **body: Any) -> str:
    response = client.post("/tasks/enqueue", json=task_body(**body))
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def status_is(client: httpx.Client, run_id: str, *statuses: str) -> dict[str, Any] | None:
    body: dict[str, Any] = client.get(f"/runs/{run_id}").json()
    return body if body["status"] in statuses else None


def test_approval_flow_through_http(system: System) -> None:
    client = system.client
    run_id = submit(client, **ops("echo ok > approved.txt", approval=True))
    waiting = wait_for(lambda: status_is(client, run_id, "waiting"))
    assert waiting["current_step"] == "approval"
    assert [(s["step_id"], s["status"]) for s in waiting["steps"]] == [
        ("checkout", "completed"),
        ("approval", "waiting"),
    ]
    assert client.get(f"/tasks/{waiting['task_id']}").json()["status"] == "waiting"

    resumed = client.post(f"/runs/{run_id}/resume", json={"decision": "approve", "by": "bob", "note": "go"})
    assert resumed.status_code == 200, resumed.text
    done = wait_for(lambda: status_is(client, run_id, "done", "failed"))
    assert done["status"] == "done" and done["error"] is None and done["attempt"] == 2
    assert done["approvals"][0]["decision"] == "approve"
    attempt2 = [(s["step_id"], s["status"]) for s in done["steps"] if s["attempt"] == 2]
    assert attempt2 == [
        ("checkout", "completed"),
        ("approval", "completed"),
        ("shell", "completed"),
        ("collect", "completed"),
    ]
    assert {a["type"] for a in done["artifacts"]} == {"trace", "patch"}
    assert done["timings_ms"]["total"] > 0

    again = client.post(f"/runs/{run_id}/resume", json={"decision": "approve", "by": "bob"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "INVALID_TRANSITION"

    trace = client.get(f"/runs/{run_id}/trace").json()
    paths = {f["path"] for f in trace["files"]}
    assert trace["sealed"] and {"manifest.json", "diff.patch", "events.jsonl", "summary.md"} <= paths
    assert all(len(f["sha256"]) == 64 and f["size"] >= 0 for f in trace["files"])

    env = {
        **os.environ,
        "DATABASE_URL": system.settings.database_url,
        "TRACE_ROOT": str(system.settings.trace_root),
        "LOG_LEVEL": "WARNING",
    }
    shown = subprocess.run(
        [sys.executable, "-m", "worker.cli", "trace", run_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"Trace {run_id}" in shown.stdout and "manifest: ok" in shown.stdout
    assert "approval.decided" in shown.stdout


def test_rejection_fails_the_run(system: System) -> None:
    client = system.client
    run_id = submit(client, **ops("echo never > x.txt", approval=True))
    wait_for(lambda: status_is(client, run_id, "waiting"))
    rejected = client.post(f"/runs/{run_id}/resume", json={"decision": "reject", "by": "carol", "note": "no"})
    assert rejected.status_code == 200
    body = rejected.json()
    assert body["status"] == "failed" and body["error"]["code"] == "APPROVAL_REJECTED"
    assert not any(s["step_id"] == "shell" for s in body["steps"])


def test_cancel_a_running_run_kills_its_command(system: System) -> None:
    client = system.client
    marker = f"ct-cancel-{os.getpid()}-{time.monotonic_ns()}"
    run_id = submit(client, **ops(f"sleep 300; echo {marker}", budget=600))
    wait_for(lambda: (body := status_is(client, run_id, "running")) and body["current_step"] == "shell")
    started = time.monotonic()
    cancelled = client.post(f"/runs/{run_id}/cancel", json={"by": "dave", "note": "stop"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    wait_for(lambda: not system.worker.active_runs(), timeout=20)
    assert time.monotonic() - started < 20
    # The sandbox's process tree is gone: no `sleep 300` of this run is left on the host.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert marker not in ps
    manifest = wait_for(lambda: client.get(f"/runs/{run_id}/trace").json()["sealed"], timeout=10)
    assert manifest
    assert client.get(f"/runs/{run_id}").json()["status"] == "cancelled"
    again = client.post(f"/runs/{run_id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "INVALID_TRANSITION"


def test_cancel_a_queued_run_and_unknown_runs(db_url: str, tmp_path: Path, engine: Engine) -> None:
    settings = make_settings(db_url, tmp_path)
    app = create_app(settings, engine=engine, extra_routers=[router])
    with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        run_id = submit(client, **ops("true"))
        body = client.post(f"/runs/{run_id}/cancel").json()
        assert body["status"] == "cancelled" and body["steps"] == []
        missing = client.get("/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "RUN_NOT_FOUND"
        bad = client.post(f"/runs/{run_id}/resume", json={"decision": "maybe", "by": "x"})
        assert bad.status_code == 422
        no_trace = client.get(f"/runs/{run_id}/trace")
        assert no_trace.status_code == 404 and no_trace.json()["error"]["code"] == "TRACE_NOT_FOUND"
