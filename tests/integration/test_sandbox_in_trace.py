"""Escapes attempted from an ops run: each must fail inside the sandbox and be visible in the run's trace."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from control_tower.settings import Settings
from tests.conftest import make_settings
from tests.support.runs import drain, enqueue, make_remote, ops, run_row, steps
from worker.executor import build_executor
from worker.trace import read_trace, verify_manifest


@pytest.fixture
def wsettings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path, git_base_url=make_remote(tmp_path / "remote"))


def run_ops(settings: Settings, factory: sessionmaker[Session], command: str) -> tuple[str, str, str]:
    """Run one ops command to the end; returns (run_id, stdout.log, stderr.log) from its trace."""
    run_id = enqueue(factory, settings, **ops(command))
    drain(factory, settings, build_executor(settings, factory))
    trace = read_trace(settings.trace_root, run_id, tail_bytes=1 << 16)
    shell = next(s for s in trace.steps if s.step_id == "shell")
    assert trace.manifest is not None and trace.manifest["sandbox"]["tier"] not in (None, "none")
    assert verify_manifest(settings.trace_root, run_id) == []
    return run_id, shell.stdout_tail, shell.stderr_tail


def remote_log(tmp_path: Path) -> str:
    """The one-line log of the remote's main branch (what a sandboxed commit must not reach)."""
    return subprocess.run(
        ["git", f"--git-dir={tmp_path / 'remote/acme/app.git'}", "log", "--oneline", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_loopback_database_port_is_unreachable(wsettings: Settings, factory: sessionmaker[Session]) -> None:
    # The host can reach PostgreSQL on 5432 (the tests use it) ...
    with socket.create_connection(("127.0.0.1", 5432), timeout=2):
        pass
    # ... the sandboxed step, in its own network namespace, cannot.
    script = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', 5432), timeout=2)\n"
        "    print('CONNECTED')\n"
        "except OSError as e:\n"
        "    print('refused:', e)\n"
        "    raise SystemExit(7)\n"
    )
    run_id, out, _ = run_ops(wsettings, factory, f'python3 -c "{script}"')
    assert "CONNECTED" not in out and "refused:" in out
    run = run_row(factory, run_id)
    assert (run.status, run.error_code) == ("failed", "COMMAND_FAILED")
    assert steps(factory, run_id)[1]["output"]["exit_code"] == 7


def test_writes_outside_the_workspace_fail(
    wsettings: Settings, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    command = f"echo pwned > /etc/ct-escape; echo pwned > {outside}; echo end"
    run_id, out, err = run_ops(wsettings, factory, command)
    assert not Path("/etc/ct-escape").exists() and not outside.exists()
    assert "/etc/ct-escape" in err and out == "end\n"
    assert run_row(factory, run_id).status == "done"  # the last command succeeded; the writes did not


def test_the_worker_token_is_not_visible(
    wsettings: Settings, factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "ghp_" + "S3cr3t" * 6
    monkeypatch.setenv("GITHUB_TOKEN", token)
    command = (
        'echo "length ${#GITHUB_TOKEN} ${GITHUB_TOKEN+set}"; env | grep -c GITHUB || true;'
        " cat /proc/*/environ 2>/dev/null | grep -ac ghp_ || true"
    )
    run_id, out, _ = run_ops(wsettings, factory, command)
    assert out.splitlines() == ["length 0 ", "0", "0"]
    folder = Path(wsettings.trace_root) / run_id
    assert all(token not in p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def test_git_commit_inside_the_sandbox_fails(
    wsettings: Settings, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    command = (
        "echo change > new.txt && git -c user.name=x -c user.email=x@example.com add new.txt"
        " && git -c user.name=x -c user.email=x@example.com commit -m sneaky"
    )
    run_id, _, err = run_ops(wsettings, factory, command)
    run = run_row(factory, run_id)
    assert (run.status, run.error_code) == ("failed", "COMMAND_FAILED")
    assert "Read-only file system" in err or "read-only" in err.lower()
    assert "sneaky" not in remote_log(tmp_path)
    lines = (Path(wsettings.trace_root) / run_id / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    finished = next(e for e in events if e["type"] == "command.finished")
    assert finished["data"]["exit_code"] != 0 and "ead-only" in finished["data"]["stderr_tail"]


def test_ten_mib_of_output_is_capped_not_stored_whole(
    wsettings: Settings, factory: sessionmaker[Session]
) -> None:
    run_id, _, _ = run_ops(wsettings, factory, "head -c 10485760 /dev/zero | tr '\\0' a; echo")
    shell = next(s for s in steps(factory, run_id) if s["step_id"] == "shell")
    assert shell["output"]["stdout_bytes"] == 10 * 1024 * 1024 + 1
    assert shell["output"]["truncated"] is True
    log = Path(wsettings.trace_root) / run_id / "steps/2-shell/stdout.log"
    assert 0 < log.stat().st_size <= 1 << 20


def test_a_key_file_the_worker_holds_is_not_readable(
    wsettings: Settings, factory: sessionmaker[Session]
) -> None:
    # Outside /tmp, /root, /run, /home (tmpfs in the sandbox), like a real GITHUB_APP_PRIVATE_KEY_PATH.
    folder = Path(tempfile.mkdtemp(prefix="ct-key-", dir="/var/tmp"))
    key = folder / "app-key.pem"
    key.write_text("KEY-MATERIAL-ONLY-THE-WORKER-MAY-READ\n")
    key.chmod(0o600)
    try:
        _, out, _ = run_ops(wsettings, factory, f"cat {key} || echo unreadable")
    finally:
        shutil.rmtree(folder)
    assert out == "unreadable\n"


def test_a_workspace_written_without_git_keeps_git_read_only_inside_the_sandbox(
    wsettings: Settings, factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second run of a commit gets its work tree from `checkout.Trees`: git works inside the
    sandbox (status reads the index it wrote) but cannot write `.git`."""
    from worker import checkout as co

    trees = co.Trees()
    monkeypatch.setattr(co, "TREES", trees)
    run_ops(wsettings, factory, "true")
    assert trees.hits == 0
    command = (
        "git status --porcelain && echo STATUS-OK && echo change > new.txt"
        " && git -c user.name=x -c user.email=x@example.com add new.txt"
        " && git -c user.name=x -c user.email=x@example.com commit -m sneaky"
    )
    run_id, out, err = run_ops(wsettings, factory, command)
    assert trees.hits == 1
    assert out.splitlines() == ["STATUS-OK"]  # nothing changed, as git sees it from the written index
    assert (run_row(factory, run_id).status, run_row(factory, run_id).error_code) == (
        "failed",
        "COMMAND_FAILED",
    )
    assert "read-only" in err.lower()
    assert "sneaky" not in remote_log(tmp_path)
