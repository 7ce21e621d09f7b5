"""Receive a verified delivery: store it first, then turn it into tasks and commands."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from githubkit.webhooks import parse
from pydantic import ValidationError
from sqlalchemy import Table, update
from sqlalchemy.orm import Session, sessionmaker

from control_tower import intake
from control_tower.github import deliveries_pg
from control_tower.github.tables import CommandRow, DeliveryRow
from control_tower.github.triggers import Plan, RunRequest, plan_delivery
from control_tower.logs import get_logger
from cwom import audit
from cwom.audit import Actor
from cwom.base import new_id, utcnow
from cwom.rows import insert_ignore
from policy import PolicyConfig, PolicyError, TaskCreateV1
from policy.errors import ControlTowerError

log = get_logger(__name__)
DELIVERIES: Table = DeliveryRow.metadata.tables[DeliveryRow.__tablename__]
TYPED_EVENTS = frozenset({"issues", "issue_comment"})


@dataclass(frozen=True)
class Received:
    """What the webhook endpoint answers."""

    duplicate: bool
    outcome: dict[str, Any]


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
    """Store the delivery first, then act on it; a redelivery (same delivery id) does nothing.

    Deciding what a delivery means is pure, so it happens before the insert: a delivery that asks for
    nothing is stored already marked `ignored`, in one transaction.
    """
    plan = plan_delivery(event, payload, label_prefix=label_prefix, bot_login=bot_login)
    if plan.ignored is None and event in TYPED_EVENTS:
        try:
            parse(event, raw)  # githubkit's typed models: a payload they refuse triggers nothing
        except (ValidationError, ValueError, KeyError, TypeError) as exc:
            plan = Plan(ignored=f"payload not valid: {type(exc).__name__}")
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
    if not stored:
        return Received(duplicate=True, outcome={"status": "duplicate"})
    if ignored is not None:
        return Received(duplicate=False, outcome={"status": "ignored", **ignored})
    return Received(duplicate=False, outcome=process_plan(factory, plan, delivery_id, config, max_attempts))


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
    values = {
        "delivery_id": delivery_id,
        "event": event,
        "action": payload.get("action") if isinstance(payload.get("action"), str) else None,
        "hook_id": hook_id,
        "installation_id": (payload.get("installation") or {}).get("id"),
        "repo": (payload.get("repository") or {}).get("full_name"),
        "sender": (payload.get("sender") or {}).get("login"),
        "received_at": now,
        "status": "received" if ignored is None else "ignored",
        "outcome": ignored,
        "processed_at": None if ignored is None else now,
    }
    engine = factory.kw["bind"]
    if engine.dialect.name == "postgresql":
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:  # JSON may also come as UTF-16/32; GitHub sends UTF-8
            body = json.dumps(payload)
        json_ready = {
            **values,
            "received_at": now.isoformat(),
            "processed_at": None if ignored is None else now.isoformat(),
        }
        return deliveries_pg.store(engine, deliveries_pg.PendingDelivery(json_ready, body))
    with factory() as session, session.begin():
        row = {**values, "payload": payload}
        return insert_ignore(session, DELIVERIES, row, conflict=["delivery_id"]) is not None


def process_plan(
    factory: sessionmaker[Session], plan: Plan, delivery_id: str, config: PolicyConfig, max_attempts: int
) -> dict[str, Any]:
    """Turn a stored delivery's plan into tasks and commands; safe to repeat (semantic keys dedupe)."""
    outcome: dict[str, Any] = {"tasks": [], "refusals": [], "commands": []}
    for run in plan.runs:
        _submit_run(factory, plan, run, delivery_id, config, max_attempts, outcome)
    for command in plan.commands:
        _queue_command(
            factory,
            plan,
            delivery_id,
            command.semantic_key,
            command.kind,
            command.text,
            command.comment_id,
            outcome,
        )
    return _finish(factory, delivery_id, "processed", outcome)


def _submit_run(
    factory: sessionmaker[Session],
    plan: Plan,
    run: RunRequest,
    delivery_id: str,
    config: PolicyConfig,
    max_attempts: int,
    outcome: dict[str, Any],
) -> None:
    metadata = {**run.metadata, "github": {**run.metadata["github"], "delivery_id": delivery_id}}
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
        _queue_command(
            factory,
            plan,
            delivery_id,
            run.semantic_key + ":refusal",
            "refusal",
            f"{error.code}: {error.message}",
            run.metadata["github"].get("comment_id"),
            outcome,
        )
        return
    except (ValidationError, ControlTowerError) as exc:
        # Another delivery of the same intent reached intake first with a different delivery id in its
        # metadata: the semantic key already names that task, so this one is a duplicate, not a conflict.
        if isinstance(exc, intake.IdempotencyConflict):
            outcome["tasks"].append({"semantic_key": run.semantic_key, "duplicate": True})
            return
        outcome["refusals"].append({"code": "INVALID_TRIGGER", "message": str(exc)[:500]})
        return
    outcome["tasks"].append(
        {"task_id": accepted.task.id, "run_id": accepted.task.run_id, "duplicate": not accepted.created}
    )
    if accepted.created and accepted.task.run_id is not None:
        # The worker posts the run's status comment ("queued") right away; the run edits it later.
        _queue_command(
            factory,
            plan,
            delivery_id,
            run.semantic_key + ":announce",
            "announce",
            accepted.task.run_id,
            run.metadata["github"].get("comment_id"),
            {"commands": []},
        )


def _queue_command(
    factory: sessionmaker[Session],
    plan: Plan,
    delivery_id: str,
    key: str,
    kind: str,
    text: str,
    comment_id: int | None,
    outcome: dict[str, Any],
) -> None:
    now = utcnow()
    values = {
        "id": new_id(),
        "semantic_key": key,
        "delivery_id": delivery_id,
        "kind": kind,
        "repo": plan.repo or "",
        "issue_number": plan.issue_number or 0,
        "comment_id": comment_id,
        "sender": plan.sender or "",
        "installation_id": plan.installation_id,
        "text": text,
        "status": "pending",
        "created_at": now,
        "updated_at": now,
    }
    with factory() as session, session.begin():
        created = insert_ignore(session, CommandRow, values, conflict=["semantic_key"])
        if created is not None:
            audit.record(
                session,
                actor=Actor("human", plan.sender or "unknown"),
                action="created",
                entity_kind="github_command",
                entity_id=created.id,
                after={"kind": kind, "repo": plan.repo, "issue_number": plan.issue_number, "text": text},
            )
    outcome["commands"].append({"kind": kind, "duplicate": created is None})


def _finish(
    factory: sessionmaker[Session], delivery_id: str, status: str, outcome: dict[str, Any]
) -> dict[str, Any]:
    with factory() as session, session.begin():
        session.execute(
            update(DeliveryRow)
            .where(DeliveryRow.delivery_id == delivery_id)
            .values(status=status, outcome=outcome, processed_at=utcnow())
        )
    log.info("github_delivery", delivery_id=delivery_id, status=status)
    return {"status": status, **outcome}
