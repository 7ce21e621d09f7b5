"""`serve --workers N`: N server processes, each with its own listening socket on one port (SO_REUSEPORT).

uvicorn's own supervisor binds one socket and shares it: every process waits on the same accept
queue, and the kernel wakes whichever waited last, so under a burst one process can take most of the
connections while the other idles (measured: all 32 of a benchmark's connections on one process in
some runs). With a socket per process in one SO_REUSEPORT group, the kernel hashes each new
connection to one of the listening sockets, so connections spread evenly across the processes.

The parent binds the port first without listening (a socket that only holds the port, never handed a
connection): a port held by anything else fails here with a clear error, before a child starts. The
parent then supervises: SIGTERM/SIGINT are passed on to every child (uvicorn drains each one), a child
that dies is replaced, and children that keep dying at start end the whole server.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType

APP_FACTORY = "control_tower.api.app:create_app_from_env"
BACKLOG = 2048
# A child that exits within this many seconds of its start failed to start.
STARTUP_GRACE_SECONDS = 10.0
MAX_START_FAILURES = 3
SHUTDOWN_SECONDS = 30.0


def reuseport_socket(host: str, port: int, *, exclusive_check: bool = False) -> socket.socket:
    """A TCP socket bound to (host, port) in the SO_REUSEPORT group of this user's sockets on it.

    With `exclusive_check`, the port is first bound without SO_REUSEPORT, which fails while any socket
    holds it: a second `serve` on the same port must fail, not silently share the first one's traffic.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if exclusive_check:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _child(host: str, port: int) -> None:
    """One server process: its own listening socket, the app built from the environment."""
    import uvicorn

    sock = reuseport_socket(host, port)
    sock.listen(BACKLOG)
    config = uvicorn.Config(APP_FACTORY, factory=True, access_log=False, log_config=None, backlog=BACKLOG)
    uvicorn.Server(config).run(sockets=[sock])


class Supervisor:
    """Runs `count` server processes on one port until SIGTERM/SIGINT; restarts one that dies."""

    def __init__(self, host: str, port: int, count: int) -> None:
        self.host, self.port, self.count = host, port, count
        self._ctx = multiprocessing.get_context("spawn")
        self._stop = threading.Event()
        self._children: list[tuple[BaseProcess, float]] = []
        self._start_failures = 0

    def run(self) -> int:
        """Serve until told to stop; the exit status (1 when the children could not start)."""
        try:
            holder = reuseport_socket(self.host, self.port, exclusive_check=True)
        except OSError as exc:
            sys.stderr.write(f"control-tower serve: cannot bind {self.host}:{self.port}: {exc}\n")
            return 1
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._children = [self._spawn() for _ in range(self.count)]
            while not self._stop.wait(0.2):
                if not self._replace_dead():
                    self._stop.set()
                    self._shutdown()
                    return 1
            self._shutdown()
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            holder.close()

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self._stop.set()

    def _spawn(self) -> tuple[BaseProcess, float]:
        proc = self._ctx.Process(target=_child, args=(self.host, self.port), name="control-tower-http")
        proc.start()
        return proc, time.monotonic()

    def _replace_dead(self) -> bool:
        """Start a new process for each dead one; False once children keep failing at start."""
        for i, (proc, started) in enumerate(self._children):
            if proc.is_alive() or self._stop.is_set():
                continue
            proc.join()
            if time.monotonic() - started < STARTUP_GRACE_SECONDS:
                self._start_failures += 1
                if self._start_failures >= MAX_START_FAILURES:
                    sys.stderr.write(
                        f"control-tower serve: server processes keep exiting at start "
                        f"(last exit code {proc.exitcode}); stopping\n"
                    )
                    return False
            self._children[i] = self._spawn()
        return True

    def _shutdown(self) -> None:
        """SIGTERM every child (uvicorn finishes the requests in flight), SIGKILL what outlives the grace."""
        for proc, _ in self._children:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        for proc, _ in self._children:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
