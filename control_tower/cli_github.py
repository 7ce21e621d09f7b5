"""`control-tower github reconcile`: process deliveries GitHub sent that were never stored."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from datetime import UTC, datetime, timedelta

from control_tower.cli import command
from control_tower.db import make_engine, make_sessionmaker
from control_tower.github.reconcile import reconcile
from control_tower.github.setup import client_from_settings
from control_tower.settings import Settings
from policy.redaction import Redactor


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["reconcile"])
    parser.add_argument("--hours", type=float, default=72.0, help="look back this far (GitHub keeps 3 days)")
    parser.add_argument("--max-pages", type=int, default=10)


@command("github", "GitHub maintenance: reconcile missed webhook deliveries", _args)
def _github(args: argparse.Namespace, settings: Settings) -> int:
    client = client_from_settings(settings)
    if client is None:
        sys.stderr.write(
            "github: set GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY_PATH (reconcile needs the app)\n"
        )
        return 2
    engine = make_engine(settings.database_url)
    factory = make_sessionmaker(engine, info={"redactor": Redactor(named=settings.secret_values())})
    since = datetime.now(UTC) - timedelta(hours=args.hours)
    try:
        report = reconcile(factory, client, settings, since=since, max_pages=args.max_pages)
    finally:
        engine.dispose()
    sys.stdout.write(json.dumps(dataclasses.asdict(report), indent=2) + "\n")
    return 0
