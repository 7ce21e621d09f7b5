"""`control-tower trace RUN_ID`, and the /runs routes added to the app `serve` builds."""

from __future__ import annotations

import argparse
import sys

from control_tower.api.app import register_router
from control_tower.cli import command
from control_tower.settings import Settings
from worker.api import router
from worker.trace import TraceError, render_trace

register_router(router)


def _trace_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id")
    p.add_argument("--tail", type=int, default=10, help="log lines shown per step")


@command("trace", "print a run's trace folder in readable form", _trace_args)
def _trace(args: argparse.Namespace, settings: Settings) -> int:
    try:
        text = render_trace(settings.trace_root, args.run_id, tail_lines=args.tail)
    except TraceError as exc:
        sys.stderr.write(f"{exc.code}: {exc.message}\n")
        return 1
    sys.stdout.write(text)
    return 0
