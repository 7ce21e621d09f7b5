"""The `control-tower` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from control_tower.db import make_engine, make_sessionmaker
from control_tower.logs import configure_logging
from control_tower.settings import Settings
from policy import PolicyError, TaskCreateV1
from policy.errors import ControlTowerError
from policy.redaction import Redactor

Command = Callable[[argparse.Namespace, Settings], int]
Configure = Callable[[argparse.ArgumentParser], object]


@dataclass(frozen=True)
class SubCommand:
    """One `control-tower NAME` sub-command."""

    name: str
    help: str
    run: Command
    configure: Configure | None = None


_COMMANDS: dict[str, SubCommand] = {}


def command(name: str, help: str, configure: Configure | None = None) -> Callable[[Command], Command]:
    """Register a sub-command; modules of any layer call this at import time."""

    def register(fn: Command) -> Command:
        _COMMANDS[name] = SubCommand(name, help, fn, configure)
        return fn

    return register


def _print(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@command("migrate", "apply the database migrations")
def _migrate(_: argparse.Namespace, settings: Settings) -> int:
    from control_tower.migrate import upgrade

    engine = make_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()
    _print({"migrated": engine.url.render_as_string(hide_password=True)})
    return 0


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--no-worker", action="store_true", help="do not start the in-process worker")
    p.add_argument("--workers", type=int, default=1, help="HTTP worker processes (implies --no-worker)")
    p.add_argument("--migrate", action="store_true", help="apply migrations on start (PostgreSQL)")


@command("serve", "run the HTTP API (and an in-process worker)", _serve_args)
def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from control_tower.api.app import ready_for_traffic
    from control_tower.migrate import upgrade
    from control_tower.serve import build_app

    host = args.host or settings.api_host
    port = args.port or settings.api_port
    engine = make_engine(settings.database_url)
    if engine.dialect.name == "sqlite" or args.migrate:
        upgrade(engine)
    if args.workers > 1:
        engine.dispose()
        from control_tower.multiserve import Supervisor

        return Supervisor(host, port, args.workers).run()
    app = build_app(settings, engine=engine, with_worker=not args.no_worker)
    ready_for_traffic()
    uvicorn.run(app, host=host, port=port, access_log=False, log_config=None)
    return 0


@command("enqueue", "submit a task from a JSON file", lambda p: p.add_argument("file"))
def _enqueue(args: argparse.Namespace, settings: Settings) -> int:
    from control_tower import intake

    try:
        task = TaskCreateV1.model_validate_json(Path(args.file).read_bytes())
    except ValidationError as exc:
        _print({"error": {"code": "VALIDATION_ERROR", "message": str(exc)}})
        return 2
    engine = make_engine(settings.database_url)
    factory = make_sessionmaker(engine, info={"redactor": Redactor(named=settings.secret_values())})
    try:
        accepted = intake.submit(
            factory,
            task=task,
            config=settings.policy_config(),
            source="cli",
            max_attempts=settings.worker_max_attempts,
        )
    except PolicyError as exc:
        _print({"decision": "deny", "error": exc.to_dict()})
        return 3
    except ControlTowerError as exc:
        _print({"error": exc.to_dict()})
        return 4
    finally:
        engine.dispose()
    _print(
        {
            "decision": "allow",
            "task_id": accepted.task.id,
            "run_id": accepted.task.run_id,
            "created": accepted.created,
        }
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="control-tower", description="Control Tower: ops bot and policy gate"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in sorted(_COMMANDS):
        spec = _COMMANDS[name]
        child = sub.add_parser(name, help=spec.help)
        if spec.configure is not None:
            spec.configure(child)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, configure logging, run the chosen sub-command."""
    args = build_parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    return _COMMANDS[args.command].run(args, settings)
