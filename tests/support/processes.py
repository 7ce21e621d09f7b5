"""`control-tower serve` as a child process for end-to-end tests, and polling helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.servers import free_port, wait_http


@contextmanager
def serve_process(tmp_path: Path, env: dict[str, str]) -> Iterator[str]:
    """Run `control-tower serve --migrate` (API + in-process worker) on a free port; yields its URL.

    Its output goes to `serve-<port>.log` in tmp_path; SIGTERM on exit, then a kill after 30 s.
    """
    port = free_port()
    args = [sys.executable, "-m", "worker.cli", "serve", "--port", str(port), "--migrate"]
    log = (tmp_path / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen(args, env={**os.environ, **env}, cwd=tmp_path, stdout=log, stderr=log)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 90.0) -> Any:
    """Poll until predicate() is truthy; its value, or AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")
