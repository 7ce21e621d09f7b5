"""Worker queue benchmarks: enqueue→start latency, the queue alone with 1/2/4 worker processes beside the raw
SKIP LOCKED claim rate and pgqueuer on the same machine, and the queue alone on SQLite.

Run: .venv/bin/python bench/worker.py [--runs N] [--latency-samples N] [--batch N]
Needs PostgreSQL on 127.0.0.1:5432 (CT_BENCH_PG_ADMIN); every figure uses its own scratch database.
Worker processes are started, connect, report ready, and only then get "go", so start-up is not timed.
The default of 15,000 runs per figure measures steady state: with 3,000, pgqueuer's fixed costs at the
start and end of a drain (its 0.2 s dequeue timeout included) halved its rate (804 vs 2,461 jobs/s with
4 processes on one machine in one session) and made Control Tower look faster than it is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, select, update  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from bench.common import PG_BASE, pct, scratch_pg, summary_ms  # noqa: E402
from control_tower import intake  # noqa: E402
from control_tower.db import make_engine, make_sessionmaker  # noqa: E402
from control_tower.migrate import upgrade  # noqa: E402
from control_tower.settings import Settings  # noqa: E402
from control_tower.tables import TaskRow  # noqa: E402
from cwom.base import new_id, utcnow  # noqa: E402
from cwom.enums import RunStatus  # noqa: E402
from cwom.tables import RunRow  # noqa: E402
from policy import TaskCreateV1  # noqa: E402

TASK = {
    "requested_by": {"kind": "human", "id": "bench"},
    "objective": "bench",
    "operation": "ops",
    "target": {"repo": "acme/app"},
    "inputs": {"command": "true"},
}


def settings_for(url: str) -> Settings:
    return Settings(database_url=url, jct_allowed_repo_prefixes=["acme"], environment="test", _env_file=None)


def template_run(factory: sessionmaker[Session], url: str) -> tuple[TaskRow, RunRow]:
    """One run through intake; the bulk copies share its issue and repo."""
    accepted = intake.submit(
        factory, task=TaskCreateV1.model_validate(TASK), config=settings_for(url).policy_config()
    )
    with factory() as session:
        task = session.get_one(TaskRow, accepted.task.id)
        run = session.get_one(RunRow, accepted.task.run_id)
        session.execute(update(RunRow).where(RunRow.id == run.id).values(status="done"))
        session.commit()
        return task, run


def bulk_enqueue(factory: sessionmaker[Session], task: TaskRow, run: RunRow, n: int) -> list[str]:
    """n queued runs, each with its task row, copied from the template (intake is benched elsewhere)."""
    now = utcnow()
    tasks: list[dict[str, object]] = []
    runs: list[dict[str, object]] = []
    for i in range(n):
        task_id, run_id = new_id(), new_id()
        tasks.append(
            {
                "id": task_id,
                "idempotency_key": None,
                "request_hash": task.request_hash,
                "status": "queued",
                "operation": task.operation,
                "repo": task.repo,
                "ref": task.ref,
                "priority": task.priority,
                "requested_by_kind": task.requested_by_kind,
                "requested_by_id": task.requested_by_id,
                "source": "bench",
                "body": task.body,
                "policy_version": task.policy_version,
                "trace_id": f"{i:032x}",
                "cwom_issue_id": task.cwom_issue_id,
                "run_id": run_id,
                "created_at": now,
                "updated_at": now,
            }
        )
        runs.append(
            {
                "id": run_id,
                "issue_id": run.issue_id,
                "repo_id": run.repo_id,
                "task_id": task_id,
                "trace_id": f"{i:032x}",
                "mode": run.mode,
                "executor": {},
                "status": "queued",
                "inputs": run.inputs,
                "outputs": [],
                "telemetry": {},
                "cost": {},
                "priority": 100,
                "attempt": 0,
                "max_attempts": 3,
                "available_at": now,
                "version": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
    with factory() as session, session.begin():
        for start in range(0, n, 1000):
            session.execute(insert(TaskRow), tasks[start : start + 1000])
            session.execute(insert(RunRow), runs[start : start + 1000])
    return [str(r["id"]) for r in runs]


# -- child processes -------------------------------------------------------------------------------


def _ready_then_go() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    assert sys.stdin.readline().strip() == "go"


def child_ct_worker(url: str, concurrency: int) -> None:
    """What `control-tower worker --concurrency N --until-idle` runs (`build_worker` from the settings,
    every default as shipped), with an executor that completes each run at once."""
    from worker.queue import Claim, RunControl
    from worker.service import build_worker

    engine = make_engine(url, pool_size=concurrency + 2)

    def complete(claim: Claim, control: RunControl) -> None:
        control.queue.transition(claim, RunStatus.DONE)

    worker = build_worker(settings_for(url), engine, executor=complete, concurrency=concurrency)
    with engine.connect():
        pass  # connect before "go"
    _ready_then_go()
    worker.run(until_idle=True)
    sys.stdout.write(json.dumps({"done": worker.completed}) + "\n")


def child_latency_worker(url: str) -> None:
    """An idle worker (polling every 30 s: only NOTIFY wakes it) reporting on stdout when runs start."""
    from worker.loop import Worker
    from worker.notify import PgNotifier
    from worker.queue import Claim, RunControl, RunQueue

    engine = make_engine(url)
    queue = RunQueue(make_sessionmaker(engine), lease_seconds=30, max_attempts=3)
    lock = threading.Lock()

    def record(claim: Claim, control: RunControl) -> None:
        started = time.monotonic()
        with lock:
            sys.stdout.write(f"{claim.run_id} {started}\n")
            sys.stdout.flush()
        control.queue.transition(claim, RunStatus.DONE)

    notifier = PgNotifier.for_engine(engine)
    worker = Worker(queue, record, concurrency=1, poll_interval=30.0, notifier=notifier)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    notifier.listening.wait(10)
    _ready_then_go()
    sys.stdin.readline()  # "stop"
    worker.stop(5)
    thread.join(10)


def child_raw(url: str) -> None:
    """The raw SKIP LOCKED claim: one autocommit UPDATE … WHERE id = (SELECT … SKIP LOCKED) per row."""
    import psycopg

    dsn = url.replace("postgresql+psycopg", "postgresql", 1)
    sql = """
        UPDATE cwom_runs SET status = 'running', locked_by = %s, attempt = attempt + 1
        WHERE id = (SELECT id FROM cwom_runs WHERE status = 'queued'
                    ORDER BY priority, created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING id"""
    with psycopg.connect(dsn, autocommit=True) as conn:
        me = f"raw-{os.getpid()}"
        _ready_then_go()
        n = 0
        while conn.execute(sql, (me,)).fetchone() is not None:
            n += 1
    sys.stdout.write(json.dumps({"done": n}) + "\n")


def child_pgqueuer(dsn: str, expected_total: int) -> None:
    """pgqueuer draining no-op jobs (its defaults: batch 10, status log buffered)."""
    import psycopg
    from pgqueuer import Queries, QueueManager
    from pgqueuer.db import PsycopgDriver
    from pgqueuer.models import Job
    from pgqueuer.types import QueueExecutionMode

    async def main() -> int:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        qm = QueueManager(Queries(PsycopgDriver(conn)))
        done = 0

        @qm.entrypoint("noop")
        async def noop(job: Job) -> None:
            nonlocal done
            done += 1

        await asyncio.get_running_loop().run_in_executor(None, _ready_then_go)
        await qm.run(mode=QueueExecutionMode.drain, dequeue_timeout=timedelta(seconds=0.2))
        await conn.close()
        return done

    done = asyncio.run(main())
    sys.stdout.write(json.dumps({"done": done}) + "\n")


# -- parent -----------------------------------------------------------------------------------------


def spawn(role: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--child", role, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )


def race(procs: Sequence[subprocess.Popen[str]]) -> tuple[float, int]:
    """Wait for every child to be ready, say go, time until all exit; returns (seconds, items done)."""
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready", "child failed to start"
    t0 = time.perf_counter()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    done = 0
    for p in procs:
        assert p.stdout is not None
        out = p.stdout.read()
        p.wait(timeout=600)
        done += json.loads(out.strip().splitlines()[-1])["done"]
    return time.perf_counter() - t0, done


def bench_latency(url: str, samples: int) -> dict[str, float]:
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    config = settings_for(url).policy_config()
    proc = spawn("latency", url)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    from_call: list[float] = []
    from_commit: list[float] = []
    submit: list[float] = []
    for i in range(samples + 5):
        time.sleep(0.05)  # the worker finished the previous run and is idle, blocked in LISTEN
        t0 = time.monotonic()
        accepted = intake.submit(factory, task=TaskCreateV1.model_validate(TASK), config=config)
        t1 = time.monotonic()
        run_id, started_s = proc.stdout.readline().split()
        assert run_id == accepted.task.run_id
        started = float(started_s)
        if i >= 5:  # warm-up
            from_call.append(started - t0)
            from_commit.append(max(0.0, started - t1))
            submit.append(t1 - t0)
    proc.stdin.write("stop\n")
    proc.stdin.flush()
    proc.wait(timeout=30)
    engine.dispose()
    print(f"  intake.submit (one transaction):     {summary_ms(submit)}")
    print(f"  enqueue call -> executor start:      {summary_ms(from_call)}")
    print(f"  enqueue commit -> executor start:    {summary_ms(from_commit)}")
    return {
        "p50_ms": pct(from_commit, 50) * 1000,
        "p95_ms": pct(from_commit, 95) * 1000,
        "call_p50_ms": pct(from_call, 50) * 1000,
    }


def bench_ct_queue(url: str, runs: int, processes: int, concurrency: int) -> float:
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    task, run = template_run(factory, url)
    bulk_enqueue(factory, task, run, runs)
    procs = [spawn("ct", url, str(concurrency)) for _ in range(processes)]
    seconds, done = race(procs)
    with factory() as session:
        left = session.scalar(select(RunRow.id).where(RunRow.status != "done").limit(1))
    engine.dispose()
    assert done == runs and left is None, (done, left)
    return runs / seconds


def bench_raw(url: str, runs: int, processes: int) -> float:
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    task, run = template_run(factory, url)
    bulk_enqueue(factory, task, run, runs)
    engine.dispose()
    seconds, done = race([spawn("raw", url) for _ in range(processes)])
    assert done == runs, done
    return runs / seconds


def bench_pgqueuer(name: str, runs: int, processes: int) -> float:
    import psycopg
    from pgqueuer import Queries
    from pgqueuer.db import PsycopgDriver

    dsn = f"{PG_BASE}/{name}"

    async def setup() -> None:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        queries = Queries(PsycopgDriver(conn))
        await queries.install()
        for start in range(0, runs, 1000):
            k = min(1000, runs - start)
            await queries.enqueue(["noop"] * k, [None] * k, [0] * k)
        await conn.close()

    asyncio.run(setup())
    seconds, done = race([spawn("pgq", dsn, str(runs)) for _ in range(processes)])
    assert done == runs, done
    return runs / seconds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15000)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4, help="executor threads per worker process")
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args(argv)
    if args.child:
        from control_tower.logs import configure_logging

        configure_logging("WARNING")  # to stderr: stdout carries the ready/go/result protocol
        role, *rest = args.child
        {
            "ct": lambda: child_ct_worker(rest[0], int(rest[1])),
            "latency": lambda: child_latency_worker(rest[0]),
            "raw": lambda: child_raw(rest[0]),
            "pgq": lambda: child_pgqueuer(rest[0], int(rest[1])),
        }[role]()
        return

    print(
        f"worker bench: {os.cpu_count()} cores, {args.runs} runs per figure, "
        f"{args.concurrency} executor threads per Control Tower worker process"
    )
    print("\nenqueue -> start latency, PostgreSQL, idle worker woken by NOTIFY (polling every 30 s):")
    with scratch_pg("ct_bench_wlat") as (_, url):
        upgrade(make_engine(url))
        latency = bench_latency(url, args.latency_samples)

    print("\nqueue alone, PostgreSQL: claim + complete of empty runs with their audit rows (jobs/s)")
    print(
        f"  ct = control-tower worker --concurrency {args.concurrency}, as shipped (build_worker, defaults)"
    )
    header = ("processes", "ct", "raw SKIP LOCKED", "pgqueuer", "ct/pgq", "ct/raw")
    print("  " + "  ".join(f"{h:>{w}}" for h, w in zip(header, (9, 6, 15, 9, 7, 7), strict=True)))
    results: dict[int, tuple[float, float, float]] = {}
    for processes in [int(p) for p in args.processes.split(",")]:
        with scratch_pg("ct_bench_wq") as (_, url):
            upgrade(make_engine(url))
            ct = bench_ct_queue(url, args.runs, processes, args.concurrency)
        with scratch_pg("ct_bench_wraw") as (_, url):
            upgrade(make_engine(url))
            raw = bench_raw(url, args.runs, processes)
        with scratch_pg("ct_bench_wpgq") as (name, _):
            pgq = bench_pgqueuer(name, args.runs, processes)
        results[processes] = (ct, raw, pgq)
        print(f"  {processes:>9}  {ct:>6.0f}  {raw:>15.0f}  {pgq:>9.0f}  {ct / pgq:>7.2f}  {ct / raw:>7.2f}")

    print("\nqueue alone, SQLite (WAL), 1 worker process:")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(make_engine(url))
        sqlite_rate = bench_ct_queue(url, args.runs, 1, args.concurrency)
    print(f"  ct {sqlite_rate:.0f} runs/s")

    print("\nsummary:")
    print(
        f"  start latency (commit -> executor) p50 {latency['p50_ms']:.1f} ms (target < 20 ms), "
        f"p95 {latency['p95_ms']:.1f} ms; from the enqueue call p50 {latency['call_p50_ms']:.1f} ms"
    )
    for processes, (ct, raw, pgq) in results.items():
        print(
            f"  {processes} processes: control tower {ct:.0f}/s vs pgqueuer {pgq:.0f}/s "
            f"(x{ct / pgq:.2f}); raw SKIP LOCKED {raw:.0f}/s"
        )
    print(f"  load average during the run: {os.getloadavg()}")


if __name__ == "__main__":
    main()
