"""Full runs whose command is `true` on a small repository: runs/s with 1 worker (concurrency 1 and 2),
and the per-run overhead breakdown (checkout, sandbox, trace, DB) the executor records in each manifest.

    .venv/bin/python -m bench.worker_runs [--runs 200] [--db sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.common import scratch_pg
from control_tower import intake
from control_tower.db import make_engine, make_sessionmaker
from control_tower.migrate import upgrade
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


def _settings(url: str, root: Path, base: str) -> Settings:
    return Settings(
        _env_file=None,
        environment="test",
        database_url=url,
        jct_allowed_repo_prefixes=["acme"],
        trace_root=root / "traces",
        workspace_root=root / "workspaces",
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


def _round(url: str, root: Path, base: str, runs: int, concurrency: int) -> dict[str, Any]:
    settings = _settings(url, root, base)
    engine = make_engine(url)
    upgrade(engine)
    factory = make_sessionmaker(engine, info={"redactor": Redactor(named=settings.secret_values())})
    run_ids = _enqueue(factory, settings, runs)
    queue = RunQueue(factory, lease_seconds=30, max_attempts=3)
    worker = Worker(
        queue,
        build_executor(settings, factory),
        worker_id=f"bench-{concurrency}",
        concurrency=concurrency,
        poll_interval=0.01,
    )
    started = time.perf_counter()
    worker.run(until_idle=True)
    elapsed = time.perf_counter() - started
    with factory() as session:
        rows = session.execute(select(RunRow.status, RunRow.telemetry).where(RunRow.id.in_(run_ids))).all()
    engine.dispose()
    done = sum(1 for r in rows if r.status == "done")
    phases = {p: [float(r.telemetry.get("timings_ms", {}).get(p, 0.0)) for r in rows] for p in PHASES}
    return {
        "runs": runs,
        "done": done,
        "seconds": elapsed,
        "rate": runs / elapsed,
        "phases": {p: statistics.median(v) for p, v in phases.items() if v},
    }


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
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ct-bench-runs-"))
    make_bare_repo(root / "remote", "acme/app", FILES)
    base = f"file://{root / 'remote'}"
    floor = _floor(root, base)
    print("alone, median ms: " + "  ".join(f"{k} {v:.1f}" for k, v in floor.items()))
    backends = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    results: list[dict[str, Any]] = []
    for backend in backends:
        for concurrency in (1, 2):
            scratch = root / f"{backend}-{concurrency}"
            scratch.mkdir()
            if backend == "sqlite":
                result = _round(f"sqlite:///{scratch / 'bench.db'}", scratch, base, args.runs, concurrency)
            else:
                with scratch_pg("ct_bench_runs") as (_, url):
                    result = _round(url, scratch, base, args.runs, concurrency)
            result.update(backend=backend, concurrency=concurrency)
            results.append(result)
            phases = "  ".join(f"{p} {v:.1f}" for p, v in result["phases"].items())
            print(
                f"{backend:10} concurrency {concurrency}: {result['rate']:6.1f} runs/s "
                f"({result['done']}/{result['runs']} done in {result['seconds']:.1f} s)  "
                f"median ms per run: {phases}"
            )
    print(json.dumps({"floor_ms": floor, "rounds": results}, indent=2))


if __name__ == "__main__":
    main()
