"""Helpers shared by the benchmarks: scratch PostgreSQL databases, percentiles, servers as processes."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg

PG_ADMIN = os.environ.get("CT_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_BASE = PG_ADMIN.rsplit("/", 1)[0]


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of values, nearest-rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary_ms(samples_s: Sequence[float]) -> str:
    """p50/p95/p99 in milliseconds."""
    ms = [s * 1000 for s in samples_s]
    return (
        f"p50 {pct(ms, 50):.2f} ms  p95 {pct(ms, 95):.2f} ms  p99 {pct(ms, 99):.2f} ms  "
        f"mean {statistics.fmean(ms):.2f} ms"
    )


@contextmanager
def scratch_pg(prefix: str = "ct_bench") -> Iterator[tuple[str, str]]:
    """A fresh database on the local server; yields (name, SQLAlchemy URL) and drops it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name, f"{PG_BASE.replace('postgresql', 'postgresql+psycopg', 1)}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_process(env: dict[str, str], args: Sequence[str], cwd: Path) -> Iterator[str]:
    """Run `control-tower serve` as a process on a free loopback port until the block ends."""
    port = free_port()
    cmd = [sys.executable, "-m", "worker.cli", "serve", "--port", str(port), *args]
    proc = subprocess.Popen(
        cmd, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("server did not start")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
