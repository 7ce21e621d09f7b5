"""POST /github/webhook without the framework's per-request layers: the route GitHub's bursts take.

Through the whole app a request passes FastAPI's and Starlette's layers (server errors, exception
telemetry, FastAPI's body limit, exception handlers, the exit stack, the router and the route's
wrapper) before it reaches the endpoint: measured in-process, ~55-70 µs of CPU per request, a seventh
of a loaded webhook process's time. The webhook endpoint needs none of them: it takes only the
request, builds its own response, and its errors are `ControlTowerError`s. So the app sends POST
/github/webhook straight to `WebhookPath`: the same endpoint behind the app's own two middlewares
(`RequestContextMiddleware`: request id, log line; `BodyLimitMiddleware`: 413), with the app's error
bodies for `ControlTowerError` and for anything unexpected (a logged 500). Any other method or path
goes through the whole app as before (a GET on the webhook is a 405 there).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from control_tower.api.errors import error_body
from control_tower.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from control_tower.logs import get_logger
from policy.errors import ControlTowerError

log = get_logger("control_tower.api")

PATH = "/github/webhook"


def _error(status: int, body: dict[str, object]) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


class _Endpoint:
    """The endpoint as an ASGI app, answering its errors as the app's exception handlers do."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await self.endpoint(request)
        except ControlTowerError as exc:
            response = _error(exc.http_status, error_body(exc.code, exc.message, exc.field))
        except ClientDisconnect:
            return  # nobody is left to answer
        except Exception as exc:
            log.exception("unhandled_error", error_type=type(exc).__name__)
            response = _error(500, error_body("INTERNAL_ERROR", "internal error"))
        await response(scope, receive, send)


class WebhookPath:
    """The webhook endpoint wrapped in the app's own middlewares, for the app to call directly."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]], *, max_bytes: int) -> None:
        inner: ASGIApp = BodyLimitMiddleware(_Endpoint(endpoint), max_bytes=max_bytes)
        self.app: ASGIApp = RequestContextMiddleware(inner)

    @staticmethod
    def takes(scope: Scope) -> bool:
        """Whether this request is the webhook's (POST /github/webhook)."""
        return bool(scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
