"""Fresh, migrated databases for tests: SQLite files and PostgreSQL databases cloned from a template."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import psycopg
from sqlalchemy import create_engine

from control_tower.db import make_engine
from control_tower.migrate import upgrade

PG_ADMIN_URL = os.environ.get("CT_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_BASE = PG_ADMIN_URL.rsplit("/", 1)[0]


def pg_url(name: str, driver: str = "postgresql+psycopg") -> str:
    """SQLAlchemy URL of a database on the test server."""
    return f"{PG_BASE.replace('postgresql', driver, 1)}/{name}"


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True)


class Templates:
    """Migrates each backend once per session; every test then gets a cheap copy."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.sqlite_template: Path | None = None
        self.pg_template: str | None = None
        self.created_pg: list[str] = []

    def sqlite(self) -> str:
        if self.sqlite_template is None:
            path = self.workdir / "template.db"
            engine = make_engine(f"sqlite:///{path}")
            upgrade(engine)
            engine.dispose()
            self.sqlite_template = path
        target = self.workdir / f"t_{uuid.uuid4().hex[:12]}.db"
        shutil.copyfile(self.sqlite_template, target)
        return f"sqlite:///{target}"

    def postgresql(self) -> str:
        if self.pg_template is None:
            name = f"ct_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            with _admin() as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            self.created_pg.append(name)
            engine = make_engine(pg_url(name))
            upgrade(engine)
            engine.dispose()
            self.pg_template = name
        name = f"ct_t_{uuid.uuid4().hex[:16]}"
        with _admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.pg_template}"')
        self.created_pg.append(name)
        return pg_url(name)

    def drop_all(self) -> None:
        if not self.created_pg:
            return
        with _admin() as conn:
            for name in reversed(self.created_pg):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created_pg.clear()


def empty_pg_database() -> str:
    """A brand-new empty PostgreSQL database (for migration tests); the caller drops it."""
    name = f"ct_e_{uuid.uuid4().hex[:16]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_pg_database(name: str) -> None:
    """Drop a database made by `empty_pg_database`."""
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


__all__ = ["Templates", "create_engine", "drop_pg_database", "empty_pg_database", "pg_url"]
