"""Shared fixtures: a fresh migrated database on SQLite AND PostgreSQL, engines, sessions, a live API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from control_tower.api.app import create_app
from control_tower.db import make_engine, make_sessionmaker
from control_tower.settings import Settings
from policy.redaction import Redactor
from tests.support.databases import Templates
from tests.support.servers import serve_in_thread

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def db_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    templates = Templates(tmp_path_factory.mktemp("db"))
    yield templates
    templates.drop_all()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, db_templates: Templates) -> str:
    """A fresh, migrated database URL; every storage test runs once per backend."""
    backend: str = request.param
    return db_templates.sqlite() if backend == "sqlite" else db_templates.postgresql()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine, info={"redactor": Redactor()})


def make_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test: the given database, allow-list `acme`, traces and workspaces under tmp."""
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": db_url,
        "jct_allowed_repo_prefixes": ["acme"],
        "trace_root": tmp_path / "traces",
        "workspace_root": tmp_path / "workspaces",
        "log_json": True,
        # Executors built by tests run their commands directly: a spare (worker/sandbox.py) is a cgroup
        # and a process kept for the next command until `Worker.run` closes the executor, which a test
        # calling the executor itself never does. tests/integration/test_sandbox.py runs every escape
        # through spares too, and checks that closing them leaves nothing.
        "sandbox_spares": 0,
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path)


@pytest.fixture
def api(settings: Settings, engine: Engine) -> Iterator[httpx.Client]:
    """An HTTP client talking to the app served on a real loopback port."""
    app = create_app(settings, engine=engine)
    with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        yield client


def task_body(**overrides: Any) -> dict[str, Any]:
    """A valid V1 task body, with overrides."""
    body: dict[str, Any] = {
        "requested_by": {"kind": "human", "id": "alice"},
        "objective": "Run the formatter",
        "operation": "ops",
        "target": {"repo": "acme/app"},
        "inputs": {"command": "true"},
    }
    body.update(overrides)
    return body
