"""The worker's sandbox: bubblewrap (tier A) or an explicit, unconfined "none" tier, behind one interface.

Decisions recorded here because callers depend on them:
- The workspace is bind-mounted read-write at its own host path and is the command's cwd; its `.git`
  (when present) is re-bound read-only on top.
- Output beyond `output_bytes` per stream is dropped and counted; the process keeps running (only the
  wall clock or cancel stops it), so `truncated` is set but `killed_reason` stays None for that.
- Landlock (tier B) is not built: "landlock" and an "auto" probe without bwrap raise SandboxUnavailable.
- bwrap runs with --unshare-pid, so when its pid 1 dies the kernel kills everything in the namespace;
  on top, the process group and the run's cgroup are SIGKILLed after every run, clean exit or not.
- Without cgroups, memory falls back to RLIMIT_AS; RLIMIT_NPROC is set but is a no-op for a worker
  running as root (bwrap maps uid 1000 back to host uid 0, which the kernel exempts). describe() says so.
- Cost (2 cores, cgroup v1, a worker of ~110 MB): ~9 ms of wall and ~5 ms of CPU per `true`, most of it
  bwrap's namespace setup and teardown. The command is spawned with vfork through a /bin/sh trampoline
  (TRAMPOLINE) rather than with a preexec_fn, which forked the whole worker (~5 ms of CPU more); the
  output pipes and the exit are waited for in one poll loop, without reader threads.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import resource
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from control_tower.logs import get_logger
from policy.errors import ControlTowerError
from worker.sandbox_cgroup import CgroupManager, RunCgroup, probe_cgroups

log = get_logger(__name__)
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}  # noqa: S108
SANDBOX_UID = 1000
CHUNK = 65536


class SandboxUnavailable(ControlTowerError):
    """No sandbox tier works on this host."""

    code = "SANDBOX_UNAVAILABLE"
    http_status = 503


@dataclass(frozen=True)
class SandboxLimits:
    """What one command may use."""

    wall_seconds: float = 900.0
    memory_bytes: int = 1 << 30
    pids: int = 256
    cpu_cores: float = 1.0
    output_bytes: int = 1 << 20  # per stream; the rest is dropped and counted, the process keeps running
    file_size_bytes: int = 256 << 20
    open_files: int = 1024


@dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed command did."""

    exit_code: int | None
    stdout: bytes
    stderr: bytes
    stdout_bytes_total: int
    stderr_bytes_total: int
    truncated: bool
    timed_out: bool
    cancelled: bool
    killed_reason: str | None  # TIME_BUDGET_EXCEEDED | CANCELLED | MEMORY_LIMIT | OUTPUT_LIMIT | None
    duration_s: float
    tier: str

    @property
    def stdout_bytes(self) -> int:
        """Alias of stdout_bytes_total (the step code's name)."""
        return self.stdout_bytes_total

    @property
    def stderr_bytes(self) -> int:
        """Alias of stderr_bytes_total."""
        return self.stderr_bytes_total


class Sandbox(Protocol):
    """Runs one argv confined; the worker calls only this."""

    tier: str
    available: bool

    def describe(self) -> dict[str, object]: ...

    def close(self) -> None: ...

    def run(
        self,
        argv: Sequence[str],
        *,
        workspace: Path,
        limits: SandboxLimits,
        allow_network: bool = False,
        env: Mapping[str, str] | None = None,
        cancel: threading.Event | None = None,
        stdout_path: Path | None = None,
        stderr_path: Path | None = None,
        stdin: bytes | None = None,
    ) -> SandboxResult: ...


@dataclass(frozen=True)
class _Job:
    """One command as `run` was given it (the workspace resolved, the environment complete)."""

    argv: Sequence[str]
    workspace: Path
    limits: SandboxLimits
    allow_network: bool
    env: Mapping[str, str]
    stdin: bytes | None


class _Capture:
    """One output pipe, read by the waiting thread: keeps and writes at most `cap` bytes, counts all."""

    def __init__(self, pipe: IO[bytes], cap: int, path: Path | None) -> None:
        self.pipe, self.fd, self.cap = pipe, pipe.fileno(), cap
        self.sink = path.open("wb") if path is not None else None
        self.kept = bytearray()
        self.total = 0
        self.open = True
        os.set_blocking(self.fd, False)

    def read(self) -> None:
        """Take one chunk the pipe holds now (one per wake-up, so a flood cannot starve the clock)."""
        try:
            chunk = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            self.close()
            return
        self.total += len(chunk)
        room = self.cap - len(self.kept)
        if room > 0:
            piece = chunk[:room]
            self.kept += piece
            if self.sink is not None:
                self.sink.write(piece)
                self.sink.flush()

    def close(self) -> None:
        if self.open:
            self.open = False
            if self.sink is not None:
                self.sink.close()
            self.pipe.close()


def _pump(
    pidfd: int, streams: Sequence[_Capture], deadline: float, cancel: threading.Event | None
) -> str | None:
    """Read output until the process exits (None), the deadline passes or cancel is set (the reason).

    One thread and one poll set: the pidfd wakes us the moment the process exits, the pipes as output
    arrives, and the 50 ms bound keeps cancel responsive.
    """
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    by_fd = {s.fd: s for s in streams}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    while True:
        remaining = deadline - time.monotonic()
        for fd, _ in poller.poll(max(0, int(min(remaining, 0.05) * 1000))) if remaining > 0 else ():
            if fd == pidfd:
                return None
            stream = by_fd[fd]
            stream.read()
            if not stream.open:
                poller.unregister(fd)
        if cancel is not None and cancel.is_set():
            return "CANCELLED"
        if deadline - time.monotonic() <= 0:
            return "TIME_BUDGET_EXCEEDED"


def _drain(streams: Sequence[_Capture], timeout: float) -> None:
    """After the kill: the rest of the output, until every pipe is at EOF (or `timeout`)."""
    end = time.monotonic() + timeout
    poller = select.poll()
    by_fd = {s.fd: s for s in streams if s.open}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    while by_fd and (left := end - time.monotonic()) > 0:
        for fd, _ in poller.poll(max(1, int(left * 1000))):
            by_fd[fd].read()
            if not by_fd[fd].open:
                poller.unregister(fd)
                del by_fd[fd]
    for stream in streams:
        stream.close()


# Run by /bin/sh between the worker and the command: rlimits, then this process joins the run's cgroup
# (writing "0" moves the writer), then exec. Everything the command starts is confined from its first
# instruction, as with a preexec_fn, but Python can spawn the shell with vfork: a preexec_fn makes it
# fork a copy of the worker (page tables of ~100 MB, then a copy-on-write fault on every page the worker
# touches next), ~5 ms of CPU per command. Values come as arguments; the script itself is constant.
TRAMPOLINE = (
    'ulimit -c 0 && ulimit -f "$1" && ulimit -n "$2" && shift 2 && '
    'while [ "$1" != -- ]; do echo 0 > "$1" || break; shift; done && [ "$1" = -- ] && shift && exec "$@"; '
    'echo "$0: limits not applied, command not run" >&2; exit 125'
)
TRAMPOLINE_NAME = "control-tower-sandbox"


def _launcher(
    cmd: list[str], limits: SandboxLimits, cgroup: RunCgroup | None
) -> tuple[list[str], Callable[[], None] | None]:
    """(argv, preexec_fn) that start `cmd` inside the run's cgroup and rlimits.

    With a cgroup: the /bin/sh trampoline above (RLIMIT_FSIZE in 512-byte blocks, rounded down). Without
    one, memory and processes fall back to RLIMIT_AS and RLIMIT_NPROC, which the shell's `ulimit` cannot
    set portably, so a preexec_fn sets every rlimit instead.
    """
    if cgroup is not None:
        blocks = str(limits.file_size_bytes // 512)
        argv = ["/bin/sh", "-c", TRAMPOLINE, TRAMPOLINE_NAME, blocks, str(limits.open_files)]
        return [*argv, *cgroup.procs_files, "--", *cmd], None

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.pids, limits.pids))

    return cmd, apply


class _Runner:
    """What both tiers share: cgroup, rlimits, env, streaming capture, timeout and cancel."""

    tier = "none"
    available = True

    def __init__(self, cgroups: CgroupManager | None) -> None:
        self.cgroups = cgroups

    def mechanisms(self) -> dict[str, object]:
        """Which limits are real on this host."""
        as_root = os.geteuid() == 0
        return {
            "cgroup": self.cgroups.describe() if self.cgroups is not None else None,
            "memory": "cgroup" if self.cgroups is not None else "rlimit_as",
            # RLIMIT_NPROC counts per host uid and is never enforced for uid 0 (bwrap maps uid 1000 to us).
            "pids": "cgroup"
            if self.cgroups is not None
            else ("none (RLIMIT_NPROC is ignored for root)" if as_root else "rlimit_nproc"),
            "cpu": "cgroup" if self.cgroups is not None else "none",
            "rlimits": ["RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CORE=0"],
            "kill": self.kill_mechanism(),
            "output_over_cap": "dropped and counted, process keeps running",
        }

    def kill_mechanism(self) -> str:
        """How the whole tree is killed (a setsid'd descendant escapes a bare process-group kill)."""
        return "process group + cgroup" if self.cgroups is not None else "process group only"

    def describe(self) -> dict[str, object]:
        """The tier and its mechanisms, written into every trace."""
        return {"tier": self.tier, "available": self.available, **self.mechanisms()}

    def command(
        self, argv: Sequence[str], workspace: Path, allow_network: bool, env: Mapping[str, str]
    ) -> tuple[list[str], dict[str, str]]:
        """(argv to exec, environment to exec it with)."""
        return list(argv), dict(env)

    def run(
        self,
        argv: Sequence[str],
        *,
        workspace: Path,
        limits: SandboxLimits,
        allow_network: bool = False,
        env: Mapping[str, str] | None = None,
        cancel: threading.Event | None = None,
        stdout_path: Path | None = None,
        stderr_path: Path | None = None,
        stdin: bytes | None = None,
    ) -> SandboxResult:
        """Run argv in the workspace under the limits; never raises for what the command does."""
        started = time.monotonic()
        workspace = workspace.resolve()
        full_env = {**BASE_ENV, **(env or {})}
        job = _Job(argv, workspace, limits, allow_network, full_env, stdin)
        proc, cgroup, trampoline = self._start(job)
        assert proc.stdout is not None and proc.stderr is not None
        out = _Capture(proc.stdout, limits.output_bytes, stdout_path)
        err = _Capture(proc.stderr, limits.output_bytes, stderr_path)
        if stdin is not None and proc.stdin is not None:
            threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True).start()
        pidfd = os.pidfd_open(proc.pid)
        try:
            reason = _pump(pidfd, (out, err), started + limits.wall_seconds, cancel)
        finally:
            os.close(pidfd)
            # Always, even after a clean exit: background children left behind must not outlive the
            # command. The process is not reaped yet, so its process group id cannot have been reused.
            self._kill_tree(proc, cgroup)
            _drain((out, err), 5.0)
        if reason is None and cgroup is not None and cgroup.oom_killed():
            reason = "MEMORY_LIMIT"
        if cgroup is not None:
            self._retire(cgroup)
        if proc.returncode == 125 and trampoline and err.kept.startswith(TRAMPOLINE_NAME.encode()):
            raise SandboxUnavailable(message="the run's cgroup or rlimits could not be applied; not run")
        return SandboxResult(
            exit_code=proc.returncode if reason is None or reason == "MEMORY_LIMIT" else None,
            stdout=bytes(out.kept),
            stderr=bytes(err.kept),
            stdout_bytes_total=out.total,
            stderr_bytes_total=err.total,
            truncated=out.total > len(out.kept) or err.total > len(err.kept),
            timed_out=reason == "TIME_BUDGET_EXCEEDED",
            cancelled=reason == "CANCELLED",
            killed_reason=reason,
            duration_s=time.monotonic() - started,
            tier=self.tier,
        )

    def _start(self, job: _Job) -> tuple[subprocess.Popen[bytes], RunCgroup | None, bool]:
        """The command started in a fresh cgroup: (process, cgroup, whether the trampoline started it)."""
        argv, workspace, limits, stdin = job.argv, job.workspace, job.limits, job.stdin
        cmd, exec_env = self.command(argv, workspace, job.allow_network, job.env)
        cgroup = (
            self.cgroups.create(
                memory_bytes=limits.memory_bytes, pids=limits.pids, cpu_cores=limits.cpu_cores
            )
            if self.cgroups is not None
            else None
        )
        launch, preexec = _launcher(cmd, limits, cgroup)
        try:
            proc = subprocess.Popen(
                launch,
                cwd=workspace,
                env=exec_env,
                start_new_session=True,
                close_fds=True,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                preexec_fn=preexec,
            )
        except BaseException:
            if cgroup is not None:
                cgroup.destroy()
            raise
        return proc, cgroup, preexec is None

    def _retire(self, cgroup: RunCgroup) -> None:
        """Remove a finished command's cgroup (empty already: `_kill_tree` waited for that)."""
        cgroup.destroy()

    def close(self) -> None:
        """Release what the sandbox keeps between commands (nothing, but for bwrap's spares)."""

    @staticmethod
    def _kill_tree(proc: subprocess.Popen[bytes], cgroup: RunCgroup | None) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if cgroup is not None:
            cgroup.kill_all()
        proc.wait()


def _feed(pipe: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.write(data)
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.close()


class NoSandbox(_Runner):
    """Tier "none": a plain process group with a cleared env, limits and caps. Explicit opt-in only."""

    tier = "none"


class BwrapSandbox(_Runner):
    """Tier A: bubblewrap with every namespace unshared, uid 1000, no capabilities, read-only root."""

    tier = "bwrap"

    def __init__(self, bwrap: str, cgroups: CgroupManager | None, *, spares: int = 0) -> None:
        super().__init__(cgroups)
        self.bwrap = bwrap
        # Spares only pay with a cgroup to join (see _Spare); without one there is nothing to prepare.
        self._spares = _Spares(self, spares) if cgroups is not None and spares > 0 else None

    def kill_mechanism(self) -> str:
        """bwrap's pid namespace dies with its pid 1, so nothing inside outlives the run."""
        return "pid namespace + " + super().kill_mechanism()

    def describe(self) -> dict[str, object]:
        """The tier, its namespaces and mounts, and the limit mechanisms."""
        return {
            **super().describe(),
            "bwrap": self.bwrap,
            "namespaces": "all unshared (user, pid, net unless allowed, ipc, uts, cgroup, mount)",
            "uid": SANDBOX_UID,
            "capabilities": "none",
            "filesystem": (
                "system dirs only, read-only (" + " ".join(SYSTEM_DIRS) + "); host secrets in /etc hidden; "
                "tmpfs /tmp /root /run /home /var/tmp; workspace rw at its host path; .git ro; "
                "nothing else of the host (no other workspaces, traces, keys, databases)"
            ),
            "spares": self._spares.count if self._spares is not None else 0,
        }

    def command(
        self, argv: Sequence[str], workspace: Path, allow_network: bool, env: Mapping[str, str]
    ) -> tuple[list[str], dict[str, str]]:
        """The bwrap command line; bwrap itself gets an empty environment too."""
        return [self.bwrap, *self.options(workspace, allow_network, env), "--", *argv], {}

    def options(self, workspace: Path, allow_network: bool, env: Mapping[str, str]) -> list[str]:
        """bwrap's options for one command: namespaces, mounts, working directory, environment."""
        ws = str(workspace)
        cmd = [
            "--unshare-all",
            "--unshare-user",
            "--uid",
            str(SANDBOX_UID),
            "--gid",
            str(SANDBOX_UID),
            "--cap-drop",
            "ALL",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
        ]
        if allow_network:
            cmd.append("--share-net")
        cmd += system_mounts()
        cmd += ["--proc", "/proc", "--dev", "/dev"]
        for tmp in ("/tmp", "/root", "/run", "/home", "/var/tmp"):  # noqa: S108 - fresh private tmpfs mounts
            cmd += ["--tmpfs", tmp]
        cmd += ["--bind", ws, ws]
        git = workspace / ".git"
        if git.exists():
            cmd += ["--ro-bind", str(git), str(git)]
        cmd += ["--chdir", ws]
        for key, value in env.items():
            cmd += ["--setenv", key, value]
        return cmd

    def _start(self, job: _Job) -> tuple[subprocess.Popen[bytes], RunCgroup | None, bool]:
        spare = self._spares.take(job.limits) if self._spares is not None and job.stdin is None else None
        if spare is not None:
            if spare.launch(self.options(job.workspace, job.allow_network, job.env), job.argv, job.limits):
                return spare.proc, spare.cgroup, True
            spare.discard()
        return super()._start(job)

    def _retire(self, cgroup: RunCgroup) -> None:
        if self._spares is not None:
            self._spares.retire(cgroup)
        else:
            cgroup.destroy()

    def close(self) -> None:
        """Kill the spares (the next command starts without one, and makes them again)."""
        if self._spares is not None:
            self._spares.close()


# A spare's command inside the sandbox: bwrap reads its options from a descriptor (`--args`) but the
# command only from its own argv, fixed when the spare starts. So the command comes as environment
# variables, which this moves into "$@", unsets, and execs: the command runs with exactly the
# environment, argv and process tree of a direct start (dash keeps no variable of its own).
LAUNCHER = (
    'n=$CT_SANDBOX_ARGC; unset CT_SANDBOX_ARGC; i=0; set --; while [ "$i" -lt "$n" ]; do '
    'eval "set -- \\"\\$@\\" \\"\\$CT_SANDBOX_ARG_$i\\"; unset CT_SANDBOX_ARG_$i"; i=$((i + 1)); done; '
    'exec "$@"'
)
LAUNCHER_NAME = "control-tower-launch"


class _Spare:
    """A command start prepared ahead: a fresh cgroup, the trampoline's rlimits, and bwrap already
    inside that cgroup, blocked reading its options (`--args FD`) before it creates any namespace.

    Joining a cgroup is what a lone command waited for most (on cgroup v1 each migration into a new
    cgroup waits an RCU grace period when none was in progress: ~12 ms here, a third of a `true`
    run's sandbox time). A spare pays that between commands; a command then writes its cgroup limits
    (when they differ from the spare's), its options and argv, and bwrap goes on. Confinement is the
    same as a direct start: the trampoline's rlimits and cgroup hold from bwrap's first instruction,
    before the command exists. A spare whose trampoline failed (it exits 125 without running bwrap)
    is never used.
    """

    def __init__(self, box: BwrapSandbox, limits: SandboxLimits) -> None:
        assert box.cgroups is not None
        self.key = (limits.file_size_bytes, limits.open_files)
        self.cgroup = box.cgroups.create(
            memory_bytes=limits.memory_bytes, pids=limits.pids, cpu_cores=limits.cpu_cores
        )
        read_fd, self.args_fd = os.pipe()
        try:
            launch, _ = _launcher(
                [box.bwrap, "--args", str(read_fd), "--", "/bin/sh", "-c", LAUNCHER, LAUNCHER_NAME],
                limits,
                self.cgroup,
            )
            self.proc = subprocess.Popen(
                launch,
                cwd="/",
                env={},
                start_new_session=True,
                close_fds=True,
                pass_fds=(read_fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except BaseException:
            os.close(self.args_fd)
            self.cgroup.destroy()
            raise
        finally:
            os.close(read_fd)

    def launch(self, options: list[str], argv: Sequence[str], limits: SandboxLimits) -> bool:
        """Let the spare run `argv` with these options and limits; False if it can no longer."""
        if self.proc.poll() is not None:
            return False
        try:
            self.cgroup.limit(memory_bytes=limits.memory_bytes, pids=limits.pids, cpu_cores=limits.cpu_cores)
        except OSError:
            return False
        words = [*options, "--setenv", "CT_SANDBOX_ARGC", str(len(argv))]
        for i, arg in enumerate(argv):
            words += ["--setenv", f"CT_SANDBOX_ARG_{i}", arg]
        data = memoryview(b"".join(os.fsencode(w) + b"\0" for w in words))
        fd, self.args_fd = self.args_fd, -1
        try:
            while data:
                data = data[os.write(fd, data) :]
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def discard(self) -> None:
        """Kill the spare and remove its cgroup."""
        if self.args_fd >= 0:
            os.close(self.args_fd)
            self.args_fd = -1
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.cgroup.destroy()
        self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


class _Spares:
    """Up to `count` spares for the standard limits, made again by one background thread as they are
    used (it lives as long as the process: bwrap's --die-with-parent follows the spawning thread).

    The same thread removes finished commands' cgroups (emptied by then): a cgroup's rmdir waits for
    the cgroup mutex, which a spare's migration holds through its RCU grace period, so removing them
    inline would only have moved that wait to the end of the command.
    """

    def __init__(self, box: BwrapSandbox, count: int) -> None:
        self.box, self.count = box, count
        self.limits = SandboxLimits()
        self._ready: list[_Spare] = []
        self._retired: list[RunCgroup] = []
        self._lock = threading.Lock()
        self._working = threading.Lock()  # held by the thread for a round of removing and making
        self._wanted = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        atexit.register(self.close)  # spares block in a read: at exit, kill them and remove their cgroups

    def take(self, limits: SandboxLimits) -> _Spare | None:
        """A ready spare for these rlimits (None: start directly); a new one is made meanwhile."""
        key = (limits.file_size_bytes, limits.open_files)
        with self._lock:
            self._closed = False
            spare = next((s for s in self._ready if s.key == key), None)
            if spare is not None:
                self._ready.remove(spare)
            if self._thread is None:
                self._thread = threading.Thread(target=self._refill, name="ct-sandbox-spares", daemon=True)
                self._thread.start()
        self._wanted.set()
        return spare

    def retire(self, cgroup: RunCgroup) -> None:
        """Remove this finished command's cgroup in the background."""
        with self._lock:
            self._retired.append(cgroup)
            running = self._thread is not None
        if running:
            self._wanted.set()
        else:
            cgroup.destroy()  # pragma: no cover - a cgroup comes from a take, which starts the thread

    def close(self) -> None:
        """Kill the ready spares and remove every cgroup left, once the thread's round is over."""
        with self._lock:
            self._closed = True
        with self._working:
            with self._lock:
                ready, self._ready = self._ready, []
                retired, self._retired = self._retired, []
            for spare in ready:
                spare.discard()
            for cgroup in retired:
                cgroup.destroy()

    def _refill(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            with self._working:
                self._round()

    def _round(self) -> None:
        with self._lock:
            retired, self._retired = self._retired, []
        for cgroup in retired:
            cgroup.destroy()
        while True:
            with self._lock:
                if self._closed or len(self._ready) >= self.count:
                    return
            try:
                spare = _Spare(self.box, self.limits)
            except Exception:  # no cgroup or process now: commands start directly meanwhile
                log.warning("sandbox.spare_failed", exc_info=True)
                time.sleep(1.0)
                return
            with self._lock:
                keep = not self._closed
                if keep:
                    self._ready.append(spare)
            if not keep:
                spare.discard()


# Only what programs need to run. The uid inside maps to the worker's own uid outside, so anything the
# worker can read would be readable if bound: the service's files, keys, databases, other runs'
# workspaces and traces are therefore never mounted, and host secrets under /etc are masked.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
HIDDEN_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers")
HIDDEN_DIRS = ("/etc/ssh", "/etc/ssl/private", "/etc/sudoers.d", "/etc/postgresql", "/etc/mysql")


def system_mounts() -> list[str]:
    """bwrap arguments mounting the system directories read-only, with host secrets masked."""
    args: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in HIDDEN_FILES:
        if os.path.isfile(path):
            args += ["--ro-bind", "/dev/null", path]
    for path in HIDDEN_DIRS:
        if os.path.isdir(path):
            args += ["--tmpfs", path]
    return args


def _bwrap_works(bwrap: str) -> bool:
    try:
        done = subprocess.run(
            [
                bwrap,
                "--unshare-all",
                "--unshare-user",
                "--uid",
                str(SANDBOX_UID),
                "--cap-drop",
                "ALL",
                "--die-with-parent",
                "--ro-bind",
                "/",
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--",
                "true",
            ],
            capture_output=True,
            timeout=10,
            env={},
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def probe_sandbox(requested: str = "auto", *, spares: int = 0) -> Sandbox:
    """The sandbox for this host: "auto" picks bwrap; "none" must be asked for by name.

    `spares`: command starts bwrap prepares ahead (`_Spare`; the worker keeps some, see settings)."""
    if requested not in ("auto", "bwrap", "landlock", "none"):
        raise SandboxUnavailable(message=f"unknown sandbox tier {requested!r}")
    cgroups = probe_cgroups()
    if requested == "none":
        return NoSandbox(cgroups)
    if requested == "landlock":
        raise SandboxUnavailable(message="the landlock tier is not built; use bwrap or SANDBOX=none")
    bwrap = shutil.which("bwrap")
    if bwrap is not None and _bwrap_works(bwrap):
        return BwrapSandbox(bwrap, cgroups, spares=spares)
    raise SandboxUnavailable(
        message="bubblewrap is missing or cannot create namespaces here; refusing untrusted steps "
        "(set SANDBOX=none to run unconfined)"
    )
