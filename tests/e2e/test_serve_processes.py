"""`control-tower serve --workers N`: one listening socket per process on one port (SO_REUSEPORT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from tests.conftest import task_body
from tests.support.processes import wait_for
from tests.support.servers import free_port, wait_http

WORKERS = 2


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _server_children(pid: int, port: int) -> list[int]:
    """The supervisor's server processes (multiprocessing's resource tracker is a child too)."""
    return [c for c in _children(pid) if _listening_inodes(c, port)]


def _socket_inodes(pid: int) -> set[str]:
    """The socket inodes a process holds; none for one that is gone or a zombie (no fd table)."""
    inodes: set[str] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _tcp_rows(port: int) -> list[tuple[str, str]]:
    """(state, inode) of every IPv4 TCP socket whose local port is `port`."""
    rows = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            rows.append((fields[3], fields[9]))
    return rows


def _all_servers(pid: int, port: int) -> list[int]:
    """The server processes once all WORKERS of them listen (else an empty list, to poll on)."""
    found = _server_children(pid, port)
    return found if len(found) == WORKERS else []


def _listening_inodes(pid: int, port: int) -> set[str]:
    return {inode for state, inode in _tcp_rows(port) if state == "0A"} & _socket_inodes(pid)


@contextmanager
def serve_workers(db_url: str, tmp_path: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "JCT_ALLOWED_REPO_PREFIXES": "acme",
        "TRACE_ROOT": str(tmp_path / "traces"),
        "WORKSPACE_ROOT": str(tmp_path / "ws"),
    }
    args = [sys.executable, "-m", "worker.cli", "serve", "--port", str(port), "--workers", str(WORKERS)]
    log = (tmp_path / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen([*args, "--migrate"], env=env, cwd=tmp_path, stdout=log, stderr=log)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_each_process_listens_and_connections_spread(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    with serve_workers(db_url, tmp_path, port) as proc:
        servers = wait_for(lambda: _all_servers(proc.pid, port))
        listening = [_listening_inodes(c, port) for c in servers]
        # One socket per process, not one shared socket.
        assert all(len(s) == 1 for s in listening) and len(set.union(*listening)) == WORKERS
        assert not _listening_inodes(proc.pid, port), "the supervisor only holds the port, it never listens"

        with ExitStack() as stack:
            clients = [
                stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{port}")) for _ in range(32)
            ]
            for client in clients:
                assert client.get("/healthz").status_code == 200
            established = {inode for state, inode in _tcp_rows(port) if state == "01"}
            per_process = [len(_socket_inodes(c) & established) for c in servers]
            assert sum(per_process) == 32
            assert min(per_process) > 0, f"every process takes connections: {per_process}"
            created = clients[0].post("/tasks/enqueue", json=task_body(idempotency_key="multi"), timeout=30)
            replay = clients[1].post("/tasks/enqueue", json=task_body(idempotency_key="multi"), timeout=30)
            assert (created.status_code, replay.status_code) == (201, 200)
            assert replay.json()["task_id"] == created.json()["task_id"]


def test_a_dead_process_is_replaced_and_sigterm_stops_all(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    with serve_workers(db_url, tmp_path, port) as proc:
        servers = wait_for(lambda: _all_servers(proc.pid, port))
        os.kill(servers[0], signal.SIGKILL)

        def replacement_listens() -> list[int]:
            now = _all_servers(proc.pid, port)
            return now if servers[0] not in now else []

        replaced = wait_for(replacement_listens, timeout=60)
        assert servers[1] in replaced
        for _ in range(20):
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0
        # The children were the supervisor's; it joined them before exiting, so they are gone, not zombies.
        assert not any(Path(f"/proc/{c}").exists() for c in replaced)
        assert not _tcp_rows(port) or all(state != "0A" for state, _ in _tcp_rows(port))


def test_a_second_server_on_the_same_port_fails(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    with serve_workers(db_url, tmp_path, port):
        env = {**os.environ, "DATABASE_URL": db_url, "JCT_ALLOWED_REPO_PREFIXES": "acme"}
        second = subprocess.run(
            [sys.executable, "-m", "worker.cli", "serve", "--port", str(port), "--workers", "2"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert b"cannot bind" in second.stderr
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
