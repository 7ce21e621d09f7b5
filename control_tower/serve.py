"""Assemble the running service: the API, plus the in-process worker when asked."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import Engine

from control_tower.api.app import create_app
from control_tower.settings import Settings


def build_app(settings: Settings, *, engine: Engine, with_worker: bool) -> FastAPI:
    """The app `control-tower serve` runs."""
    del with_worker  # the worker arrives with the worker subsystem
    return create_app(settings, engine=engine)
