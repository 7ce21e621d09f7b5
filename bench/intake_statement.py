"""The intake statement alone on PostgreSQL: wall time per statement and the server backend's CPU per
task, with and without CWOM + audit, one task per statement (c=1), alternated.

Run: .venv/bin/python -m bench.intake_statement [--tasks 1500] [--rounds 2] [--batch 1]
The statement's parameters are built before the clock starts (client CPU of `_params` is printed apart),
so the wall time is the round trip and the server's work. Creates a scratch database on 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.common import PG_BASE, scratch_pg
from bench.intake import BODY
from control_tower import intake_pg
from control_tower.db import make_engine
from control_tower.intake_plan import IntakePlan
from control_tower.migrate import upgrade
from policy import PolicyConfig, TaskCreateV1
from policy.redaction import Redactor

_TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    """User + system CPU seconds of a server backend (same machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1500, help="tasks per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1, help="tasks per statement")
    parser.add_argument("--setup", action="append", default=[], help="SQL run after the migrations (trials)")
    args = parser.parse_args()
    config = PolicyConfig(allowed_repo_prefixes=("acme",))
    task = TaskCreateV1.model_validate(BODY)
    redactor = Redactor()
    with scratch_pg("ct_bench_stmt") as (name, url):
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        with psycopg.connect(f"{PG_BASE}/{name}", autocommit=True) as conn:
            for sql in args.setup:
                conn.execute(sql)
            pid = conn.info.backend_pid
            # The Repo, once (as the cache would have it).
            first = intake_pg._item(IntakePlan(task, config, "bench", True, 3), None, redactor)
            conn.execute(intake_pg.statement(), intake_pg._params([first]))
            objects = first.built.objects
            assert objects is not None
            repo_id = objects.ids.repo_id

            def params(cwom: bool, n: int) -> tuple[list[dict[str, Any]], float]:
                plan = IntakePlan(task, config, "bench", cwom, 3)
                t = time.process_time()
                out = []
                for _ in range(n // args.batch):
                    repo = repo_id if cwom else None
                    out.append(
                        intake_pg._params([intake_pg._item(plan, repo, redactor) for _ in range(args.batch)])
                    )
                return out, (time.process_time() - t) / n

            def run(cwom: bool) -> tuple[float, float, float]:
                batches, client = params(cwom, args.tasks)
                cpu, t = backend_cpu(pid), time.perf_counter()
                for p in batches:
                    conn.execute(intake_pg.statement(), p)
                wall = time.perf_counter() - t
                return wall / len(batches) * 1000, (backend_cpu(pid) - cpu) / args.tasks * 1000, client * 1000

            run(False), run(True)  # warm-up (and prepare)
            results: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
            for _ in range(args.rounds):
                for cwom in (False, True):
                    results[cwom].append(run(cwom))
            for cwom in (False, True):
                rs = results[cwom]
                print(
                    f"{'with' if cwom else 'without'} CWOM: statement "
                    + " ".join(f"{r[0]:.3f}" for r in rs)
                    + " ms wall; server CPU "
                    + " ".join(f"{r[1]:.3f}" for r in rs)
                    + " ms/task; client _item+_params "
                    + " ".join(f"{r[2]:.3f}" for r in rs)
                    + " ms/task"
                )
            on = min(r[1] for r in results[True])
            off = min(r[1] for r in results[False])
            print(f"CWOM-specific server CPU per task: {on - off:.3f} ms (best of each)")


if __name__ == "__main__":
    main()
