"""`control-tower replay RUN_ID`: re-run a run's agent step from its trace, with no model API call."""

from __future__ import annotations

import argparse
import json
import sys

from control_tower.cli import command
from control_tower.settings import Settings
from policy.errors import ControlTowerError
from worker.replay import replay_run


def _replay_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id")
    p.add_argument("--step", help="the agent step id (default: the last agent step in the trace)")
    p.add_argument("--keep-workspace", action="store_true", help="keep the replay's checkout for inspection")


@command("replay", "re-run a run's agent step against its recorded model responses and compare", _replay_args)
def _replay(args: argparse.Namespace, settings: Settings) -> int:
    try:
        report = replay_run(settings, args.run_id, step_id=args.step, keep_workspace=args.keep_workspace)
    except ControlTowerError as exc:
        sys.stderr.write(f"{exc.code}: {exc.message}\n")
        return 2
    sys.stdout.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 0 if report["same_tool_calls"] and report["same_diff"] else 1
