"""Receive a verified delivery: store it first, then turn it into tasks and commands."""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import Table, update
from sqlalchemy.orm import Session, sessionmaker

from control_tower import intake
from control_tower.github import deliveries_pg, events, processed_pg
from control_tower.github.tables import CommandRow, DeliveryRow
from control_tower.github.triggers import Plan, RunRequest, plan_delivery
from control_tower.group_commit import GroupCommit
from control_tower.logs import get_logger
from cwom import audit
from cwom.audit import Actor
from cwom.base import new_id, utcnow
from cwom.rows import insert_ignore
from policy import PolicyConfig, PolicyError, TaskCreateV1
from policy.errors import ControlTowerError

log = get_logger(__name__)
DELIVERIES: Table = DeliveryRow.metadata.tables[DeliveryRow.__tablename__]
COMMANDS: Table = CommandRow.metadata.tables[CommandRow.__tablename__]
TYPED_EVENTS = frozenset({"issues", "issue_comment"})


@dataclass(frozen=True)
class Received:
    """What the webhook endpoint answers; `plan` is set when the stored delivery still has work to do."""

    duplicate: bool
    outcome: dict[str, Any]
    plan: Plan | None = None


def accept_delivery(
    factory: sessionmaker[Session],
    *,
    delivery_id: str,
    event: str,
    hook_id: str | None,
    payload: dict[str, Any],
    raw: bytes,
    label_prefix: str,
    bot_login: str,
) -> Received:
    """Store the delivery and say what it asks for; a redelivery (same delivery id) stores nothing.

    Deciding what a delivery means is pure, so it happens before the insert: a delivery that asks for
    nothing is stored already marked `ignored`. One that asks for something is stored as `received`
    and its plan returned, for `process_delivery` to carry out (the webhook does that after
    answering). The typed models' check (~0.2 ms of CPU) is part of that processing, not of the answer.
    """
    plan = plan_delivery(event, payload, label_prefix=label_prefix, bot_login=bot_login)
    ignored = {"reason": plan.ignored} if plan.ignored is not None else None
    stored = _store(
        factory,
        delivery_id=delivery_id,
        event=event,
        hook_id=hook_id,
        payload=payload,
        raw=raw,
        ignored=ignored,
    )
    return _received(stored, plan, ignored)


def _received(stored: bool, plan: Plan, ignored: dict[str, Any] | None) -> Received:
    if not stored:
        return Received(duplicate=True, outcome={"status": "duplicate"})
    if ignored is not None:
        return Received(duplicate=False, outcome={"status": "ignored", **ignored})
    return Received(duplicate=False, outcome={"status": "received"}, plan=plan)


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def storable(payload: dict[str, Any], raw: bytes) -> tuple[dict[str, Any], bytes]:
    """The delivery as it can be stored: PostgreSQL's jsonb cannot hold U+0000, which an issue or
    comment text may carry, so each one becomes U+FFFD (in the payload and in the body that is
    stored and processed; the signature was checked over the body as sent). Bodies without the
    escape (JSON cannot hold a raw NUL) come back as they are, at the cost of one substring test."""
    if b"\\u0000" not in raw:
        return payload, raw
    clean = _without_nul(payload)
    return clean, orjson.dumps(clean)


def receive_delivery(
    factory: sessionmaker[Session],
    *,
    delivery_id: str,
    event: str,
    hook_id: str | None,
    payload: dict[str, Any],
    raw: bytes,
    config: PolicyConfig,
    label_prefix: str,
    bot_login: str,
    max_attempts: int,
) -> Received:
    """Store the delivery, then act on it right away (reconcile's path; the webhook defers the acting)."""
    payload, raw = storable(payload, raw)
    received = accept_delivery(
        factory,
        delivery_id=delivery_id,
        event=event,
        hook_id=hook_id,
        payload=payload,
        raw=raw,
        label_prefix=label_prefix,
        bot_login=bot_login,
    )
    if received.plan is None:
        return received
    outcome = process_delivery(factory, delivery_id, event, raw, received.plan, config, max_attempts)
    return Received(duplicate=False, outcome=outcome)


def _store(
    factory: sessionmaker[Session],
    *,
    delivery_id: str,
    event: str,
    hook_id: str | None,
    payload: dict[str, Any],
    raw: bytes,
    ignored: dict[str, Any] | None,
) -> bool:
    """Insert the delivery unless its id is stored already; True when this call stored it.

    On PostgreSQL concurrent deliveries share one INSERT, with each payload as the verified body's own
    text (`deliveries_pg`); only the key comes back either way: a delivery is ~10 kB of JSON.
    """
    now = utcnow()
    engine = factory.kw["bind"]
    if engine.dialect.name == "postgresql":
        pending = _pending(delivery_id, event, hook_id, payload, raw, ignored, now)
        return deliveries_pg.store(engine, pending)
    values = _columns(delivery_id, event, hook_id, payload, ignored, now)
    with factory() as session, session.begin():
        row = {**values, "payload": payload}
        return insert_ignore(session, DELIVERIES, row, conflict=["delivery_id"]) is not None


def _columns(
    delivery_id: str,
    event: str,
    hook_id: str | None,
    payload: dict[str, Any],
    ignored: dict[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    """A delivery row's columns but its payload."""
    action = payload.get("action")
    return {
        "delivery_id": delivery_id,
        "event": event,
        "action": action if isinstance(action, str) else None,
        "hook_id": hook_id,
        "installation_id": (payload.get("installation") or {}).get("id"),
        "repo": (payload.get("repository") or {}).get("full_name"),
        "sender": (payload.get("sender") or {}).get("login"),
        "received_at": now,
        "status": "received" if ignored is None else "ignored",
        "outcome": ignored,
        "processed_at": None if ignored is None else now,
    }


def _pending(
    delivery_id: str,
    event: str,
    hook_id: str | None,
    payload: dict[str, Any],
    raw: bytes,
    ignored: dict[str, Any] | None,
    now: datetime,
) -> deliveries_pg.PendingDelivery:
    """The delivery as PostgreSQL's writers take it: JSON-ready columns and the body's own text."""
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError:  # JSON may also come as UTF-16/32; GitHub sends UTF-8
        body = json.dumps(payload)
    values = _columns(delivery_id, event, hook_id, payload, ignored, now)
    stamp = now.isoformat()
    values["received_at"] = stamp
    if ignored is not None:
        values["processed_at"] = stamp
    return deliveries_pg.PendingDelivery(values, body)


async def accept_delivery_async(
    store: deliveries_pg.AsyncStore,
    *,
    delivery_id: str,
    event: str,
    hook_id: str | None,
    payload: dict[str, Any],
    raw: bytes,
    label_prefix: str,
    bot_login: str,
) -> Received:
    """`accept_delivery` for the webhook's coroutine on PostgreSQL: planned right here (pure CPU, no
    I/O) and stored through the event loop's own connection; the same rows, the same answer."""
    plan = plan_delivery(event, payload, label_prefix=label_prefix, bot_login=bot_login)
    ignored = {"reason": plan.ignored} if plan.ignored is not None else None
    pending = _pending(delivery_id, event, hook_id, payload, raw, ignored, utcnow())
    return _received(await store.store(pending), plan, ignored)


@dataclass(frozen=True)
class _Command:
    """A command row to queue for the worker; `report` puts it in the delivery's outcome."""

    key: str
    kind: str
    text: str
    comment_id: int | None
    report: bool = True


def refusal_by_typed_models(event: str, raw: bytes) -> str | None:
    """Why githubkit's typed models refuse the payload of a triggering event; None when they accept it."""
    if event not in TYPED_EVENTS:
        return None
    try:
        events.validate(event, raw)
    except (ValidationError, ValueError, KeyError, TypeError) as exc:
        return f"payload not valid: {type(exc).__name__}"
    return None


def process_delivery(
    factory: sessionmaker[Session],
    delivery_id: str,
    event: str,
    raw: bytes,
    plan: Plan,
    config: PolicyConfig,
    max_attempts: int,
) -> dict[str, Any]:
    """Carry out a stored `received` delivery: a payload the typed models refuse triggers nothing (the
    delivery becomes `ignored`, with the reason), any other goes through `process_plan`."""
    refused = refusal_by_typed_models(event, raw)
    if refused is None:
        return process_plan(factory, plan, delivery_id, config, max_attempts)
    outcome = _finishing(factory).submit(_Finish(plan, delivery_id, [], {"reason": refused}, "ignored"))
    log.info("github_delivery", delivery_id=delivery_id, status="ignored")
    return {"status": "ignored", **outcome}


def process_plan(
    factory: sessionmaker[Session], plan: Plan, delivery_id: str, config: PolicyConfig, max_attempts: int
) -> dict[str, Any]:
    """Turn a stored delivery's plan into tasks and commands; safe to repeat (semantic keys dedupe).

    Each run goes through intake (its own transaction). The commands the delivery asks for, and the
    delivery's outcome, are then written in one more transaction, shared with whichever deliveries
    other threads finish at the same time (group commit).
    """
    outcome: dict[str, Any] = {"tasks": [], "refusals": [], "commands": []}
    queued: list[_Command] = []
    for run in plan.runs:
        queued.extend(_submit_run(factory, run, delivery_id, config, max_attempts, outcome))
    queued.extend(
        _Command(command.semantic_key, command.kind, command.text, command.comment_id)
        for command in plan.commands
    )
    outcome = _finishing(factory).submit(_Finish(plan, delivery_id, queued, outcome))
    log.info("github_delivery", delivery_id=delivery_id, status="processed")
    return {"status": "processed", **outcome}


@dataclass(frozen=True)
class _Finish:
    """A processed delivery's last write: its commands, its outcome and its final status."""

    plan: Plan
    delivery_id: str
    commands: list[_Command]
    outcome: dict[str, Any]
    status: str = "processed"


# One group commit per session factory: deliveries processed at the same time by different threads
# share one transaction for their commands and outcomes (one commit, one audit-chain append).
_FINISHING: weakref.WeakKeyDictionary[sessionmaker[Session], GroupCommit[_Finish, dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)
_FINISHING_LOCK = threading.Lock()


def _finishing(factory: sessionmaker[Session]) -> GroupCommit[_Finish, dict[str, Any]]:
    with _FINISHING_LOCK:
        group = _FINISHING.get(factory)
        if group is None:
            ref = weakref.ref(factory)

            def write(items: Sequence[_Finish]) -> list[dict[str, Any]]:
                bound = ref()
                if bound is None:  # pragma: no cover - callers hold the factory
                    raise RuntimeError("session factory is gone")
                return _write_finished(bound, items)

            group = _FINISHING[factory] = GroupCommit(write, batch_max=32)
        return group


def _write_finished(factory: sessionmaker[Session], items: Sequence[_Finish]) -> list[dict[str, Any]]:
    """A group's commands, their audit rows and outcomes, in one transaction; the outcomes stored."""
    engine = factory.kw["bind"]
    if engine.dialect.name == "postgresql":
        redactor = factory.kw.get("info", {}).get("redactor")
        return processed_pg.write(engine, [_finished(item) for item in items], redactor)
    outcomes = []
    with factory() as session, session.begin():
        for item in items:
            outcome = dict(item.outcome)
            for command in item.commands:
                created = _queue_command(session, item.plan, item.delivery_id, command)
                if command.report:
                    reported = {"kind": command.kind, "duplicate": not created}
                    outcome["commands"] = [*outcome["commands"], reported]
            session.execute(
                update(DELIVERIES)
                .where(DELIVERIES.c.delivery_id == item.delivery_id)
                .values(status=item.status, outcome=outcome, processed_at=utcnow())
            )
            outcomes.append(outcome)
    return outcomes


def _finished(item: _Finish) -> processed_pg.Finished:
    """A `_Finish` as the PostgreSQL writer takes it: JSON-ready rows and their audit entries."""
    now = utcnow()
    commands = []
    for command in item.commands:
        row = _command_row(item.plan, item.delivery_id, command, now)
        json_ready = {**row, "created_at": now.isoformat(), "updated_at": now.isoformat()}
        entry = _command_audit(item.plan, command, row["id"])
        commands.append(processed_pg.NewCommand(json_ready, entry, command.report))
    return processed_pg.Finished(item.delivery_id, item.status, item.outcome, now, commands)


def _submit_run(
    factory: sessionmaker[Session],
    run: RunRequest,
    delivery_id: str,
    config: PolicyConfig,
    max_attempts: int,
    outcome: dict[str, Any],
) -> list[_Command]:
    """Send one run request through intake; returns the commands its result asks for."""
    metadata = {**run.metadata, "github": {**run.metadata["github"], "delivery_id": delivery_id}}
    comment_id = run.metadata["github"].get("comment_id")
    try:
        task = TaskCreateV1(
            requested_by={"kind": "human", "id": run.sender, "label": "github"},
            objective=run.objective,
            operation=run.operation,
            target={"repo": run.repo, "ref": run.ref},
            inputs=run.inputs,
            metadata=metadata,
            idempotency_key=run.semantic_key,
        )
        accepted = intake.submit(
            factory, task=task, config=config, source="github", max_attempts=max_attempts
        )
    except PolicyError as error:
        outcome["refusals"].append(error.to_dict())
        text = f"{error.code}: {error.message}"
        return [_Command(run.semantic_key + ":refusal", "refusal", text, comment_id)]
    except (ValidationError, ControlTowerError) as exc:
        # Another delivery of the same intent reached intake first with a different delivery id in its
        # metadata: the semantic key already names that task, so this one is a duplicate, not a conflict.
        if isinstance(exc, intake.IdempotencyConflict):
            outcome["tasks"].append({"semantic_key": run.semantic_key, "duplicate": True})
            return []
        outcome["refusals"].append({"code": "INVALID_TRIGGER", "message": str(exc)[:500]})
        return []
    outcome["tasks"].append(
        {"task_id": accepted.task.id, "run_id": accepted.task.run_id, "duplicate": not accepted.created}
    )
    if accepted.created and accepted.task.run_id is not None:
        # The worker posts the run's status comment ("queued") right away; the run edits it later.
        key = run.semantic_key + ":announce"
        return [_Command(key, "announce", accepted.task.run_id, comment_id, report=False)]
    return []


def _command_row(plan: Plan, delivery_id: str, command: _Command, now: datetime) -> dict[str, Any]:
    """Every column of a new command row."""
    return {
        "id": new_id(),
        "semantic_key": command.key,
        "delivery_id": delivery_id,
        "kind": command.kind,
        "repo": plan.repo or "",
        "issue_number": plan.issue_number or 0,
        "comment_id": command.comment_id,
        "sender": plan.sender or "",
        "installation_id": plan.installation_id,
        "text": command.text,
        "status": "pending",
        "attempts": 0,
        "locked_by": None,
        "lease_expires_at": None,
        "result": None,
        "created_at": now,
        "updated_at": now,
    }


def _command_audit(plan: Plan, command: _Command, command_id: str) -> audit.Entry:
    """The audit entry of a command row that was created."""
    return audit.Entry(
        actor=Actor("human", plan.sender or "unknown"),
        action="created",
        entity_kind="github_command",
        entity_id=command_id,
        before=None,
        after={
            "kind": command.kind,
            "repo": plan.repo,
            "issue_number": plan.issue_number,
            "text": command.text,
        },
        note=None,
        trace_id=None,
    )


def _queue_command(session: Session, plan: Plan, delivery_id: str, command: _Command) -> bool:
    """Insert a command row unless its semantic key is queued already; True when this call did."""
    values = _command_row(plan, delivery_id, command, utcnow())
    # Core, not the ORM: only the new row's id is needed back.
    created = insert_ignore(session, COMMANDS, values, conflict=["semantic_key"])
    if created is None:
        return False
    audit.record_entries(session, [_command_audit(plan, command, created)])
    return True
