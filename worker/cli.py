"""The `control-tower` console script: every layer's sub-commands, assembled at the top layer."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Protocol

import control_tower.cli as base_cli
from control_tower.settings import Settings

# Importing a module registers its sub-commands (see `control_tower.cli.command`).
COMMAND_MODULES: tuple[str, ...] = (
    "control_tower.cli_audit",
    "control_tower.cli_github",
    "worker.service",  # registers the in-process worker that `serve` starts
    "worker.cli_runs",  # `trace RUN_ID` and the /runs routes
    "worker.cli_replay",  # `replay RUN_ID`: the agent step against its recorded model responses
)


class Stoppable(Protocol):
    """Anything with `stop(grace_seconds)` (the Worker)."""

    def stop(self, grace_seconds: float) -> None: ...


def install_signal_handlers(worker: Stoppable, grace_seconds: float) -> None:
    """SIGTERM/SIGINT: stop claiming and drain within the grace period; a second signal releases now."""
    signals_seen = 0

    def handle(_signum: int, _frame: FrameType | None) -> None:
        nonlocal signals_seen
        signals_seen += 1
        worker.stop(grace_seconds if signals_seen == 1 else 0.0)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def _worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concurrency", type=int, help="runs executed at once (default WORKER_CONCURRENCY)")
    p.add_argument("--until-idle", action="store_true", help="exit when nothing is left to claim")
    p.add_argument("--worker-id", help="lease holder name (default host:pid:random)")
    p.add_argument("--grace", type=float, default=30.0, help="seconds a SIGTERM drain waits for runs")


@base_cli.command("worker", "claim and execute queued runs", _worker_args)
def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from control_tower.db import make_engine
    from worker.service import build_worker

    engine = make_engine(settings.database_url)
    try:
        worker = build_worker(settings, engine, concurrency=args.concurrency, worker_id=args.worker_id)
        install_signal_handlers(worker, args.grace)
        worker.run(until_idle=args.until_idle)
        sys.stdout.write(json.dumps({"worker_id": worker.worker_id, "executed": worker.completed}) + "\n")
    finally:
        engine.dispose()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `control-tower`."""
    import importlib

    from control_tower.runtime import tune_process

    tune_process()

    for module in COMMAND_MODULES:
        importlib.import_module(module)
    return base_cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
