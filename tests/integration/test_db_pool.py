"""Pooled PostgreSQL connections: pinged at checkout only after being idle, replaced when found dead."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from control_tower import db
from control_tower.db import make_engine
from tests.support.databases import Templates


@pytest.fixture
def pg_engine(db_templates: Templates) -> Iterator[Engine]:
    engine = make_engine(db_templates.postgresql(), pool_size=1)
    yield engine
    engine.dispose()


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(engine: Engine, pid: int) -> None:
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # Wait until the server has really closed it.
        for _ in range(200):
            row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
            if row is not None and row[0] == 0:
                return
            admin.execute("SELECT pg_sleep(0.01)")


def test_an_idle_connection_the_server_dropped_is_replaced_before_use(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _backend_pid(pg_engine)
    _terminate(pg_engine, first)
    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 0.0)  # every pooled connection counts as idle
    # The ping at checkout finds it dead: the pool connects afresh and the statement never sees it.
    assert _backend_pid(pg_engine) != first


def test_a_busy_connection_is_not_pinged_and_a_dropped_one_is_replaced_after_one_failure(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 3600.0)  # never idle long enough to be pinged
    first = _backend_pid(pg_engine)
    assert _backend_pid(pg_engine) == first  # the same pooled connection, checked out again
    _terminate(pg_engine, first)
    # Unpinged, the dead connection fails its statement as a disconnect: that invalidates the pool...
    with pytest.raises(OperationalError) as failed:
        _backend_pid(pg_engine)
    assert failed.value.connection_invalidated
    # ...so the next checkout connects afresh.
    assert _backend_pid(pg_engine) != first
