"""Escapes attempted inside the sandbox: each is a real attempt that must fail (or be contained) inside."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.sandbox import Sandbox, SandboxLimits, SandboxResult, SandboxUnavailable, probe_sandbox
from worker.sandbox_cgroup import probe_cgroups

FAST = SandboxLimits(wall_seconds=10.0)


@pytest.fixture(scope="module", params=[0, 2], ids=["direct", "spares"])
def box(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """bwrap as probed, starting each command directly, and as the worker runs it: with spares (each
    escape below is tried through a spare too; a spare's cgroup limits are rewritten per command)."""
    try:
        sandbox = probe_sandbox("bwrap", spares=request.param)
    except SandboxUnavailable as exc:
        pytest.skip(f"bubblewrap cannot run on this host: {exc.message}")
    yield sandbox
    sandbox.close()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


def sh(
    box: Sandbox,
    ws: Path,
    script: str,
    limits: SandboxLimits = FAST,
    *,
    cancel: threading.Event | None = None,
    stdout_path: Path | None = None,
    stderr_path: Path | None = None,
) -> SandboxResult:
    return box.run(
        ["sh", "-c", script],
        workspace=ws,
        limits=limits,
        cancel=cancel,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
    )


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains marker (a process left behind by a sandboxed run)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry.name))
    return found


def test_loopback_postgres_is_unreachable(box: Sandbox, ws: Path) -> None:
    with socket.create_connection(("127.0.0.1", 5432), timeout=2):
        pass  # the host reaches PostgreSQL, so a failure inside proves the network namespace
    probe = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', 5432), timeout=2); print('CONNECTED')\n"
        "except OSError as e:\n"
        "    print('refused', e)\n"
    )
    result = box.run(["python3", "-c", probe], workspace=ws, limits=FAST)
    assert result.exit_code == 0 and result.stdout.startswith(b"refused"), result


def test_network_is_shared_only_when_allowed(box: Sandbox, ws: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        accepted: list[bytes] = []

        def accept() -> None:
            server.settimeout(5)
            conn, _ = server.accept()
            with conn:
                accepted.append(conn.recv(16))

        thread = threading.Thread(target=accept)
        thread.start()
        code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hello')"
        denied = box.run(["python3", "-c", code], workspace=ws, limits=FAST)
        allowed = box.run(["python3", "-c", code], workspace=ws, limits=FAST, allow_network=True)
        thread.join(5)
    assert denied.exit_code != 0 and b"ConnectionRefusedError" in denied.stderr
    assert allowed.exit_code == 0, allowed
    assert accepted == [b"hello"]


def test_writes_outside_the_workspace_fail_inside_succeed(box: Sandbox, ws: Path, tmp_path: Path) -> None:
    # A sibling of the workspace under /tmp lands in the sandbox's private tmpfs, never on the host;
    # a host directory outside /tmp is on the read-only root.
    sibling = tmp_path / "outside.txt"
    host_dir = Path("/var/tmp") / f"ct-sandbox-{os.getpid()}"
    host_dir.mkdir(exist_ok=True)
    try:
        result = sh(
            box,
            ws,
            f"echo x > /etc/ct-escape; echo x > {sibling}; echo x > /usr/ct; "
            f"echo x > {host_dir}/escape; echo ok > inside.txt",
        )
        assert not (host_dir / "escape").exists()
    finally:
        host_dir.rmdir()
    assert result.exit_code == 0
    assert not Path("/etc/ct-escape").exists() and not sibling.exists() and not Path("/usr/ct").exists()
    # /etc and /usr are read-only; the host directory under /var/tmp is not even there (private tmpfs).
    assert result.stderr.count(b"Read-only file system") == 2, result.stderr
    assert b"escape: Directory nonexistent" in result.stderr or b"No such file" in result.stderr
    assert (ws / "inside.txt").read_text() == "ok\n"


def test_private_tmp_and_cwd(box: Sandbox, ws: Path) -> None:
    marker = Path("/tmp/ct-sandbox-host-marker")  # the host's /tmp, hidden inside
    marker.write_text("host")
    try:
        result = sh(box, ws, "pwd; id -u; ls /tmp; echo t > /tmp/scratch && cat /tmp/scratch")
    finally:
        marker.unlink()
    lines = result.stdout.decode().splitlines()
    assert lines[0] == str(ws.resolve()) and lines[1] == "1000"
    assert "ct-sandbox-host-marker" not in result.stdout.decode() and lines[-1] == "t"


def test_worker_secret_is_not_visible(box: Sandbox, ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_secretTOKENvalue123")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secretKEY")
    result = box.run(["env"], workspace=ws, limits=FAST, env={"CALLER_VAR": "given"})
    seen = result.stdout.decode()
    assert "ghs_secret" not in seen and "sk-ant-secret" not in seen and "GITHUB_TOKEN" not in seen
    assert "CALLER_VAR=given" in seen and "PATH=" in seen
    every = sh(box, ws, "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c ghs_ || true")
    assert every.stdout.strip() == b"0"


def test_pids_limit_contains_a_fork_bomb(box: Sandbox, ws: Path) -> None:
    counter = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    while n < 1000:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30); os._exit(0)\n"
        "        n += 1\n"
        "except OSError:\n"
        "    pass\n"
        "print(n)\n"
    )
    limits = SandboxLimits(wall_seconds=10, pids=32)
    counted = box.run(["python3", "-c", "# ct-forkcount\n" + counter], workspace=ws, limits=limits)
    assert counted.exit_code == 0 and 0 < int(counted.stdout) < 32, counted
    bomb = sh(
        box, ws, "ctbomb() { ctbomb | ctbomb & }; ctbomb; sleep 5", SandboxLimits(wall_seconds=1.5, pids=64)
    )
    assert b"Cannot fork" in bomb.stderr and bomb.duration_s < 5  # the pids limit bit, promptly
    assert subprocess.run(["true"], check=False).returncode == 0  # the host still forks
    assert processes_with("ctbomb") == [] and processes_with("ct-forkcount") == []


def test_memory_limit_stops_a_2gib_allocation(box: Sandbox, ws: Path) -> None:
    result = box.run(
        ["python3", "-c", "b = b'x' * (2 << 30); print('ALLOCATED')"],
        workspace=ws,
        limits=SandboxLimits(wall_seconds=20, memory_bytes=256 << 20),
    )
    assert b"ALLOCATED" not in result.stdout and result.exit_code != 0
    if box.describe()["memory"] == "cgroup":
        assert result.killed_reason == "MEMORY_LIMIT"


def test_wall_clock_kills_the_whole_tree(box: Sandbox, ws: Path) -> None:
    started = time.monotonic()
    result = sh(box, ws, "(setsid sleep 4242 &) ; sleep 30", SandboxLimits(wall_seconds=1))
    elapsed = time.monotonic() - started
    assert result.timed_out and result.killed_reason == "TIME_BUDGET_EXCEEDED" and result.exit_code is None
    assert 0.9 < elapsed < 2.5
    assert processes_with("4242") == []


def test_cancel_kills_the_whole_tree(box: Sandbox, ws: Path) -> None:
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    result = sh(box, ws, "(setsid sleep 4343 &) ; sleep 4344", SandboxLimits(wall_seconds=20), cancel=cancel)
    assert result.cancelled and result.killed_reason == "CANCELLED" and not result.timed_out
    assert result.duration_s < 2
    assert processes_with("4343") == [] and processes_with("4344") == []


def test_output_is_capped_while_streaming(box: Sandbox, ws: Path, tmp_path: Path) -> None:
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    result = sh(
        box,
        ws,
        "head -c 10485760 /dev/zero; echo small >&2",
        SandboxLimits(wall_seconds=10, output_bytes=1 << 20),
        stdout_path=out,
        stderr_path=err,
    )
    assert result.exit_code == 0 and result.truncated and result.killed_reason is None
    assert result.stdout_bytes_total == 10 << 20 and len(result.stdout) == 1 << 20
    assert out.stat().st_size == 1 << 20 and err.read_bytes() == b"small\n"
    assert result.stderr_bytes_total == 6


def test_git_dir_is_read_only(box: Sandbox, ws: Path) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q", str(ws)], check=True)
    subprocess.run([*git, "-C", str(ws), "commit", "-q", "--allow-empty", "-m", "base"], check=True)
    rev = ["git", "-C", str(ws), "rev-parse", "HEAD"]
    head = subprocess.run(rev, capture_output=True, check=True).stdout
    who = "git -c user.name=x -c user.email=x@example.invalid"
    result = sh(box, ws, f"echo new > file.txt && {who} add file.txt; {who} commit -qm escape; echo rc=$?")
    assert (ws / "file.txt").read_text() == "new\n"
    assert b"Read-only file system" in result.stderr and b"rc=0" not in result.stdout
    after = subprocess.run(rev, capture_output=True, check=True).stdout
    assert after == head


def test_file_size_rlimit(box: Sandbox, ws: Path) -> None:
    result = sh(box, ws, "head -c 3000000 /dev/zero > big.bin", SandboxLimits(file_size_bytes=1 << 20))
    assert result.exit_code != 0 and (ws / "big.bin").stat().st_size == 1 << 20


def test_limits_hold_from_the_first_instruction(box: Sandbox, ws: Path) -> None:
    """The trampoline sets rlimits and joins the run's cgroup before bwrap runs, so the namespaces bwrap
    creates (the cgroup namespace included) start inside the run's own cgroup."""
    limits = SandboxLimits(wall_seconds=10, open_files=77, file_size_bytes=3 << 20)
    result = sh(box, ws, "ulimit -n; ulimit -c; ulimit -f; cat /proc/self/cgroup", limits)
    lines = result.stdout.decode().splitlines()
    assert lines[:3] == ["77", "0", str((3 << 20) // 512)], result
    if box.describe()["cgroup"] is not None:
        assert lines[3:] and all(line.endswith(":/") for line in lines[3:]), lines


def test_a_cgroup_that_cannot_be_joined_means_nothing_runs(ws: Path) -> None:
    """Fail closed: when the trampoline cannot join the run's cgroup, the command is never executed."""
    from worker.sandbox import BwrapSandbox, NoSandbox, SandboxUnavailable
    from worker.sandbox_cgroup import CgroupManager, RunCgroup

    class Unjoinable(CgroupManager):
        def create(self, *, memory_bytes: int, pids: int, cpu_cores: float) -> RunCgroup:
            return RunCgroup(1, [], None, [str(ws / "no-such-dir" / "cgroup.procs")])

    manager = Unjoinable(1, {}, "nowhere")
    bwrap = shutil.which("bwrap")
    tiers: list[Sandbox] = [NoSandbox(manager), *([BwrapSandbox(bwrap, manager)] if bwrap else [])]
    for tier in tiers:
        with pytest.raises(SandboxUnavailable):
            tier.run(["sh", "-c", "echo ran > ran.txt"], workspace=ws, limits=FAST)
        assert not (ws / "ran.txt").exists()


def test_stdin_is_passed(box: Sandbox, ws: Path) -> None:
    result = box.run(["cat"], workspace=ws, limits=FAST, stdin=b"fed in")
    assert result.stdout == b"fed in"


def test_none_tier_clears_env_and_kills_group(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_secretNONE")
    plain = probe_sandbox("none")
    assert plain.tier == "none"
    result = plain.run(
        ["sh", "-c", "env; sleep 4545 & sleep 30"], workspace=ws, limits=SandboxLimits(wall_seconds=1)
    )
    assert b"ghs_secret" not in result.stdout and result.killed_reason == "TIME_BUDGET_EXCEEDED"
    assert processes_with("4545") == []


def test_a_spare_runs_the_exact_argv_and_environment(box: Sandbox, ws: Path) -> None:
    """The spare's launcher hands over every argument byte for byte (quotes, newlines, `$`, `=`,
    backslashes, an empty one) and leaves nothing of its own in the environment."""
    argv = ["sh", "-c", 'for a in "$@"; do printf "<%s>" "$a"; done; echo; echo =ENV=; env', "zero"]
    odd = ["it's", 'say "hi"', "two\nlines", "$HOME `id` $(id)", "a=b", "back\\slash", "", "-- --x"]
    env = {"CALLER_VAR": "x y\nz"}
    for _ in range(3):  # the first may start directly; the later ones through a spare when there are
        result = box.run([*argv, *odd], workspace=ws, limits=FAST, env=env)
        assert result.exit_code == 0, result
        first, _, rest = result.stdout.decode().partition("\n=ENV=\n")
        assert first == "".join(f"<{a}>" for a in odd)
        names = sorted(line.split("=", 1)[0] for line in rest.splitlines() if "=" in line.split(" ")[0])
        assert names == ["CALLER_VAR", "HOME", "LANG", "PATH", "PWD"], rest
        assert "CALLER_VAR=x y\nz" in rest
        time.sleep(0.1)


def test_spares_are_used_and_closed(ws: Path) -> None:
    """A worker's sandbox keeps its spares ready between commands, each its own cgroup and bwrap
    blocked before any namespace; close() kills them and removes every cgroup."""
    try:
        box = probe_sandbox("bwrap", spares=2)
    except SandboxUnavailable as exc:
        pytest.skip(f"bubblewrap cannot run on this host: {exc.message}")
    if box.describe()["cgroup"] is None:
        box.close()
        pytest.skip("no cgroups: spares are not used")
    assert box.describe()["spares"] == 2
    first = box.run(["true"], workspace=ws, limits=FAST)
    deadline = time.monotonic() + 10
    while len(processes_with("--args")) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    waiting = processes_with("--args")
    assert first.exit_code == 0 and len(waiting) >= 2
    second = box.run(["sh", "-c", "echo via spare"], workspace=ws, limits=FAST)
    assert second.exit_code == 0 and second.stdout == b"via spare\n"
    box.close()
    assert [p for p in processes_with("--args") if p in waiting] == []


def test_landlock_tier_is_refused() -> None:
    with pytest.raises(SandboxUnavailable) as info:
        probe_sandbox("landlock")
    assert info.value.code == "SANDBOX_UNAVAILABLE"


@pytest.fixture(autouse=True)
def _no_leftover_cgroups(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "box" in request.fixturenames:
        # Spares hold cgroups for the next commands, and finished commands' cgroups go in the
        # background: closing the sandbox removes them all, so whatever is left outlived its run.
        request.getfixturevalue("box").close()
    manager = probe_cgroups()
    for parent in manager.parents.values() if manager is not None else []:
        assert list(parent.glob(f"run-{os.getpid()}-*")) == [], "a run cgroup outlived its run"
