"""`control-tower serve` as a process: a task survives a restart of the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import task_body
from tests.support.servers import free_port, wait_http


@contextmanager
def serve(db_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "JCT_ALLOWED_REPO_PREFIXES": "acme",
        "TRACE_ROOT": str(tmp_path / "traces"),
        "WORKSPACE_ROOT": str(tmp_path / "ws"),
    }
    args = [sys.executable, "-m", "worker.cli", "serve", "--port", str(port), "--no-worker", "--migrate"]
    proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_task_survives_a_server_restart(db_url: str, tmp_path: Path) -> None:
    with serve(db_url, tmp_path) as base:
        created = httpx.post(f"{base}/tasks/enqueue", json=task_body(idempotency_key="restart"), timeout=30)
        assert created.status_code == 201
    with serve(db_url, tmp_path) as base:
        got = httpx.get(f"{base}/tasks/{created.json()['task_id']}", timeout=30)
        assert got.status_code == 200
        assert got.json()["cwom"] == created.json()["cwom"]
        replay = httpx.post(f"{base}/tasks/enqueue", json=task_body(idempotency_key="restart"), timeout=30)
        assert replay.status_code == 200 and replay.json()["task_id"] == created.json()["task_id"]
