"""The ops playbook end to end on SQLite and PostgreSQL: real git remotes, the real sandbox, trace folders."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_tower.settings import Settings
from cwom.audit import AuditRow
from cwom.rows import snapshot
from tests.conftest import make_settings
from tests.support.runs import (
    artifacts,
    drain,
    enqueue,
    make_queue,
    make_remote,
    ops,
    run_row,
    steps,
    task_row,
)
from worker.executor import RunExecutor, build_executor
from worker.queue import RunControl
from worker.run_steps import StepStatus
from worker.trace import list_files, render_trace, verify_manifest


@pytest.fixture
def wsettings(db_url: str, tmp_path: Path) -> Settings:
    base = make_remote(tmp_path / "remote")
    return make_settings(db_url, tmp_path, git_base_url=base, policy_min_time_budget=1)


def trace_dir(settings: Settings, run_id: str) -> Path:
    return Path(settings.trace_root) / run_id


def events(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    lines = (trace_dir(settings, run_id) / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_ops_run_completes_with_diff_artifacts_and_manifest(
    wsettings: Settings, factory: sessionmaker[Session]
) -> None:
    run_id = enqueue(factory, wsettings, **ops("echo hi > out.txt && echo done"))
    assert drain(factory, wsettings, build_executor(wsettings, factory)) == 1

    run = run_row(factory, run_id)
    assert (run.status, run.error_code, run.attempt) == ("done", None, 1)
    assert task_row(factory, run_id).status == "completed"
    rows = steps(factory, run_id)
    assert [(s["n"], s["step_id"], s["status"]) for s in rows] == [
        (1, "checkout", "completed"),
        (2, "shell", "completed"),
        (3, "collect", "completed"),
    ]
    assert rows[1]["output"]["exit_code"] == 0
    assert rows[2]["output"]["paths"] == ["out.txt"]

    folder = trace_dir(wsettings, run_id)
    patch = (folder / "diff.patch").read_text()
    assert "b/out.txt" in patch and "+hi" in patch
    assert (folder / "steps/2-shell/stdout.log").read_text() == "done\n"
    assert json.loads((folder / "task.json").read_text())["inputs"]["command"].startswith("echo hi")
    policy = json.loads((folder / "policy.json").read_text())
    assert (
        policy["decision"] == "allow" and policy["policy_version"] == wsettings.policy_config().version_hash
    )

    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["attempt"] == 1
    assert manifest["sandbox"]["tier"]
    assert manifest["sandbox_limits"]["shell"]["wall_seconds"] == 60
    recorded = {f["path"]: f["sha256"] for f in manifest["files"]}
    on_disk = {
        f["path"]: f["sha256"]
        for f in list_files(wsettings.trace_root, run_id)
        if f["path"] != "manifest.json"
    }
    assert recorded == on_disk
    for rel, digest in recorded.items():
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == digest
    assert {
        "task.json",
        "policy.json",
        "events.jsonl",
        "diff.patch",
        "summary.md",
        "steps/2-shell/stdout.log",
        "steps/2-shell/result.json",
    } <= set(recorded)
    assert verify_manifest(wsettings.trace_root, run_id) == []
    types = [e["type"] for e in events(wsettings, run_id)]
    assert types[0] == "run.claimed" and types[-1] == "run.finished"
    assert {"step.started", "step.finished", "command.finished"} <= set(types)

    arts = artifacts(factory, run_id)
    assert set(arts) == {"trace", "patch"}
    assert arts["trace"].digest == manifest["digest"]
    assert arts["trace"].uri == folder.resolve().as_uri()
    assert (
        arts["patch"].digest == "sha256:" + hashlib.sha256((folder / "diff.patch").read_bytes()).hexdigest()
    )
    assert {o["id"] for o in run.outputs} == {a.id for a in arts.values()}
    with factory() as session:
        audited = session.execute(
            select(AuditRow.entity_id, AuditRow.after).where(
                AuditRow.entity_kind == "artifact", AuditRow.action == "created"
            )
        ).all()
    assert {a.entity_id for a in audited} == {a.id for a in arts.values()}
    # Each creation's audit row holds the stored row, column for column.
    stored = {a.id: snapshot(a) for a in arts.values()}
    assert {a.entity_id: a.after for a in audited} == stored
    assert not (Path(wsettings.workspace_root) / run_id).exists()
    assert "Step 2 shell: completed" in render_trace(wsettings.trace_root, run_id)


def test_unchanged_workspace_has_no_patch(wsettings: Settings, factory: sessionmaker[Session]) -> None:
    run_id = enqueue(factory, wsettings, **ops("true"))
    drain(factory, wsettings, build_executor(wsettings, factory))
    assert run_row(factory, run_id).status == "done"
    assert not (trace_dir(wsettings, run_id) / "diff.patch").exists()
    assert set(artifacts(factory, run_id)) == {"trace"}


def test_failing_command_fails_the_run_with_its_exit_code(
    wsettings: Settings, factory: sessionmaker[Session]
) -> None:
    run_id = enqueue(factory, wsettings, **ops("echo oops >&2; exit 3"))
    drain(factory, wsettings, build_executor(wsettings, factory))
    run = run_row(factory, run_id)
    assert (run.status, run.error_code) == ("failed", "COMMAND_FAILED")
    assert task_row(factory, run_id).error_code == "COMMAND_FAILED"
    shell = next(s for s in steps(factory, run_id) if s["step_id"] == "shell")
    assert (shell["status"], shell["output"]["exit_code"]) == ("failed", 3)
    assert [s["step_id"] for s in steps(factory, run_id)] == ["checkout", "shell"]  # collect never ran
    folder = trace_dir(wsettings, run_id)
    assert (folder / "steps/2-shell/stderr.log").read_text() == "oops\n"
    assert json.loads((folder / "manifest.json").read_text())["error_code"] == "COMMAND_FAILED"
    assert verify_manifest(wsettings.trace_root, run_id) == []


def test_time_budget_kills_the_command(wsettings: Settings, factory: sessionmaker[Session]) -> None:
    run_id = enqueue(factory, wsettings, **ops("sleep 60", budget=2))
    started = time.monotonic()
    drain(factory, wsettings, build_executor(wsettings, factory))
    assert time.monotonic() - started < 20
    run = run_row(factory, run_id)
    assert (run.status, run.error_code) == ("failed", "TIME_BUDGET_EXCEEDED")
    shell = next(s for s in steps(factory, run_id) if s["step_id"] == "shell")
    assert shell["error_code"] == "TIME_BUDGET_EXCEEDED"
    assert shell["output"]["killed_reason"] == "TIME_BUDGET_EXCEEDED"


def test_other_operations_fail_with_no_executor(wsettings: Settings, factory: sessionmaker[Session]) -> None:
    run_id = enqueue(factory, wsettings, operation="docs", inputs={})
    drain(factory, wsettings, build_executor(wsettings, factory))
    run = run_row(factory, run_id)
    assert (run.status, run.error_code) == ("failed", "NO_EXECUTOR")
    manifest = json.loads((trace_dir(wsettings, run_id) / "manifest.json").read_text())
    assert manifest["error_code"] == "NO_EXECUTOR"


def test_missing_ref_fails_checkout(wsettings: Settings, factory: sessionmaker[Session]) -> None:
    run_id = enqueue(factory, wsettings, target={"repo": "acme/app", "ref": "no-such-branch"}, **ops("true"))
    drain(factory, wsettings, build_executor(wsettings, factory))
    run = run_row(factory, run_id)
    assert (run.status, run.error_code) == ("failed", "CHECKOUT_FAILED")


def test_without_a_sandbox_shell_steps_are_refused(
    wsettings: Settings, factory: sessionmaker[Session]
) -> None:
    executor = RunExecutor(settings=wsettings, factory=factory, sandbox=None, sandbox_info={"tier": "none"})
    run_id = enqueue(factory, wsettings, **ops("echo should-not-run > ran.txt"))
    drain(factory, wsettings, executor)
    run = run_row(factory, run_id)
    assert (run.status, run.error_code) == ("failed", "SANDBOX_UNAVAILABLE")


def test_keep_workspaces_keeps_the_checkout(
    db_url: str, tmp_path: Path, factory: sessionmaker[Session]
) -> None:
    settings = make_settings(
        db_url, tmp_path, git_base_url=make_remote(tmp_path / "remote"), keep_workspaces=True
    )
    run_id = enqueue(factory, settings, **ops("echo kept > kept.txt"))
    drain(factory, settings, build_executor(settings, factory))
    assert (Path(settings.workspace_root) / run_id / "kept.txt").read_text() == "kept\n"


def test_step_rows_say_when_each_step_ran(wsettings: Settings, factory: sessionmaker[Session]) -> None:
    """The step rows are written behind and merged (a begin with its end), yet each says when it ran."""
    from datetime import datetime

    before = datetime.now().astimezone()
    run_id = enqueue(factory, wsettings, **ops("sleep 0.2"))
    drain(factory, wsettings, build_executor(wsettings, factory))
    rows = steps(factory, run_id)
    assert [(s["step_id"], s["status"], s["attempt"]) for s in rows] == [
        ("checkout", "completed", 1),
        ("shell", "completed", 1),
        ("collect", "completed", 1),
    ]
    times = [(datetime.fromisoformat(s["started_at"]), datetime.fromisoformat(s["ended_at"])) for s in rows]
    assert before <= times[0][0] <= times[0][1] <= times[1][0]
    assert (times[1][1] - times[1][0]).total_seconds() >= 0.2  # the shell step's own duration
    assert times[1][1] <= times[2][0] <= times[2][1]
    assert rows[1]["output"]["exit_code"] == 0 and rows[1]["error_code"] is None
    assert run_row(factory, run_id).current_step == "collect"


def test_approval_waits_then_continues_past_it(wsettings: Settings, factory: sessionmaker[Session]) -> None:
    from cwom.audit import Actor

    executor = build_executor(wsettings, factory)
    run_id = enqueue(factory, wsettings, **ops("echo approved > a.txt", approval=True))
    drain(factory, wsettings, executor)
    run = run_row(factory, run_id)
    assert (run.status, run.current_step, run.locked_by) == ("waiting", "approval", None)
    assert [(s["step_id"], s["status"]) for s in steps(factory, run_id)] == [
        ("checkout", "completed"),
        ("approval", "waiting"),
    ]
    assert "approval.waiting" in [e["type"] for e in events(wsettings, run_id)]
    assert json.loads((trace_dir(wsettings, run_id) / "manifest.json").read_text())["status"] == "waiting"

    make_queue(factory, wsettings).resume(run_id, decision="approve", actor=Actor("human", "bob"), note="ok")
    drain(factory, wsettings, executor)
    run = run_row(factory, run_id)
    assert (run.status, run.attempt) == ("done", 2)
    second = [(s["step_id"], s["status"]) for s in steps(factory, run_id) if s["attempt"] == 2]
    assert second == [
        ("checkout", "completed"),
        ("approval", "completed"),
        ("shell", "completed"),
        ("collect", "completed"),
    ]
    decided = [e for e in events(wsettings, run_id) if e["type"] == "approval.decided"]
    assert decided[0]["data"]["by"] == "human:bob"
    assert "+approved" in (trace_dir(wsettings, run_id) / "diff.patch").read_text()
    assert verify_manifest(wsettings.trace_root, run_id) == []


def test_a_stale_claim_writes_nothing(wsettings: Settings, factory: sessionmaker[Session]) -> None:
    queue = make_queue(factory, wsettings)
    run_id = enqueue(factory, wsettings, **ops("echo hi > out.txt"))
    (claim,) = queue.claim("old-worker")
    from cwom.audit import Actor

    queue.cancel(run_id, actor=Actor("human", "alice"), note="changed my mind")
    build_executor(wsettings, factory)(claim, RunControl(queue=queue))
    assert run_row(factory, run_id).status == "cancelled"
    assert steps(factory, run_id) == []
    assert artifacts(factory, run_id) == {}
    # The run was quick: its last write found it cancelled, and the trace says so, sealed again.
    assert events(wsettings, run_id)[-1]["type"] == "run.stopped"
    assert events(wsettings, run_id)[-1]["data"] == {"reason": "cancelled"}
    manifest = json.loads((trace_dir(wsettings, run_id) / "manifest.json").read_text())
    assert manifest["status"] == "cancelled" and verify_manifest(wsettings.trace_root, run_id) == []
    assert not (trace_dir(wsettings, run_id) / "summary.md").exists()


def test_doctrine_requiring_approval_makes_the_run_wait(
    wsettings: Settings, factory: sessionmaker[Session]
) -> None:
    from cwom.tables import DoctrineRefRow, run_doctrine_refs

    run_id = enqueue(factory, wsettings, **ops("echo hi > out.txt"))
    with factory() as session, session.begin():
        ref = DoctrineRefRow(
            namespace="acme/app",
            name=".github/control-tower.yml",
            version="1",
            hash="sha256:x",
            content={"approval_required": ["ops"]},
        )
        session.add(ref)
        session.flush()
        session.execute(run_doctrine_refs.insert().values(run_id=run_id, doctrine_ref_id=ref.id))
    drain(factory, wsettings, build_executor(wsettings, factory))
    assert run_row(factory, run_id).status == "waiting"
    policy = json.loads((trace_dir(wsettings, run_id) / "policy.json").read_text())
    assert policy["approval_required"] is True and policy["approval_reasons"] == ["doctrine:acme/app"]


def test_fenced_step_rows_are_written_only_by_the_claim_that_holds_the_run(
    wsettings: Settings, factory: sessionmaker[Session]
) -> None:
    """Both ways step rows are written (alone, and ahead of other writes in one transaction) prove the
    claim first: a stale attempt writes no row and no current step; the holder writes both."""
    from worker.queue import LostLease
    from worker.step_rows import StepRows

    queue = make_queue(factory, wsettings)
    run_id = enqueue(factory, wsettings, **ops("true"))
    (claim,) = queue.claim("worker-a")
    stale = dataclasses.replace(claim, attempt=claim.attempt + 1)
    pending = StepRows()
    pending.begin(1, "checkout", "checkout")
    rows, current = pending.take()
    with pytest.raises(LostLease):
        with queue.fenced(stale, steps=(rows, current)):
            pass
    if queue.writes_steps_directly:
        with pytest.raises(LostLease):
            queue.write_steps(stale, rows, current)
    assert steps(factory, run_id) == [] and run_row(factory, run_id).current_step is None

    if queue.writes_steps_directly:
        queue.write_steps(claim, rows, current)
    else:
        with queue.fenced(claim, steps=(rows, current)):
            pass
    pending.end(1, "checkout", "checkout", StepStatus.COMPLETED, output={"commit": "abc"})
    pending.begin(2, "shell", "shell")
    rows, current = pending.take()
    with queue.fenced(claim, steps=(rows, current)):
        pass
    stored = steps(factory, run_id)
    assert [(s["n"], s["step_id"], s["status"]) for s in stored] == [
        (1, "checkout", "completed"),
        (2, "shell", "running"),
    ]
    assert stored[0]["output"] == {"commit": "abc"} and stored[0]["started_at"] is not None
    assert stored[0]["ended_at"] is not None and stored[1]["ended_at"] is None
    assert run_row(factory, run_id).current_step == "shell"


def test_runs_through_the_workers_sandbox_spares_leave_nothing_behind(
    db_url: str, tmp_path: Path, factory: sessionmaker[Session]
) -> None:
    """As a worker runs (SANDBOX_SPARES=2): several runs' commands go through spares, their diffs are
    still found, and when the worker stops no cgroup or spare of this process is left."""
    import os

    from worker.sandbox_cgroup import probe_cgroups

    settings = make_settings(
        db_url,
        tmp_path,
        git_base_url=make_remote(tmp_path / "remote"),
        policy_min_time_budget=1,
        sandbox_spares=2,
    )
    changed = enqueue(factory, settings, **ops("echo hi > out.txt"))
    untouched = [enqueue(factory, settings, **ops("true")) for _ in range(3)]
    assert drain(factory, settings, build_executor(settings, factory), concurrency=2) == 4
    assert run_row(factory, changed).status == "done" and set(artifacts(factory, changed)) == {
        "trace",
        "patch",
    }
    for run_id in untouched:
        assert run_row(factory, run_id).status == "done" and set(artifacts(factory, run_id)) == {"trace"}
    manager = probe_cgroups()
    for parent in manager.parents.values() if manager is not None else []:
        assert list(parent.glob(f"run-{os.getpid()}-*")) == []


def test_a_claim_is_loaded_in_one_statement_on_postgresql(
    wsettings: Settings, factory: sessionmaker[Session]
) -> None:
    """The executor's load: the same task, doctrine reasons and times either way; on PostgreSQL one
    round trip (one statement in autocommit, no BEGIN or ROLLBACK)."""
    import psycopg
    from psycopg._connection_base import BaseConnection

    from cwom.tables import DoctrineRefRow, run_doctrine_refs
    from worker import queue_pg

    run_id = enqueue(factory, wsettings, **ops("true"))
    with factory() as session, session.begin():
        for namespace, content in [("acme/app", {"approval_required": ["ops"]}), ("acme/other", {})]:
            ref = DoctrineRefRow(namespace=namespace, name="d", version="1", hash="sha256:x", content=content)
            session.add(ref)
            session.flush()
            session.execute(run_doctrine_refs.insert().values(run_id=run_id, doctrine_ref_id=ref.id))
    queue = make_queue(factory, wsettings)
    (claim,) = queue.claim("loader", limit=1)
    executor = build_executor(wsettings, factory)
    assert isinstance(executor, RunExecutor)
    calls: list[str] = []
    saved = psycopg.Cursor.execute, BaseConnection._exec_command

    def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(query))
        return saved[0](self, query, *args, **kwargs)

    def command(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(command))
        return saved[1](self, command, *args, **kwargs)

    queue.hold_connections()
    try:
        if queue.loads_directly:
            queue.load(claim.run_id)  # the kept connection is made (and set up) by a first statement
        psycopg.Cursor.execute, BaseConnection._exec_command = execute, command  # type: ignore[method-assign]
        try:
            loaded = executor._load(claim, queue)
        finally:
            psycopg.Cursor.execute, BaseConnection._exec_command = saved  # type: ignore[method-assign]
        link, queue._load_link = queue._load_link, None  # the ORM session's path, for comparison
        by_orm = executor._load(claim, queue)
        queue._load_link = link
    finally:
        queue.release_connections()
    if queue.is_postgresql:
        assert calls == [queue_pg.LOAD]  # no BEGIN, no ROLLBACK, no other statement
    assert loaded == by_orm
    assert loaded.task == task_row(factory, run_id).body
    assert loaded.approval_reasons == ["doctrine:acme/app"]
    assert loaded.created_at == run_row(factory, run_id).created_at.isoformat()
    assert loaded.issue_id == run_row(factory, run_id).issue_id


def test_a_step_shows_running_once_it_lasts_and_a_quick_one_writes_with_the_run_end(
    wsettings: Settings, factory: sessionmaker[Session]
) -> None:
    """The write as a longer step starts waits RUNNING_WRITE_DELAY: a step that lasts is shown running
    from then on; a quick one has its rows written with the run's last write (no write of its own)."""
    import threading

    from worker.executor import RUNNING_WRITE_DELAY

    quick = enqueue(factory, wsettings, **ops("true"))
    assert drain(factory, wsettings, build_executor(wsettings, factory)) == 1
    run = run_row(factory, quick)
    assert run.status == "done" and "db_background" not in run.telemetry["timings_ms"]
    assert [(s["step_id"], s["status"]) for s in steps(factory, quick)] == [
        ("checkout", "completed"),
        ("shell", "completed"),
        ("collect", "completed"),
    ]

    slow = enqueue(factory, wsettings, **ops("sleep 1.5"))
    seen: list[tuple[str | None, list[tuple[str, str]]]] = []
    worker = threading.Thread(target=drain, args=(factory, wsettings, build_executor(wsettings, factory)))
    worker.start()
    deadline = time.monotonic() + 10
    while worker.is_alive() and time.monotonic() < deadline:
        current = run_row(factory, slow).current_step
        if current is not None:
            seen.append((current, [(s["step_id"], s["status"]) for s in steps(factory, slow)]))
        time.sleep(0.05)
    worker.join()
    assert ("shell", [("checkout", "completed"), ("shell", "running")]) in seen
    run = run_row(factory, slow)
    assert run.status == "done" and run.telemetry["timings_ms"]["db_background"] > 0
    shell = steps(factory, slow)[1]
    assert shell["status"] == "completed" and shell["output"]["exit_code"] == 0
    assert RUNNING_WRITE_DELAY < 1.5
