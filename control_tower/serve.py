"""Assemble the running service: the API, plus background services (the in-process worker) when asked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from fastapi import FastAPI
from sqlalchemy import Engine

from control_tower.api.app import create_app
from control_tower.settings import Settings


class BackgroundService(Protocol):
    """Something `serve` runs beside the API: started on app startup, stopped on shutdown."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


BackgroundFactory = Callable[[Settings, Engine], BackgroundService]


@dataclass(frozen=True)
class _Registered:
    name: str
    factory: BackgroundFactory
    is_worker: bool


_REGISTRY: dict[str, _Registered] = {}


def register_background(name: str, factory: BackgroundFactory, *, is_worker: bool = True) -> None:
    """Register a background service; worker services start only when `serve` runs with a worker."""
    _REGISTRY[name] = _Registered(name, factory, is_worker)


def registered_background() -> list[str]:
    """Names of the registered background services."""
    return sorted(_REGISTRY)


def build_app(settings: Settings, *, engine: Engine, with_worker: bool) -> FastAPI:
    """The app `control-tower serve` runs; background services live as long as the app."""
    chosen = [r for r in _REGISTRY.values() if with_worker or not r.is_worker]
    running: list[BackgroundService] = []

    def start(_: FastAPI) -> None:
        for item in chosen:
            service = item.factory(settings, engine)
            service.start()
            running.append(service)

    def stop(_: FastAPI) -> None:
        # Reverse order: the last started depends on the earlier ones.
        while running:
            running.pop().stop()

    app = create_app(settings, engine=engine, on_startup=[start], on_shutdown=[stop])
    app.state.background = running
    return app
