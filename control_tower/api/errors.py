"""The one place where error codes become HTTP responses: `{"error": {"code", "field", "message"}}`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from control_tower.logs import get_logger
from policy.errors import ControlTowerError

log = get_logger("control_tower.api")

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    503: "UNAVAILABLE",
}


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    """The shared error shape."""
    return {"error": {"code": code, "field": field, "message": message, **extra}}


def _loc(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def validation_body(errors: Sequence[Any]) -> dict[str, Any]:
    """The 422 body for request validation errors (pydantic's, with `loc` from "body"/"query"...):
    the first error as the error, and up to 20 as `details`."""
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    details = [{"field": _loc(tuple(e.get("loc", ()))), "message": str(e.get("msg"))} for e in errors[:20]]
    body = error_body("VALIDATION_ERROR", str(first.get("msg")), _loc(tuple(first.get("loc", ()))))
    body["error"]["details"] = details
    return body


def install_error_handlers(app: FastAPI) -> None:
    """Register handlers so that no bad input turns into a 500 or an ad-hoc body."""

    @app.exception_handler(ControlTowerError)
    async def _domain(_: Request, exc: ControlTowerError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.field), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(exc.errors()), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", error_type=type(exc).__name__)
        return JSONResponse(error_body("INTERNAL_ERROR", "internal error"), status_code=500)
