"""Per-run cgroups for the sandbox: v2 under a delegated subtree, else the v1 controllers, else none."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PARENT_NAME = "control-tower-sandbox"
V1_CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, options) of every cgroup mount."""
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
            out.append((parts[1], parts[2], set(parts[3].split(","))))
    return out


def _own_paths() -> dict[str, str]:
    """Controller name (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(",") if ctrls else [""]:
            paths[c] = path
    return paths


def _write(path: Path | str, value: str) -> None:
    # A plain descriptor: a run writes ~5 of these and reads ~8 (Path.write_text builds a text file).
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: Path | str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(fd)


def _await_exit(pids: list[int], timeout: float) -> None:
    """Return when any of `pids` has exited, or after `timeout`."""
    fds: list[int] = []
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                fds.append(os.pidfd_open(pid))
        if not fds:
            time.sleep(0.0005)  # exited already, still listed for a moment
            return
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        poller.poll(int(timeout * 1000))
    finally:
        for fd in fds:
            os.close(fd)


@dataclass
class RunCgroup:
    """The cgroup directories of one run (one for v2, one per controller for v1)."""

    version: int
    dirs: list[Path]
    memory_dir: Path | None
    # The cgroup.procs file of each directory: the sandbox's trampoline writes itself into every one.
    procs_files: list[str] = field(default_factory=list)
    # v1: the controller of each directory ("memory", "pids", "cpu").
    controllers: list[str] = field(default_factory=list)

    # The limits last written (memory bytes, pids, cpu cores): `limit` skips what is set already.
    limits: tuple[int, int, float] | None = None

    def limit(self, *, memory_bytes: int, pids: int, cpu_cores: float) -> None:
        """Write the run's memory, pids and cpu limits (those that differ from the last written)."""
        if self.limits == (memory_bytes, pids, cpu_cores):
            return
        quota = max(1000, int(cpu_cores * CPU_PERIOD_US))
        if self.version == 2:
            d = self.dirs[0]
            _write(d / "memory.max", str(memory_bytes))
            with contextlib.suppress(OSError):
                _write(d / "memory.swap.max", "0")
            _write(d / "pids.max", str(pids))
            _write(d / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        else:
            for ctrl, d in zip(self.controllers, self.dirs, strict=True):
                if ctrl == "memory":
                    # v1 wants limit <= memsw: raising a limit written before takes memsw first.
                    if self.limits is not None:
                        with contextlib.suppress(OSError):
                            _write(d / "memory.memsw.limit_in_bytes", str(memory_bytes))
                    _write(d / "memory.limit_in_bytes", str(memory_bytes))
                    with contextlib.suppress(OSError):
                        _write(d / "memory.memsw.limit_in_bytes", str(memory_bytes))
                elif ctrl == "pids":
                    _write(d / "pids.max", str(pids))
                elif ctrl == "cpu":
                    _write(d / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                    _write(d / "cpu.cfs_quota_us", str(quota))
        self.limits = (memory_bytes, pids, cpu_cores)

    def oom_killed(self) -> bool:
        """Whether the kernel OOM-killed something in this run's memory limit."""
        if self.memory_dir is None:
            return False
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        with contextlib.suppress(OSError):
            for line in _read(self.memory_dir / name).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        return False

    def kill_all(self) -> None:
        """SIGKILL every process in the run (cgroup.kill on v2, a kill loop on v1); wait until none is left.

        What is left is usually bwrap's pid 1 tearing its namespaces down after reporting the exit
        status; a pidfd per process wakes us the moment it is gone rather than after a fixed sleep.
        """
        if self.version == 2:
            with contextlib.suppress(OSError):
                _write(self.dirs[0] / "cgroup.kill", "1")
        for _ in range(200):
            pids = self._pids()
            if not pids:
                return
            if self.version == 1:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            _await_exit(pids, 0.005)

    def _pids(self) -> list[int]:
        found: set[int] = set()
        for d in self.dirs:
            procs = f"{d}/cgroup.procs"
            with contextlib.suppress(OSError):
                found.update(int(p) for p in _read(procs).split())
        return sorted(found)

    def destroy(self) -> None:
        """Kill what is left and remove the directories."""
        self.kill_all()
        for d in self.dirs:
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)


@dataclass
class CgroupManager:
    """Pre-created parent cgroup(s) under which each run gets its own child."""

    version: int
    parents: dict[str, Path]  # controller ("" for v2) -> parent directory
    where: str

    def describe(self) -> dict[str, object]:
        """What the trace records about the cgroup mechanism."""
        return {"version": self.version, "where": self.where, "controllers": ["memory", "pids", "cpu"]}

    def create(self, *, memory_bytes: int, pids: int, cpu_cores: float) -> RunCgroup:
        """A fresh child cgroup with the run's limits written."""
        name = f"run-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        if self.version == 2:
            d = self.parents[""] / name
            d.mkdir()
            run = RunCgroup(2, [d], d, [str(d / "cgroup.procs")])
            try:
                run.limit(memory_bytes=memory_bytes, pids=pids, cpu_cores=cpu_cores)
            except OSError:
                run.destroy()
                raise
            return run
        dirs: list[Path] = []
        run = RunCgroup(1, dirs, None)
        try:
            for ctrl, parent in self.parents.items():
                d = parent / name
                d.mkdir()
                dirs.append(d)
                run.controllers.append(ctrl)
                if ctrl == "memory":
                    run.memory_dir = d
                run.procs_files.append(str(d / "cgroup.procs"))
            run.limit(memory_bytes=memory_bytes, pids=pids, cpu_cores=cpu_cores)
        except OSError:
            run.destroy()
            raise
        return run


def sweep(manager: CgroupManager) -> None:
    """Remove empty run cgroups whose worker process is gone (a crash between create and destroy)."""
    for parent in manager.parents.values():
        for d in parent.glob("run-*"):
            owner = d.name.split("-")[1]
            if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                with contextlib.suppress(OSError):
                    d.rmdir()


def _probe_v2(mount: str) -> CgroupManager | None:
    own = _own_paths().get("", "/")
    base = Path(mount) / own.lstrip("/")
    try:
        available = set((base / "cgroup.controllers").read_text().split())
        if not {"memory", "pids", "cpu"} <= available:
            return None
        parent = base / PARENT_NAME
        parent.mkdir(exist_ok=True)
        # The parent holds no processes, so enabling controllers for its children is allowed.
        with contextlib.suppress(OSError):
            _write(base / "cgroup.subtree_control", "+memory +pids +cpu")
        _write(parent / "cgroup.subtree_control", "+memory +pids +cpu")
        manager = CgroupManager(2, {"": parent}, str(parent))
        manager.create(memory_bytes=1 << 26, pids=8, cpu_cores=1.0).destroy()
        return manager
    except OSError:
        return None


def _probe_v1(mounts: list[tuple[str, str, set[str]]]) -> CgroupManager | None:
    own = _own_paths()
    parents: dict[str, Path] = {}
    for ctrl in V1_CONTROLLERS:
        mount = next((m for m, t, opts in mounts if t == "cgroup" and ctrl in opts), None)
        if mount is None:
            return None
        parent = Path(mount) / own.get(ctrl, "/").lstrip("/") / PARENT_NAME
        try:
            parent.mkdir(exist_ok=True)
        except OSError:
            return None
        parents[ctrl] = parent
    manager = CgroupManager(1, parents, ", ".join(str(p) for p in parents.values()))
    try:
        manager.create(memory_bytes=1 << 26, pids=8, cpu_cores=1.0).destroy()
    except OSError:
        return None
    return manager


def probe_cgroups() -> CgroupManager | None:
    """The best writable cgroup hierarchy with memory, pids and cpu, or None."""
    try:
        mounts = _mounts()
    except OSError:
        return None
    for mount, fstype, _ in mounts:
        if fstype == "cgroup2":
            manager = _probe_v2(mount)
            if manager is not None:
                sweep(manager)
                return manager
    manager = _probe_v1(mounts)
    if manager is not None:
        sweep(manager)
    return manager
