"""Run benchmarks one after another: `python -m bench [NAME ...]` (all of them when no name is given).

Each runs as its own process, exactly as `python -m bench.NAME` would, so none warms another's caches.
"""

from __future__ import annotations

import subprocess
import sys

ALL = ("intake", "intake_statement", "audit", "webhook", "worker", "worker_runs", "sandbox", "agent", "trace")


def main(argv: list[str]) -> int:
    names = argv or list(ALL)
    unknown = [n for n in names if n not in ALL]
    if unknown:
        sys.stderr.write(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(ALL)}\n")
        return 2
    failed = []
    for name in names:
        print(f"\n===== bench.{name}", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{name}"], check=False).returncode != 0:
            failed.append(name)
    if failed:
        sys.stderr.write(f"failed: {', '.join(failed)}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
