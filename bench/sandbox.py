"""Sandbox overhead per command: the bwrap tier running `true` beside a plain subprocess.run(["true"])."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# Run as a script, bench/ is first on sys.path and bench/worker.py would shadow the worker package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control_tower.settings import Settings
from worker.sandbox import BwrapSandbox, NoSandbox, SandboxLimits, probe_sandbox

# What a worker runs with (SANDBOX_SPARES): commands started through spares prepared between them.
WORKER_SPARES = int(Settings.model_fields["sandbox_spares"].default)


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))]


def measure(fn: Callable[[], object], n: int, gap: float = 0.0) -> list[float]:
    """Wall time of n calls in ms, after a few warm-up calls, each call `gap` seconds after the last."""
    for _ in range(5):
        fn()
    out = []
    for _ in range(n):
        time.sleep(gap)
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=200)
    args = parser.parse_args()
    box = probe_sandbox("bwrap")
    assert isinstance(box, BwrapSandbox)
    ws = Path(tempfile.mkdtemp(prefix="sandbox-bench-"))
    limits = SandboxLimits(wall_seconds=30)
    no_cgroup = BwrapSandbox(box.bwrap, None)
    bare = box.command(["true"], ws, False, {"PATH": "/usr/bin:/bin"})[0]
    full_run = lambda: box.run(["true"], workspace=ws, limits=limits)  # noqa: E731
    worker_box = probe_sandbox("bwrap", spares=WORKER_SPARES)
    worker_run = lambda: worker_box.run(["true"], workspace=ws, limits=limits)  # noqa: E731
    cases: list[tuple[str, Callable[[], object], float]] = [
        ("plain subprocess.run(['true'])", lambda: subprocess.run(["true"], check=True), 0.0),
        ("bwrap argv via subprocess.run", lambda: subprocess.run(bare, check=True, env={}), 0.0),
        (
            "none tier (cgroup+rlimits+caps)",
            lambda: NoSandbox(box.cgroups).run(["true"], workspace=ws, limits=limits),
            0.0,
        ),
        ("bwrap tier without cgroup", lambda: no_cgroup.run(["true"], workspace=ws, limits=limits), 0.0),
        # Commands of real runs are tens of ms apart: on cgroup v1 each migration then waits a full RCU
        # grace period, which back-to-back calls share. Both are shown; the target is judged on the gap.
        ("bwrap tier (full), back to back", full_run, 0.0),
        ("bwrap tier (full), 50 ms apart", full_run, 0.05),
        # As a worker runs it: the cgroup joined by a spare in the gap between commands.
        (f"worker's ({WORKER_SPARES} spares), back to back", worker_run, 0.0),
        (f"worker's ({WORKER_SPARES} spares), 50 ms apart", worker_run, 0.05),
    ]
    cgroup = box.describe()["cgroup"]
    print(f"sandbox bench: N={args.n}, cgroup={cgroup}")
    results: dict[str, list[float]] = {}
    for name, fn, gap in cases:
        results[name] = samples = measure(fn, args.n, gap)
        print(
            f"  {name:36s} p50 {pct(samples, 50):7.2f} ms  p95 {pct(samples, 95):7.2f} ms  "
            f"mean {statistics.fmean(samples):7.2f} ms"
        )
    worker_box.close()
    direct, bare_true = results[cases[-3][0]], results[cases[0][0]]
    print(
        f"direct start (no spares), 50 ms apart: overhead p50 {pct(direct, 50) - pct(bare_true, 50):.2f} ms,"
        f" p95 {pct(direct, 95) - pct(bare_true, 95):.2f} ms"
    )
    plain, full = results[cases[0][0]], results[cases[-1][0]]
    over50, over95 = pct(full, 50) - pct(plain, 50), pct(full, 95) - pct(plain, 95)
    print(
        f"worker's bwrap tier vs plain: ratio p50 {pct(full, 50) / pct(plain, 50):.1f}x; "
        f"overhead p50 {over50:.2f} ms, p95 {over95:.2f} ms per command (target < 30 ms): "
        f"{'OK' if over50 < 30 else 'OVER TARGET'}"
    )
    print(
        "limits: bwrap's namespace setup (the 'bwrap argv' row) and, with cgroups and no spare, the cgroup "
        "migration of the child (one RCU grace period per run on cgroup v1: the 'full' minus 'without "
        "cgroup' rows), which a spare pays between commands"
    )


if __name__ == "__main__":
    main()
