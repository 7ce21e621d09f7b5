"""Orchestration overhead of the AI playbooks with the mock provider: the time Control Tower adds per agent
turn and per non-AI step beyond the model's latency and the tools' own run time.

    .venv/bin/python -m bench.agent [--runs 30] [--db sqlite|postgresql]

Each run is a real `code_change` run through the executor (checkout → plan → agent → verify → diff_check →
collect) on a bare repository, with the real sandbox and trace. From the trace and timed runners:
- per agent turn: the gap between consecutive `ai.request` events (the last turn: up to `agent.stop`) minus
  the model's latency and the duration of the tools run in that turn (telemetry, redaction, trace writes,
  tool dispatch and path checks, message building count as overhead);
- per non-AI step (checkout, verify, diff_check, collect): the step's wall time in the executor (from
  `step.started` to the next step's `step.started` or `run.finished`, so the DB and trace bookkeeping around
  the step count) minus its external work: the git clone or diff subprocesses and the sandboxed command.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import pct, scratch_pg
from control_tower import intake
from control_tower.db import make_engine, make_sessionmaker
from control_tower.migrate import upgrade
from control_tower.settings import Settings
from policy import TaskCreateV1
from policy.redaction import Redactor
from tests.fakes.git_remote import make_bare_repo
from worker import checkout as co
from worker.ai_playbooks import ai_runners, register_ai_playbooks
from worker.executor import build_executor
from worker.loop import Worker
from worker.playbooks import default_registry
from worker.queue import RunQueue
from worker.steps import Runner
from worker.trace import TraceReader

FILES: dict[str, bytes | str] = {
    "README.md": "# bench\n",
    **{f"src/m{i}.py": f"x = {i}\n" for i in range(20)},
}
NON_AI = ("checkout", "verify", "diff_check", "collect")
# External work per step: time spent in git subprocesses (clone, diff), measured around the calls.
_GIT_MS: dict[tuple[str, str], float] = {}
# Control Tower's own database commits (step rows, fenced), per (run, step): reported separately.
_DB_MS: dict[tuple[str, str], float] = {}
_CURRENT: dict[str, tuple[str, str]] = {}


def _ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp() * 1000


@contextmanager
def _timed_git() -> Iterator[None]:
    """Time git clone/diff per (run, step): that is the tool's own time, not Control Tower's."""
    originals = (co.clone, co.workspace_diff)

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                _add(_GIT_MS, start)

        return timed

    co.clone, co.workspace_diff = wrap(co.clone), wrap(co.workspace_diff)
    try:
        yield
    finally:
        co.clone, co.workspace_diff = originals


def _add(table: dict[tuple[str, str], float], start: float) -> None:
    key = _CURRENT.get("step", ("", ""))
    table[key] = table.get(key, 0.0) + (time.perf_counter() - start) * 1000


def _instrument(executor: Any) -> None:
    """Time the sandbox (the tool's own time) and the executor's DB flushes (Control Tower's) per step."""
    sandbox, flush = executor.sandbox, executor._flush
    run = sandbox.run

    def timed_run(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return run(*args, **kwargs)
        finally:
            _add(_GIT_MS, start)

    def timed_flush(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return flush(*args, **kwargs)
        finally:
            _add(_DB_MS, start)

    sandbox.run, executor._flush = timed_run, timed_flush


def _tracking(runners: dict[str, Runner]) -> dict[str, Runner]:
    def wrap(runner: Runner) -> Runner:
        def run(ctx: Any, spec: Any) -> Any:
            _CURRENT["step"] = (ctx.claim.run_id, spec.id)
            return runner(ctx, spec)

        return run

    return {name: wrap(r) for name, r in runners.items()}


def _turn_overheads(events: list[dict[str, Any]]) -> list[float]:
    agent = [e for e in events if e.get("step_id") == "agent"]
    marks = [i for i, e in enumerate(agent) if e["type"] == "ai.request"]
    stop = next(i for i, e in enumerate(agent) if e["type"] == "agent.stop")
    out = []
    for n, start in enumerate(marks):
        end = marks[n + 1] if n + 1 < len(marks) else stop
        window = agent[start : end + 1]
        latency = sum(float(e["data"]["latency_ms"]) for e in window[:-1] if e["type"] == "ai.response")
        tools = sum(float(e["data"]["duration_ms"]) for e in window[:-1] if e["type"] == "tool.result")
        out.append(_ts(agent[end]) - _ts(agent[start]) - latency - tools)
    return out


def _step_overheads(run_id: str, events: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    starts = [(i, e) for i, e in enumerate(events) if e["type"] == "step.started"]
    finished = next(e for e in events if e["type"] == "run.finished")
    out: dict[str, tuple[float, float]] = {}
    for n, (_i, event) in enumerate(starts):
        step = str(event["step_id"])
        if step not in NON_AI:
            continue
        end = starts[n + 1][1] if n + 1 < len(starts) else finished
        # External: git subprocesses and the sandboxed command (setup and teardown included).
        overhead = _ts(end) - _ts(event) - _GIT_MS.get((run_id, step), 0.0)
        out[step] = (overhead, _DB_MS.get((run_id, step), 0.0))
    return out


def _round(url: str, root: Path, base: str, runs: int) -> dict[str, Any]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg,unused-ignore]
        environment="test",
        database_url=url,
        jct_allowed_repo_prefixes=["acme"],
        trace_root=root / "traces",
        workspace_root=root / "workspaces",
        git_base_url=base,
        log_level="WARNING",
        ai_provider="mock",
    )
    engine = make_engine(url)
    upgrade(engine)
    factory = make_sessionmaker(engine, info={"redactor": Redactor(named=settings.secret_values())})
    body = {
        "requested_by": {"kind": "system", "id": "bench"},
        "objective": "Document the module in README.md",
        "operation": "code_change",
        "target": {"repo": "acme/app"},
        "inputs": {"verify": "true"},
    }
    ids = [
        str(
            intake.submit(
                factory,
                task=TaskCreateV1.model_validate(body),
                config=settings.policy_config(),
                source="bench",
            ).task.run_id
        )
        for _ in range(runs)
    ]
    executor = build_executor(
        settings, factory, registry=register_ai_playbooks(default_registry()), runners=_tracking(ai_runners())
    )
    _instrument(executor)
    worker = Worker(
        RunQueue(factory, lease_seconds=30, max_attempts=1),
        executor,
        worker_id="bench-agent",
        concurrency=1,
        poll_interval=0.01,
    )
    with _timed_git():
        worker.run(until_idle=True)
    engine.dispose()
    turns: list[float] = []
    steps: dict[str, list[float]] = {s: [] for s in NON_AI}
    without_db: list[float] = []
    statuses = []
    for run_id in ids:
        events, _ = TraceReader(settings.trace_root, run_id).events()
        statuses.append(next(e["data"]["status"] for e in events if e["type"] == "run.finished"))
        turns += _turn_overheads(events)
        for step, (value, db) in _step_overheads(run_id, events).items():
            steps[step].append(value)
            without_db.append(value - db)
    every_step = [v for values in steps.values() for v in values]
    return {
        "runs": runs,
        "done": statuses.count("done"),
        "agent_turns": len(turns),
        "per_agent_turn_ms": {"p50": round(pct(turns, 50), 3), "p95": round(pct(turns, 95), 3)},
        "per_non_ai_step_ms": {"p50": round(pct(every_step, 50), 3), "p95": round(pct(every_step, 95), 3)},
        "per_non_ai_step_without_db_commits_ms": {
            "p50": round(pct(without_db, 50), 3),
            "p95": round(pct(without_db, 95), 3),
        },
        "by_step_ms": {
            s: {"p50": round(pct(v, 50), 3), "p95": round(pct(v, 95), 3)} for s, v in steps.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ct-bench-agent-"))
    make_bare_repo(root / "remote", "acme/app", FILES)
    base = f"file://{root / 'remote'}"
    if args.db == "sqlite":
        result = _round(f"sqlite:///{root / 'bench.db'}", root, base, args.runs)
    else:
        with scratch_pg("ct_bench_agent") as (_, url):
            result = _round(url, root, base, args.runs)
    result["db"] = args.db
    turn, step = result["per_agent_turn_ms"], result["per_non_ai_step_ms"]
    print(f"{args.db}: {result['done']}/{result['runs']} runs done, {result['agent_turns']} agent turns")
    print(f"  overhead per agent turn:   p50 {turn['p50']:.2f} ms  p95 {turn['p95']:.2f} ms")
    print(
        f"  overhead per non-AI step:  p50 {step['p50']:.2f} ms  p95 {step['p95']:.2f} ms"
        "  (target p95 < 10 ms)"
    )
    nodb = result["per_non_ai_step_without_db_commits_ms"]
    print(f"    of which not DB commits: p50 {nodb['p50']:.2f} ms  p95 {nodb['p95']:.2f} ms")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
