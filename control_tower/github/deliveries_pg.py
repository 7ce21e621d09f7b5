"""Storing verified deliveries on PostgreSQL: concurrent deliveries share one INSERT (group commit).

Each delivery's payload goes in as the verified body's own text, spliced into the statement's JSON
parameter without being decoded and encoded again (a delivery is ~10 kB of JSON; the body was checked
to be a JSON object before it got here). `ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id`
tells which deliveries are new; of several copies of one delivery id in one statement, only the first
caller is told it stored it, so a redelivery is never acted on twice.

Two writers send that statement: `store` (threads: reconcile, the CLI) and `AsyncStore` (the webhook
handler's coroutines: one asyncio connection per server process, an asyncio group commit over it, so
a delivery is stored without leaving the event loop). Either way the statement runs in autocommit:
it has committed when its result comes back, before the webhook answers.
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
from control_tower.group_commit import AsyncGroupCommit, GroupCommit
from control_tower.pg_async import AsyncConnection

BATCH_MAX = 128
# How the webhook handler's connections show in pg_stat_activity.
APPLICATION_NAME = "control-tower-webhook"
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
    return _outcomes(items, stored)


def _outcomes(items: Sequence[PendingDelivery], stored: set[str]) -> list[bool]:
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


class AsyncStore:
    """`store` for coroutines: the webhook handler of one server process (one event loop).

    The statement and its outcomes are `store`'s; it runs on this store's own asyncio connection
    (`pg_async.AsyncConnection`), grouped by an `AsyncGroupCommit`: no thread-pool hop, no pool
    checkout and no thread hand-off per delivery.
    """

    def __init__(self, engine: Engine) -> None:
        self._conn = AsyncConnection(engine, APPLICATION_NAME)
        self._group: AsyncGroupCommit[PendingDelivery, bool] = AsyncGroupCommit(
            self._write, batch_max=BATCH_MAX
        )

    async def _write(self, items: Sequence[PendingDelivery]) -> list[bool]:
        conn = await self._conn.get()
        cur = await conn.execute(_INSERT, {"rows": _rows_json(items)})
        stored = {str(row[0]) for row in await cur.fetchall()}
        return _outcomes(items, stored)

    async def store(self, item: PendingDelivery) -> bool:
        """True when this call stored the delivery; False when its id was stored already."""
        return await self._group.submit(item)

    async def aclose(self) -> None:
        """Close the connection (the app's shutdown)."""
        await self._conn.aclose()
