"""Intake throughput and latency against a running server on PostgreSQL, beside raw single-row inserts.

Run: .venv/bin/python -m bench.intake [--requests N] [--http-workers 2] [--no-cwom]
Uses wrk (Debian package `wrk`) as the load generator when present (it costs far less CPU than a Python
client on the same two cores); falls back to an asyncio httpx client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from bench.common import PG_BASE, pct, scratch_pg, serve_process

BODY = {
    "requested_by": {"kind": "system", "id": "bench"},
    "objective": "Benchmark task",
    "operation": "ops",
    "target": {"repo": "acme/app"},
    "inputs": {"command": "true"},
}

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '%s'
local statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%%d duration_us=%%d p50=%%d p95=%%d p99=%%d errors=%%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout))
end
"""


def raw_insert_rate(db_name: str, n: int = 5000) -> float:
    """Single-row INSERT + commit per row on one connection: the database's own ceiling for our shape."""
    url = f"{PG_BASE}/{db_name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE raw_bench (id text primary key, body jsonb, created_at timestamptz)")
        start = time.perf_counter()
        for i in range(n):
            conn.execute("INSERT INTO raw_bench VALUES (%s, %s, now())", (f"r{i}", json.dumps(BODY)))
        return n / (time.perf_counter() - start)


def run_wrk(base: str, concurrency: int, seconds: float, query: str) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_SCRIPT % json.dumps(BODY))
        script = fh.name
    threads = min(concurrency, 2)
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(concurrency),
            "-d",
            f"{int(seconds)}s",
            "-s",
            script,
            "--timeout",
            "10s",
            f"{base}/tasks/enqueue{query}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"RESULT requests=(\d+) duration_us=(\d+) p50=(\d+) p95=(\d+) p99=(\d+) errors=(\d+)", out)
    if not m:
        raise RuntimeError(out)
    req, dur, p50, p95, p99, errors = (int(x) for x in m.groups())
    return {
        "rate": req / (dur / 1e6),
        "p50": p50 / 1000,
        "p95": p95 / 1000,
        "p99": p99 / 1000,
        "requests": req,
        "errors": errors,
    }


async def run_httpx(base: str, concurrency: int, total: int, query: str) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for _ in counter:
            t0 = time.perf_counter()
            resp = await client.post(f"/tasks/enqueue{query}", json=BODY)
            latencies.append(time.perf_counter() - t0)
            errors += resp.status_code != 201

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        start = time.perf_counter()
        await asyncio.gather(*(one(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    ms = [x * 1000 for x in latencies]
    return {
        "rate": len(ms) / elapsed,
        "p50": pct(ms, 50),
        "p95": pct(ms, 95),
        "p99": pct(ms, 99),
        "requests": len(ms),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="duration per concurrency level (wrk)")
    parser.add_argument("--requests", type=int, default=3000, help="requests per level (httpx fallback)")
    parser.add_argument("--http-workers", type=int, default=2)
    parser.add_argument("--no-cwom", action="store_true", help="enqueue with create_cwom=false")
    args = parser.parse_args()
    query = "?create_cwom=false" if args.no_cwom else ""
    use_wrk = shutil.which("wrk") is not None
    with scratch_pg() as (name, url), tempfile.TemporaryDirectory() as tmp:
        raw = raw_insert_rate(name)
        env = {"DATABASE_URL": url, "JCT_ALLOWED_REPO_PREFIXES": "acme", "LOG_LEVEL": "WARNING"}
        subprocess.run(
            [sys.executable, "-m", "worker.cli", "migrate"],
            env={**os.environ, **env},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        serve_args = ["--no-worker", "--workers", str(args.http_workers)]
        with serve_process(env, serve_args, Path(tmp)) as base:
            # Warm up every worker process and connection pool.
            asyncio.run(run_httpx(base, 8, 200, query))
            print(
                f"load generator: {'wrk' if use_wrk else 'httpx'}; server: {args.http_workers} processes; "
                f"cwom+audit: {'off' if args.no_cwom else 'on'}"
            )
            print(f"raw PostgreSQL single-row insert+commit: {raw:,.0f} rows/s (one connection)")
            for conc in (1, 8, 32):
                if use_wrk:
                    r = run_wrk(base, conc, args.seconds, query)
                else:
                    r = asyncio.run(run_httpx(base, conc, args.requests, query))
                print(
                    f"concurrency {conc:>2}: {r['rate']:8,.0f} tasks/s  p50 {r['p50']:6.2f} ms  "
                    f"p95 {r['p95']:6.2f} ms  p99 {r['p99']:6.2f} ms  errors {int(r['errors'])}  "
                    f"ratio to raw insert {r['rate'] / raw:.2f}"
                )


if __name__ == "__main__":
    main()
