"""Storing verified deliveries on PostgreSQL: concurrent deliveries share one INSERT (group commit).

Each delivery's payload goes in as the verified body's own text, spliced into the statement's JSON
parameter without being decoded and encoded again (a delivery is ~10 kB of JSON; the body was checked
to be a JSON object before it got here). `ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id`
tells which deliveries are new; of several copies of one delivery id in one statement, only the first
caller is told it stored it, so a redelivery is never acted on twice.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine

from control_tower.github.tables import DeliveryRow
from control_tower.group_commit import GroupCommit

BATCH_MAX = 128
_TABLE = DeliveryRow.__tablename__
# The table name comes from our own metadata, never from input.
_INSERT = (
    f"INSERT INTO {_TABLE} SELECT * FROM"  # noqa: S608
    f" jsonb_populate_recordset(NULL::{_TABLE}, CAST(%(rows)s AS jsonb))"
    " ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id"
)


@dataclass(frozen=True)
class PendingDelivery:
    """A delivery's columns (JSON-ready, `payload` excluded) and its body, the payload's JSON text."""

    values: dict[str, Any]
    body: str


def _rows_json(items: Sequence[PendingDelivery]) -> str:
    parts = []
    for item in items:
        head = orjson.dumps(item.values).decode()  # "{...}": reopened to add the payload
        parts.append(f'{head[:-1]},"payload":{item.body}}}')
    return "[" + ",".join(parts) + "]"


def _write(engine: Engine, items: Sequence[PendingDelivery]) -> list[bool]:
    with engine.connect() as conn:
        autocommit = conn.execution_options(isolation_level="AUTOCOMMIT")
        stored = set(autocommit.exec_driver_sql(_INSERT, {"rows": _rows_json(items)}).scalars())
    out = []
    for item in items:
        key = item.values["delivery_id"]
        out.append(key in stored)
        stored.discard(key)  # a second copy in the same statement was not stored by its caller
    return out


_GROUPS: weakref.WeakKeyDictionary[Engine, GroupCommit[PendingDelivery, bool]] = weakref.WeakKeyDictionary()
_GROUPS_LOCK = threading.Lock()


def store(engine: Engine, item: PendingDelivery) -> bool:
    """True when this call stored the delivery; False when its id was stored already."""
    group = _GROUPS.get(engine)
    if group is None:
        with _GROUPS_LOCK:
            group = _GROUPS.get(engine)
            if group is None:
                ref = weakref.ref(engine)

                def write(items: Sequence[PendingDelivery]) -> list[bool]:
                    bound = ref()
                    if bound is None:  # pragma: no cover - callers hold the engine
                        raise RuntimeError("engine is gone")
                    return _write(bound, items)

                group = _GROUPS[engine] = GroupCommit(write, batch_max=BATCH_MAX)
    return group.submit(item)
