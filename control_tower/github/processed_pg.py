"""The last write of processed deliveries on PostgreSQL: ONE statement for a group of them.

A group's commands (`INSERT … ON CONFLICT (semantic_key) DO NOTHING`), the audit rows of the commands
it created (the chain CTEs of `cwom.audit`, gated on the insert), and each delivery's status and
outcome go in one statement run in autocommit: one transaction, one round trip, the chain head locked
for the audit inserts and the commit only. A delivery's outcome lists whether each reported command
was new, which only the insert knows, so the statement itself appends those entries (in the order
given) and hands the stored outcomes back. The ORM unit of work this replaces cost about as much CPU
per delivery as intake did.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Engine

from control_tower.github.tables import CommandRow, DeliveryRow
from cwom import audit


@dataclass(frozen=True)
class NewCommand:
    """A command row to insert unless its semantic key is taken (`row`: every column, JSON-ready),
    the audit entry written when it is new, and whether the delivery's outcome reports it."""

    row: dict[str, Any]
    entry: audit.Entry
    report: bool


@dataclass(frozen=True)
class Finished:
    """A delivery's final status and outcome (`outcome["commands"]`, when present, gets an entry per
    reported command) and the commands it queues."""

    delivery_id: str
    status: str
    outcome: dict[str, Any]
    processed_at: datetime
    commands: list[NewCommand]


@cache
def statement() -> str:
    """The statement (psycopg `%(name)s` parameters: commands, deliveries, ids, audit)."""
    commands, deliveries = CommandRow.__tablename__, DeliveryRow.__tablename__
    chain = audit.pg_chain_ctes("%(audit)s", gate="r.task IN (SELECT id FROM c)", texts="audit")
    # `_i` numbers the group's deliveries (one delivery may be in a group twice, e.g. processed by a
    # sweep and by its own process at once), `_n` its commands. Table names come from our own
    # metadata, never from input.
    return f"""WITH RECURSIVE
k AS (
    SELECT * FROM jsonb_to_recordset(CAST(%(commands)s AS jsonb))
        AS k(_i int, _n int, _report bool, id text, kind text)
),
c AS (
    INSERT INTO {commands}
    SELECT * FROM jsonb_populate_recordset(NULL::{commands}, CAST(%(commands)s AS jsonb))
    ON CONFLICT (semantic_key) DO NOTHING RETURNING id
),
o AS (
    SELECT x._i, x.delivery_id, x.status, x.processed_at,
        CASE WHEN x.outcome ? 'commands' THEN jsonb_set(x.outcome, '{{commands}}',
            (x.outcome -> 'commands') || coalesce((
                SELECT jsonb_agg(
                    jsonb_build_object('kind', k.kind, 'duplicate', k.id NOT IN (SELECT id FROM c))
                    ORDER BY k._n)
                FROM k WHERE k._i = x._i AND k._report), '[]'::jsonb))
        ELSE x.outcome END AS outcome
    FROM jsonb_to_recordset(CAST(%(deliveries)s AS jsonb))
        AS x(_i int, delivery_id text, status text, outcome jsonb, processed_at timestamptz)
),
d AS (
    UPDATE {deliveries} g SET status = o.status, outcome = o.outcome, processed_at = o.processed_at
    FROM o WHERE g.delivery_id = o.delivery_id
        -- the keys again, as an array: the planner then looks them up by index (estimating 100
        -- rows for o, it would scan the whole table and hash-join it)
        AND g.delivery_id = ANY(CAST(%(ids)s AS text[]))
    RETURNING 1
),{chain}
SELECT (SELECT jsonb_agg(outcome ORDER BY _i) FROM o) AS outcomes, (SELECT count(*) FROM ins) AS audited"""  # noqa: S608


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def write(engine: Engine, items: list[Finished], redactor: audit.Redacts | None) -> list[dict[str, Any]]:
    """Write the group (all or nothing); the outcome stored for each delivery, in order."""
    commands: list[dict[str, Any]] = []
    entries: list[audit.Entry] = []
    for i, item in enumerate(items):
        for command in item.commands:
            commands.append({**command.row, "_i": i, "_n": len(commands), "_report": command.report})
            entries.append(command.entry)
    deliveries = [
        {
            "_i": i,
            "delivery_id": item.delivery_id,
            "status": item.status,
            "outcome": item.outcome,
            "processed_at": item.processed_at.isoformat(),
        }
        for i, item in enumerate(items)
    ]
    prepared = audit.prepare(entries, redactor)
    params = {
        "commands": _json(commands),
        "deliveries": _json(deliveries),
        "ids": [item.delivery_id for item in items],
        **audit.pg_columns(prepared, tasks=[c["id"] for c in commands], stem="audit"),
    }
    with engine.connect() as conn:
        autocommit = conn.execution_options(isolation_level="AUTOCOMMIT")
        result = autocommit.exec_driver_sql(statement(), params).one()
    outcomes: list[dict[str, Any]] = result.outcomes
    return outcomes
