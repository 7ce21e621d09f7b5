"""`control-tower audit verify` and `control-tower audit tail [-n N] [--follow]`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from sqlalchemy import select

from control_tower.cli import command
from control_tower.db import make_engine, make_sessionmaker
from control_tower.settings import Settings
from cwom import audit_query
from cwom.audit import AuditRow
from cwom.audit_query import AuditFilter
from cwom.rows import snapshot


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["verify", "tail"])
    p.add_argument("-n", type=int, default=20, help="tail: how many of the newest rows")
    p.add_argument("--follow", action="store_true", help="tail: keep printing new rows")
    p.add_argument("--interval", type=float, default=1.0, help="tail --follow: poll interval (s)")


def _line(row: Any) -> str:
    values = row._asdict() if hasattr(row, "_asdict") else snapshot(row)
    return json.dumps(values, default=str, sort_keys=True)


@command("audit", "verify the audit hash chain, or tail the audit log", _configure)
def _audit(args: argparse.Namespace, settings: Settings) -> int:
    engine = make_engine(settings.database_url)
    try:
        if args.action == "verify":
            result = audit_query.verify(engine)
            sys.stdout.write(json.dumps(result.to_dict()) + "\n")
            return 0 if result.ok else 1
        factory = make_sessionmaker(engine)
        with factory() as session:
            rows = audit_query.page(session, filters=AuditFilter(), limit=max(args.n, 1))
        for row in reversed(rows):
            sys.stdout.write(_line(row) + "\n")
        sys.stdout.flush()
        last = rows[0].seq if rows else 0
        while args.follow:
            time.sleep(args.interval)
            with factory() as session:
                new = list(
                    session.execute(
                        select(AuditRow).where(AuditRow.seq > last).order_by(AuditRow.seq).limit(1000)
                    ).scalars()
                )
            for row in new:
                sys.stdout.write(_line(row) + "\n")
                last = row.seq
            sys.stdout.flush()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        engine.dispose()
