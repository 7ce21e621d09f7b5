"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from control_tower.api.deps import EngineDep
from control_tower.api.errors import error_body
from control_tower.db import ping

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
def readyz(engine: EngineDep) -> dict[str, str] | JSONResponse:
    """The database answers."""
    try:
        ping(engine)
    except SQLAlchemyError as exc:
        return JSONResponse(
            error_body("DATABASE_UNAVAILABLE", f"database check failed: {type(exc).__name__}"),
            status_code=503,
        )
    return {"status": "ready", "database": engine.dialect.name}
