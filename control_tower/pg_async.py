"""One asyncio PostgreSQL connection per event loop, kept alive: the HTTP handlers' writers' connection.

The writers that store from the event loop (task intake, webhook deliveries) each own one psycopg
asyncio connection in autocommit: no thread-pool hop per request and no pool checkout (and its
liveness ping) per statement. One connection per writer is enough, because each writer's group commit
runs one statement at a time anyway. Like the pool's pre-ping, a connection idle for `idle_ping_s` is
checked before use and replaced if the server dropped it (a restart); one that breaks under a
statement fails that statement (never retried blindly: the commit may have happened) and is replaced
for the next one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from sqlalchemy import Engine


class AsyncConnection:
    """A lazily opened autocommit asyncio connection to the engine's database, replaced when broken."""

    idle_ping_s = 1.0

    def __init__(self, engine: Engine, application_name: str) -> None:
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._application_name = application_name
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._used = 0.0
        self._connecting = asyncio.Lock()

    async def get(self) -> psycopg.AsyncConnection[Any]:
        """The connection, (re)opened or checked first when needed."""
        conn = self._conn
        now = time.monotonic()
        if conn is not None and not conn.broken and not conn.closed and now - self._used < self.idle_ping_s:
            self._used = now  # the common case under load: no lock, no await
            return conn
        async with self._connecting:
            conn = self._conn
            if conn is not None and not conn.broken and time.monotonic() - self._used >= self.idle_ping_s:
                try:
                    await conn.execute("SELECT 1")
                except psycopg.Error:
                    await conn.close()
            if conn is None or conn.closed or conn.broken:
                conn = self._conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, application_name=self._application_name
                )
            self._used = time.monotonic()
            return conn

    async def aclose(self) -> None:
        """Close the connection (the app's shutdown)."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
