"""Every FastAPI dependency, as `Annotated` aliases; handlers never build their own sessions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from control_tower.settings import Settings
from policy import PolicyConfig


# Reads of app.state: `async` so FastAPI calls them on the event loop instead of handing each one to
# the thread pool (three thread hops per request were a fifth of intake's CPU under load).
async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


async def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def _policy(request: Request) -> PolicyConfig:
    config: PolicyConfig = request.app.state.policy_config
    return config


def _session(factory: Annotated[sessionmaker[Session], Depends(_factory)]) -> Iterator[Session]:
    with factory() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(_factory)]
SessionDep = Annotated[Session, Depends(_session)]
EngineDep = Annotated[Engine, Depends(_engine)]
PolicyDep = Annotated[PolicyConfig, Depends(_policy)]
