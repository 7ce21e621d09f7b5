"""Task intake and reads: POST /tasks/enqueue, GET /tasks, GET /tasks/{id}, POST /policy/evaluate."""

from __future__ import annotations

import email.message
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select

from control_tower import intake
from control_tower.api.deps import PolicyDep, SessionDep
from control_tower.api.pagination import decode_cursor, encode_cursor
from control_tower.api.schemas import (
    ErrorInfo,
    ErrorResponse,
    PolicyDecisionOut,
    TaskOut,
    TaskPage,
    task_out_json,
)
from control_tower.tables import TaskRow
from cwom.enums import TaskStatus
from policy import PolicyError, TaskCreateV1, evaluate
from policy.errors import ControlTowerError

router = APIRouter(tags=["tasks"])

_ERRORS: dict[int | str, dict[str, object]] = {
    403: {"model": ErrorResponse, "description": "refused by policy (recorded)"},
    409: {"model": ErrorResponse, "description": "idempotency key reused with a different body"},
    413: {"model": ErrorResponse, "description": "body over the size limit"},
    422: {"model": ErrorResponse, "description": "the body does not match the task contract"},
}


class TaskNotFound(ControlTowerError):
    """No task has this id."""

    code = "TASK_NOT_FOUND"
    http_status = 404


@router.post("/tasks/enqueue", status_code=201, response_model=TaskOut, responses=_ERRORS)
async def enqueue(task: TaskCreateV1, request: Request, create_cwom: bool = True) -> Response:
    """Validate, evaluate and store a task in one transaction; 200 for an idempotent replay."""
    # The app sends POST /tasks/enqueue to `enqueue_lean` (api/fast_path.py); this declaration documents
    # the route in OpenAPI (the docstring is its text) and answers wherever the fast path is not set up.
    return await _accept(request, task, create_cwom)


async def enqueue_lean(request: Request) -> Response:
    """POST /tasks/enqueue without FastAPI's per-request layers (`api/fast_path.py`): the body is
    validated straight from its bytes and the query parameter parsed here, with FastAPI's rules and
    error locations (a `RequestValidationError`, answered with the app's 422 body)."""
    errors: list[Any] = []
    create_cwom = True
    if request.scope["query_string"]:
        values = request.query_params.getlist("create_cwom")
        if values:
            try:
                create_cwom = _BOOL.validate_python(values[-1])
            except ValidationError as exc:
                errors += _located("query", "create_cwom", exc)
    task = None
    body = await request.body()
    if not body:
        errors.append({"type": "missing", "loc": ("body",), "msg": "Field required"})
    elif not _is_json(request.headers.get("content-type")):
        errors.append({"type": "model_attributes_type", "loc": ("body",), "msg": _NOT_AN_OBJECT})
    else:
        try:
            task = TaskCreateV1.model_validate_json(body)
        except ValidationError as exc:
            errors += _located("body", None, exc)
    if errors or task is None:
        raise RequestValidationError(errors)
    return await _accept(request, task, create_cwom)


async def _accept(request: Request, task: TaskCreateV1, create_cwom: bool) -> Response:
    # A coroutine: on PostgreSQL the task is stored from the event loop (`intake.submit_async`), with
    # no thread-pool hop. The app's state is read from the request rather than through dependencies,
    # which FastAPI would resolve one by one on every request.
    state = request.app.state
    accepted = await intake.submit_async(
        state.session_factory,
        task=task,
        config=state.policy_config,
        writer=state.intake_writer,
        source="api",
        create_cwom=create_cwom,
        max_attempts=state.settings.worker_max_attempts,
    )
    # Serialised here, once, with no model built: handing FastAPI a TaskOut would validate it again
    # against response_model. The schema in OpenAPI is unchanged.
    return Response(
        task_out_json(accepted.columns, ids=accepted.ids, replay=not accepted.created),
        status_code=201 if accepted.created else 200,
        media_type="application/json",
    )


_BOOL: TypeAdapter[bool] = TypeAdapter(bool)
# FastAPI's message for a body that is not JSON (no JSON content type): it validates the bytes.
_NOT_AN_OBJECT = "Input should be a valid dictionary or object to extract fields from"


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI would parse a body of this content type as JSON: application/json or
    application/*+json, parameters allowed; no content type at all is not JSON (its strict mode)."""
    if content_type is None:
        return False
    if content_type == "application/json":
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _located(where: str, name: str | None, exc: ValidationError) -> list[Any]:
    """pydantic's errors with the location FastAPI gives them ("body", ... / "query", name, ...)."""
    head = (where,) if name is None else (where, name)
    return [
        {"type": e["type"], "loc": (*head, *e["loc"]), "msg": e["msg"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


@router.get("/tasks/{task_id}", response_model=TaskOut, responses={404: {"model": ErrorResponse}})
def get_task(task_id: str, session: SessionDep) -> TaskOut:
    """One task by id."""
    row = session.get(TaskRow, task_id)
    if row is None:
        raise TaskNotFound(message=f"task {task_id} not found", field="task_id")
    return TaskOut.from_row(row, ids=intake.cwom_ids(session, row))


@router.get("/tasks", response_model=TaskPage)
def list_tasks(
    session: SessionDep,
    status: TaskStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> TaskPage:
    """Tasks, newest first, keyset-paginated by id."""
    stmt = select(TaskRow).order_by(TaskRow.id.desc()).limit(limit + 1)
    if status is not None:
        stmt = stmt.where(TaskRow.status == status.value)
    if cursor:
        (last_id,) = decode_cursor(cursor, 1)
        stmt = stmt.where(TaskRow.id < str(last_id))
    rows = list(session.execute(stmt).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return TaskPage(
        items=[TaskOut.from_row(r) for r in rows],
        next_cursor=encode_cursor(rows[-1].id) if more and rows else None,
    )


@router.post("/policy/evaluate", response_model=PolicyDecisionOut, tags=["policy"])
def policy_dry_run(task: TaskCreateV1, config: PolicyDep) -> PolicyDecisionOut:
    """The decision policy would take for this task; nothing is stored."""
    try:
        normalised = evaluate(task, config)
    except PolicyError as error:
        return PolicyDecisionOut(
            decision="deny",
            policy_version=config.version_hash,
            error=ErrorInfo(code=error.code, field=error.field, message=error.message),
        )
    return PolicyDecisionOut(
        decision="allow", policy_version=config.version_hash, task=normalised.model_dump(mode="json")
    )
