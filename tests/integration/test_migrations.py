"""The schema exists only through migrations, and the migrations match the models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from control_tower.db import make_engine
from control_tower.migrate import alembic_config, upgrade
from migrations.metadata import metadata
from tests.support.databases import drop_pg_database, empty_pg_database, pg_url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    name = empty_pg_database()
    yield pg_url(name)
    drop_pg_database(name)


def test_models_and_migrations_agree(empty_url: str) -> None:
    engine = make_engine(empty_url)
    upgrade(engine)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, metadata)
    engine.dispose()
    assert diff == []


def test_upgrade_is_idempotent_and_downgrade_works(empty_url: str) -> None:
    engine = make_engine(empty_url)
    upgrade(engine)
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT seq, hash FROM audit_head WHERE id = 1")).one() == (0, "0" * 64)
    cfg = alembic_config(empty_url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
