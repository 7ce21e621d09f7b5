"""The routes that take bursts (POST /github/webhook, POST /tasks/enqueue), without the framework's
per-request layers.

Through the whole app a request passes FastAPI's and Starlette's layers (server errors, exception
telemetry, FastAPI's body limit, exception handlers, the exit stack, the router and the route's
wrapper, dependency solving, response handling) before it reaches the endpoint: measured in-process,
~55-70 µs of CPU per webhook request, and ~0.2 ms per enqueue (which also has its body, a query
parameter and a response model handled for it). An endpoint registered here takes only the request and
builds its own response, so the app sends its method and path straight to it (`FastPaths`): the same
endpoint behind the app's own two middlewares (`RequestContextMiddleware`: request id, log line;
`BodyLimitMiddleware`: 413), with the app's error bodies for `ControlTowerError`, for
`RequestValidationError` (422, the body of `errors.validation_body`) and for anything unexpected (a
logged 500). Any other method or path goes through the whole app as before (a GET on the webhook is a
405 there), and each route stays declared on its router, for OpenAPI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from fastapi.exceptions import RequestValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from control_tower.api.errors import error_body, validation_body
from control_tower.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from control_tower.logs import get_logger
from policy.errors import ControlTowerError

log = get_logger("control_tower.api")

Endpoint = Callable[[Request], Awaitable[Response]]


def _error(status: int, body: dict[str, object]) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


class _Endpoint:
    """The endpoint as an ASGI app, answering its errors as the app's exception handlers do."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await self.endpoint(request)
        except ControlTowerError as exc:
            response = _error(exc.http_status, error_body(exc.code, exc.message, exc.field))
        except RequestValidationError as exc:
            response = _error(422, validation_body(exc.errors()))
        except ClientDisconnect:
            return  # nobody is left to answer
        except Exception as exc:
            log.exception("unhandled_error", error_type=type(exc).__name__)
            response = _error(500, error_body("INTERNAL_ERROR", "internal error"))
        await response(scope, receive, send)


class FastPaths:
    """Endpoints by (method, path), each wrapped in the app's own middlewares, for the app to call."""

    def __init__(self, *, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._apps: dict[tuple[str, str], ASGIApp] = {}

    def add(self, method: str, path: str, endpoint: Endpoint) -> None:
        """Send `method path` straight to `endpoint` (which must also be declared on a router)."""
        inner: ASGIApp = BodyLimitMiddleware(_Endpoint(endpoint), max_bytes=self.max_bytes)
        self._apps[(method, path)] = RequestContextMiddleware(inner)

    def get(self, scope: Scope) -> ASGIApp | None:
        """The wrapped endpoint that takes this request, if one does."""
        if scope["type"] != "http":
            return None
        return self._apps.get((scope["method"], scope["path"]))
