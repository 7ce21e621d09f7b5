"""Full runs whose command is `true` on a small repository: runs/s, and the per-run overhead breakdown
(checkout, sandbox, trace, DB) the executor records in each manifest.

Rounds: one worker process (set up as `control-tower worker` sets itself up: process tuning and logging
from the settings) at concurrency 1 (WORKER_CONCURRENCY's default), 2 and 4 (`--concurrency N`); then
`--processes` real `control-tower worker --until-idle --concurrency 2` processes sharing the database,
whose rate counts from the first run's start to the last run's end (their start-up is not a run).
Every run is whole: claim, checkout, sandboxed `sh -c true`, diff, trace folder, artifacts, audit rows.

    .venv/bin/python -m bench.worker_runs [--runs 200] [--db sqlite|postgresql|both] [--processes 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.common import scratch_pg
from control_tower import intake
from control_tower.db import make_engine, make_sessionmaker
from control_tower.logs import configure_logging
from control_tower.migrate import upgrade
from control_tower.runtime import tune_process
from control_tower.settings import Settings
from cwom.tables import RunRow
from policy import TaskCreateV1
from policy.redaction import Redactor
from tests.fakes.git_remote import make_bare_repo
from worker.executor import build_executor
from worker.loop import Worker
from worker.queue import RunQueue

FILES: dict[str, bytes | str] = {
    "README.md": "# bench\n",
    **{f"src/m{i}.py": f"x = {i}\n" for i in range(20)},
}
PHASES = ("checkout", "sandbox", "trace", "db", "total")
CONCURRENCIES = (1, 2, 4)
PROCESS_CONCURRENCY = 2
# `--workspaces DIR`: the workspaces (and mirrors) there, e.g. on a tmpfs; traces stay under the tmp root.
WORKSPACES: Path | None = None
_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int | str) -> tuple[float, float]:
    """(own, reaped children's) CPU ms of a process, from /proc (0, 0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0, 0.0
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime) * _TICK_MS, (cutime + cstime) * _TICK_MS


def _pg_cpu() -> float:
    """CPU ms of the local PostgreSQL: every live postgres process, plus the backends its postmaster
    has reaped (the postmaster's children's time). Other databases' work on the server counts too."""
    procs: dict[str, str] = {}  # pid -> parent pid, of postgres processes
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if Path(entry.path, "comm").read_text().strip() == "postgres":
                procs[entry.name] = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
    total = 0.0
    for pid, ppid in procs.items():
        own, reaped = _proc_cpu(pid)
        total += own + (reaped if ppid not in procs else 0.0)  # the postmaster: its reaped backends
    return total


class _Statements:
    """Counts the round trips psycopg makes in this process: statements and transaction commands."""

    def __init__(self) -> None:
        self.count = 0
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> _Statements:
        import psycopg
        from psycopg._connection_base import BaseConnection

        def counting(owner: Any, name: str) -> None:
            original = getattr(owner, name)

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                self.count += 1
                return original(*args, **kwargs)

            self._saved.append((owner, name, original))
            setattr(owner, name, wrapper)

        counting(psycopg.Cursor, "execute")
        counting(psycopg.Cursor, "executemany")
        counting(BaseConnection, "_exec_command")  # BEGIN, COMMIT, ROLLBACK, SET...
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)


def _settings(url: str, root: Path, base: str) -> Settings:
    return Settings(
        _env_file=None,
        environment="test",
        database_url=url,
        jct_allowed_repo_prefixes=["acme"],
        trace_root=root / "traces",
        workspace_root=(WORKSPACES or root) / "workspaces" / root.name,
        git_base_url=base,
        log_level="WARNING",
        worker_lease_seconds=30,
    )


def _enqueue(factory: Any, settings: Settings, n: int) -> list[str]:
    body = {
        "requested_by": {"kind": "system", "id": "bench"},
        "objective": "bench",
        "operation": "ops",
        "target": {"repo": "acme/app"},
        "inputs": {"command": "true"},
    }
    task = TaskCreateV1.model_validate(body)
    ids = []
    for _ in range(n):
        accepted = intake.submit(factory, task=task, config=settings.policy_config(), source="bench")
        ids.append(str(accepted.task.run_id))
    return ids


def _prepare(url: str, root: Path, base: str, runs: int) -> tuple[Settings, Any, Any, list[str]]:
    settings = _settings(url, root, base)
    engine = make_engine(url)
    upgrade(engine)
    factory = make_sessionmaker(engine, info={"redactor": Redactor(named=settings.secret_values())})
    return settings, engine, factory, _enqueue(factory, settings, runs)


def _summary(factory: Any, run_ids: list[str], seconds: float) -> dict[str, Any]:
    with factory() as session:
        rows = session.execute(
            select(RunRow.status, RunRow.telemetry, RunRow.started_at, RunRow.ended_at).where(
                RunRow.id.in_(run_ids)
            )
        ).all()
    done = sum(1 for r in rows if r.status == "done")
    phases = {p: [float(r.telemetry.get("timings_ms", {}).get(p, 0.0)) for r in rows] for p in PHASES}
    return {
        "runs": len(run_ids),
        "done": done,
        "seconds": seconds,
        "rate": len(run_ids) / seconds,
        "phases": {p: statistics.median(v) for p, v in phases.items() if v},
        "span": (min(r.started_at for r in rows), max(r.ended_at for r in rows)) if done else None,
    }


def _round(url: str, root: Path, base: str, runs: int, concurrency: int) -> dict[str, Any]:
    """One worker in this process, built and run as `control-tower worker --concurrency N` does."""
    settings, engine, factory, run_ids = _prepare(url, root, base, runs)
    queue = RunQueue(factory, lease_seconds=30, max_attempts=3)
    worker = Worker(
        queue,
        build_executor(settings, factory),
        worker_id=f"bench-{concurrency}",
        concurrency=concurrency,
        poll_interval=0.01,
    )
    before, pg_before = os.times(), _pg_cpu()
    started = time.perf_counter()
    with _Statements() as statements:
        worker.run(until_idle=True)
    result = _summary(factory, run_ids, time.perf_counter() - started)
    after, pg_after = os.times(), _pg_cpu()
    result["cpu_ms_per_run"] = {
        "worker": (after.user + after.system - before.user - before.system) * 1000 / runs,
        "worker_user": (after.user - before.user) * 1000 / runs,
        "children": (
            after.children_user + after.children_system - before.children_user - before.children_system
        )
        * 1000
        / runs,
        "pg": (pg_after - pg_before) / runs,
    }
    result["statements_per_run"] = statements.count / runs
    engine.dispose()
    return result


def _processes_round(url: str, root: Path, base: str, runs: int, processes: int) -> dict[str, Any]:
    """`processes` real `control-tower worker --until-idle` processes draining the same queue."""
    settings, engine, factory, run_ids = _prepare(url, root, base, runs)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "ENVIRONMENT": "test",
        "JCT_ALLOWED_REPO_PREFIXES": "acme",
        "TRACE_ROOT": str(settings.trace_root),
        "WORKSPACE_ROOT": str(settings.workspace_root),
        "GIT_BASE_URL": base,
        "LOG_LEVEL": "WARNING",
        "WORKER_POLL_INTERVAL": "0.01",
    }
    cmd = [
        sys.executable,
        "-m",
        "worker.cli",
        "worker",
        "--until-idle",
        "--concurrency",
        str(PROCESS_CONCURRENCY),
    ]
    before, pg_before = os.times(), _pg_cpu()
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL) for _ in range(processes)]
    last: dict[int, tuple[float, float]] = {}
    while any(proc.poll() is None for proc in procs):
        for proc in procs:
            sample = _proc_cpu(proc.pid)
            if sample != (0.0, 0.0):
                last[proc.pid] = sample
        time.sleep(0.02)
    after, pg_after = os.times(), _pg_cpu()
    result = _summary(factory, run_ids, 1.0)
    everything = (
        after.children_user + after.children_system - before.children_user - before.children_system
    ) * 1000
    own = sum(o for o, _ in last.values())  # the workers' own time, as last seen (within 20 ms of their end)
    result["cpu_ms_per_run"] = {
        "worker": own / runs,
        "children": (everything - own) / runs,
        "pg": (pg_after - pg_before) / runs,
    }
    if result["span"] is not None:
        first, last = result["span"]
        result["seconds"] = (last - first).total_seconds()
        result["rate"] = runs / result["seconds"]
    engine.dispose()
    return result


def _floor(root: Path, base: str, n: int = 20) -> dict[str, float]:
    """Each external piece of a run alone, median ms: what bounds the rate before any orchestration."""
    import subprocess
    import threading

    from worker.checkout import clone, remove_workspace, workspace_diff
    from worker.sandbox import SandboxLimits, probe_sandbox

    sandbox = probe_sandbox("auto")
    samples: dict[str, list[float]] = {
        "git clone": [],
        "sandbox true": [],
        "plain subprocess true": [],
        "diff (unchanged)": [],
    }
    for i in range(n):
        dest = root / "floor" / str(i)
        t = time.perf_counter()
        clone(base, "acme/app", "main", dest)
        samples["git clone"].append(time.perf_counter() - t)
        t = time.perf_counter()
        sandbox.run(["true"], workspace=dest, limits=SandboxLimits(wall_seconds=30), cancel=threading.Event())
        samples["sandbox true"].append(time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run(["true"], check=True)
        samples["plain subprocess true"].append(time.perf_counter() - t)
        t = time.perf_counter()
        workspace_diff(dest)
        samples["diff (unchanged)"].append(time.perf_counter() - t)
        remove_workspace(dest)
    return {k: statistics.median(v) * 1000 for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--processes", type=int, default=2, help="worker processes of the CLI round (0: none)"
    )
    parser.add_argument(
        "--workspaces", type=Path, default=None, help="where workspaces go (default: beside the traces)"
    )
    args = parser.parse_args()
    global WORKSPACES
    WORKSPACES = (
        Path(tempfile.mkdtemp(prefix="ct-bench-ws-", dir=args.workspaces)) if args.workspaces else None
    )
    tune_process()  # as `control-tower worker` does
    configure_logging("WARNING")
    root = Path(tempfile.mkdtemp(prefix="ct-bench-runs-"))
    make_bare_repo(root / "remote", "acme/app", FILES)
    base = f"file://{root / 'remote'}"
    floor = _floor(root, base)
    print("alone, median ms: " + "  ".join(f"{k} {v:.1f}" for k, v in floor.items()))
    backends = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    rounds = [(1, c) for c in CONCURRENCIES]
    if args.processes:
        rounds.append((args.processes, PROCESS_CONCURRENCY))
    results: list[dict[str, Any]] = []
    for backend in backends:
        for n, (processes, concurrency) in enumerate(rounds):
            scratch = root / f"{backend}-{n}"
            scratch.mkdir()
            in_process = n < len(CONCURRENCIES)
            with _database(backend, scratch) as url:
                if in_process:
                    result = _round(url, scratch, base, args.runs, concurrency)
                else:
                    result = _processes_round(url, scratch, base, args.runs, processes)
            result.pop("span", None)
            result.update(backend=backend, processes=processes, concurrency=concurrency)
            results.append(result)
            phases = "  ".join(f"{p} {v:.1f}" for p, v in result["phases"].items())
            cpu = "  ".join(f"{p} {v:.1f}" for p, v in result["cpu_ms_per_run"].items())
            statements = result.get("statements_per_run")
            phases += f"\n    CPU ms per run: {cpu}" + (
                f"  round trips per run {statements:.2f}" if statements is not None else ""
            )
            where = "in this process" if in_process else "control-tower worker processes"
            print(
                f"{backend:10} {processes} x concurrency {concurrency} ({where}): "
                f"{result['rate']:6.1f} runs/s ({result['done']}/{result['runs']} done in "
                f"{result['seconds']:.1f} s)  median ms per run: {phases}",
                flush=True,
            )
    print(json.dumps({"floor_ms": floor, "rounds": results}, indent=2))
    if WORKSPACES is not None:
        import shutil

        shutil.rmtree(WORKSPACES, ignore_errors=True)


@contextmanager
def _database(backend: str, scratch: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{scratch / 'bench.db'}"
        return
    with scratch_pg("ct_bench_runs") as (_, url):
        yield url


if __name__ == "__main__":
    main()
