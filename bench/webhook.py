"""Webhook acknowledgement: a burst of signed deliveries at concurrency 32 against a server on PostgreSQL.

Run: .venv/bin/python -m bench.webhook [--deliveries 5000] [--http-workers 2]
Two bursts: "chatter" (events that trigger nothing: stored and acknowledged) and "triggers" (each delivery a
labelled issue that becomes a task through intake, after the answer: the time until the whole burst is
processed is printed too). Baseline in the same run: GET /healthz through the same server and load generator,
i.e. what the HTTP stack alone costs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from bench.common import pct, scratch_pg, serve_process
from bench.loadgen import build_request, run
from control_tower.github.signature import sign
from tests.fakes.github_webhooks import issue_comment_payload, issues_labeled_payload

SECRET = "bench-webhook-secret-0123456789"


def deliveries(kind: str, n: int, host: str) -> list[bytes]:
    out = []
    for i in range(n):
        if kind == "triggers":
            payload = issues_labeled_payload("acme/app", 1000 + i, "tower:analysis", title=f"Investigate {i}")
            event = "issues"
        else:
            payload = issue_comment_payload(
                "acme/app", 1 + i % 50, f"just a comment {i}", comment_id=10_000 + i
            )
            event = "issue_comment"
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(body, SECRET),
        }
        out.append(build_request(host, "/github/webhook", body, headers))
    return out


def wait_processed(url: str, timeout: float) -> float:
    """Seconds until no delivery is left `received` (processing runs after the webhook answers)."""
    t0 = time.perf_counter()
    dsn = url.replace("postgresql+psycopg", "postgresql", 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.perf_counter() - t0 < timeout:
            row = conn.execute("SELECT count(*) FROM github_deliveries WHERE status = 'received'").fetchone()
            if row is not None and row[0] == 0:
                return time.perf_counter() - t0
            time.sleep(0.05)
    raise TimeoutError("deliveries still unprocessed")


def processed_counts(url: str) -> tuple[int, int, dict[str, int]]:
    """Tasks and commands stored, and deliveries by status: what processing actually produced."""
    dsn = url.replace("postgresql+psycopg", "postgresql", 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()
        commands = conn.execute("SELECT count(*) FROM github_commands").fetchone()
        statuses = conn.execute("SELECT status, count(*) FROM github_deliveries GROUP BY status").fetchall()
    return (tasks[0] if tasks else 0), (commands[0] if commands else 0), dict(statuses)


def report(name: str, res: object) -> None:
    lat = [x * 1000 for x in res.latencies]  # type: ignore[attr-defined]
    print(
        f"{name:<22} {res.rate:8,.0f} req/s  p50 {pct(lat, 50):6.2f} ms  p95 {pct(lat, 95):6.2f} ms  "  # type: ignore[attr-defined]
        f"p99 {pct(lat, 99):6.2f} ms  statuses {res.statuses}"
    )  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--http-workers", type=int, default=2)
    args = parser.parse_args()
    with scratch_pg() as (_, url), tempfile.TemporaryDirectory() as tmp:
        env = {
            "DATABASE_URL": url,
            "JCT_ALLOWED_REPO_PREFIXES": "acme",
            "LOG_LEVEL": "WARNING",
            "GITHUB_WEBHOOK_SECRET": SECRET,
        }
        subprocess.run(
            [sys.executable, "-m", "worker.cli", "migrate"],
            env={**os.environ, **env},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with serve_process(env, ["--no-worker", "--workers", str(args.http_workers)], Path(tmp)) as base:
            host = base.split("//", 1)[1]
            health = [f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()] * args.deliveries
            run(base, deliveries("chatter", 200, host), 8)  # warm-up
            base_res = run(base, health, args.concurrency)
            print(
                f"{args.deliveries} requests per burst, concurrency {args.concurrency}, "
                f"{args.http_workers} server processes, PostgreSQL"
            )
            report("baseline GET /healthz", base_res)
            for kind in ("chatter", "triggers"):
                t0 = time.perf_counter()
                res = run(base, deliveries(kind, args.deliveries, host), args.concurrency)
                report(f"webhook {kind}", res)
                print(f"{'':<22} ratio to baseline {res.rate / base_res.rate:.2f}")
                if kind == "triggers":
                    # Acknowledged is not done: tasks are made after the answer. Time the backlog.
                    drained = wait_processed(url, time.perf_counter() - t0 + 600)
                    took = time.perf_counter() - t0
                    print(
                        f"{'':<22} all {args.deliveries} processed (tasks + commands) {took:.1f} s after "
                        f"the burst began: {args.deliveries / took:,.0f} deliveries/s end to end; "
                        f"{drained:.1f} s after the last answer"
                    )
                    tasks, commands, statuses = processed_counts(url)
                    print(f"{'':<22} stored: {tasks} tasks, {commands} commands; deliveries {statuses}")


if __name__ == "__main__":
    main()
