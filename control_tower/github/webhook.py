"""POST /github/webhook: verify, store, map, answer in milliseconds. No GitHub API call happens here."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from control_tower.api.deps import SessionDep
from control_tower.api.schemas import ErrorResponse
from control_tower.github.deliveries_pg import AsyncStore
from control_tower.github.ingest import accept_delivery, accept_delivery_async, storable
from control_tower.github.processor import DeliveryProcessor
from control_tower.github.signature import verify_signature
from control_tower.github.tables import DeliveryRow
from control_tower.settings import Settings
from policy.errors import ControlTowerError

router = APIRouter(tags=["github"])


class BadSignature(ControlTowerError):
    """The X-Hub-Signature-256 header does not match the body under any configured secret."""

    code = "INVALID_SIGNATURE"
    http_status = 401


class BadDelivery(ControlTowerError):
    """The delivery lacks what GitHub always sends (event name, delivery id, a JSON object body)."""

    code = "INVALID_DELIVERY"
    http_status = 400


class InFlight:
    """Whether this process is answering webhook requests (read by the delivery processor's threads).

    Busy while a request is in flight and for `quiet_s` after the last one ended: under a burst the
    gaps between requests are shorter than that, and processing would otherwise start in each gap.
    """

    def __init__(self, quiet_s: float = 0.005) -> None:
        self.count = 0
        self.quiet_s = quiet_s
        self.last_done = 0.0

    def enter(self) -> None:
        self.count += 1  # only the event loop's thread changes these

    def leave(self) -> None:
        self.count -= 1
        self.last_done = time.monotonic()

    def busy(self) -> bool:
        return self.count > 0 or time.monotonic() - self.last_done < self.quiet_s


def counters(request: Request) -> Counter[str]:
    """Process-local webhook counters (exposed at GET /github/webhook/stats)."""
    found: Counter[str] = request.app.state.__dict__.setdefault("_state", {}).setdefault(
        "github_counters", Counter()
    )
    return found


class DeliveryNotFound(ControlTowerError):
    """No delivery with that id was stored."""

    code = "DELIVERY_NOT_FOUND"
    http_status = 404


async def receive(request: Request) -> Response:
    """POST /github/webhook: verify the signature over the raw body and store the delivery; tasks are
    made after the answer.

    The app calls it directly, behind its own two middlewares only (`api/fast_path.py`): it takes
    nothing but the request and builds its own response, so the framework's per-request layers
    (dependency solving, response handling, exception handlers, routing) would be pure overhead. Its
    errors are `ControlTowerError`s, answered with the app's JSON error body.
    """
    inflight: InFlight = request.app.state.webhook_inflight
    inflight.enter()
    try:
        return await _receive(request)
    finally:
        inflight.leave()


async def _receive(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    raw = await request.body()
    secrets = [s.get_secret_value() for s in settings.github_webhook_secret]
    if not verify_signature(raw, request.headers.get("x-hub-signature-256"), secrets):
        counters(request)["bad_signature"] += 1
        raise BadSignature
    event = request.headers.get("x-github-event", "")
    delivery_id = request.headers.get("x-github-delivery", "")
    if not event or not delivery_id:
        raise BadDelivery(message="missing X-GitHub-Event or X-GitHub-Delivery", field="headers")
    try:
        # orjson: several times faster than json on ~10 kB bodies, and strict (no NaN, no lone
        # surrogates), so whatever it accepts PostgreSQL's jsonb accepts too.
        payload: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadDelivery(message="body is not JSON", field="body") from exc
    if not isinstance(payload, dict):
        raise BadDelivery(message="body is not a JSON object", field="body")
    payload, raw = storable(payload, raw)
    hook_id = request.headers.get("x-github-hook-id")
    store: AsyncStore | None = request.app.state.delivery_store
    delivery: dict[str, Any] = {
        "delivery_id": delivery_id,
        "event": event,
        "hook_id": hook_id,
        "payload": payload,
        "raw": raw,
        "label_prefix": settings.github_label_prefix,
        "bot_login": settings.github_bot_login,
    }
    if store is not None:  # PostgreSQL: stored from the event loop, no thread-pool hop
        received = await accept_delivery_async(store, **delivery)
    else:
        received = await run_in_threadpool(accept_delivery, request.app.state.session_factory, **delivery)
    if received.duplicate:
        counters(request)["duplicate"] += 1
        return _json({"status": "duplicate", "delivery_id": delivery_id}, 200)
    counters(request)["accepted"] += 1
    if received.plan is not None:  # stored; tasks and commands are made after this answer
        processor: DeliveryProcessor = request.app.state.github_processor
        processor.submit(delivery_id, event, raw, received.plan)
    return _json({"delivery_id": delivery_id, **received.outcome}, 202)


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


# POST requests never get here (the app sends them to `api/fast_path.py`); the route documents the
# endpoint in OpenAPI and makes the path known to the router, so that any other method is a 405.
_HEADERS = (
    ("X-Hub-Signature-256", "sha256=<hex HMAC of the raw body> under one of GITHUB_WEBHOOK_SECRET"),
    ("X-GitHub-Event", "the event name (issues, issue_comment, ...)"),
    ("X-GitHub-Delivery", "the delivery's unique id: a redelivery is answered 200 and does nothing"),
)
router.add_api_route(
    "/github/webhook",
    receive,
    methods=["POST"],
    status_code=202,
    summary="Receive a GitHub App webhook delivery",
    responses={
        200: {"description": "a delivery already stored (redelivery): nothing more is done"},
        202: {"description": "verified and stored; any task it triggers is made after this answer"},
        401: {"model": ErrorResponse, "description": "bad or missing signature (nothing is stored)"},
        413: {"model": ErrorResponse, "description": "body over the size limit"},
        422: {
            "model": ErrorResponse,
            "description": "missing delivery headers, or a body that is not a JSON object",
        },
    },
    openapi_extra={
        "parameters": [
            {
                "name": name,
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": text,
            }
            for name, text in _HEADERS
        ],
        "requestBody": {
            "required": True,
            "description": "the event payload exactly as GitHub sent it (the signature covers these bytes)",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
    },
)


@router.get("/github/deliveries/{delivery_id}")
def get_delivery(delivery_id: str, session: SessionDep) -> dict[str, Any]:
    """A stored delivery without its payload: status (received, processed, ignored) and outcome."""
    row = session.get(DeliveryRow, delivery_id)
    if row is None:
        raise DeliveryNotFound(message=f"no delivery {delivery_id}", field="delivery_id")
    return {
        "delivery_id": row.delivery_id,
        "event": row.event,
        "action": row.action,
        "repo": row.repo,
        "sender": row.sender,
        "status": row.status,
        "outcome": row.outcome,
        "received_at": row.received_at,
        "processed_at": row.processed_at,
    }


@router.get("/github/webhook/stats")
def stats(request: Request) -> dict[str, int]:
    """How many deliveries were accepted, duplicated or refused for a bad signature (this process)."""
    return dict(counters(request))
