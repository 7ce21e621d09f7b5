"""The delivery processor: deliveries are acted on after the webhook's answer, and none is lost."""

from __future__ import annotations

import time
from dataclasses import replace

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from control_tower.db import make_engine, make_sessionmaker
from control_tower.github.ingest import _Command, _Finish, _write_finished, accept_delivery
from control_tower.github.processor import DeliveryProcessor, ProcessorConfig
from control_tower.github.tables import CommandRow, DeliveryRow
from control_tower.github.triggers import Plan
from control_tower.tables import TaskRow
from cwom.audit import AuditRow
from cwom.audit_query import verify
from policy import PolicyConfig
from tests.fakes.github_webhooks import issue_comment_payload, signed_delivery
from tests.support.runs import wait_for

REPO = "acme/app"
CONFIG = ProcessorConfig(
    policy=PolicyConfig(allowed_repo_prefixes=("acme",)),
    max_attempts=3,
    label_prefix="tower:",
    bot_login="control-tower[bot]",
    threads=2,
    sweep_after_s=3600,  # no sweep of its own during the test
)


def store(factory: sessionmaker[Session], delivery_id: str, comment_id: int) -> tuple[str, bytes, Plan]:
    """Store a triggering delivery as the webhook does; what the processor is then handed."""
    payload = issue_comment_payload(REPO, comment_id, "/tower run ops ls", comment_id=comment_id)
    raw = signed_delivery("issue_comment", payload, "s").body
    received = accept_delivery(
        factory,
        delivery_id=delivery_id,
        event="issue_comment",
        hook_id=None,
        payload=payload,
        raw=raw,
        label_prefix="tower:",
        bot_login="control-tower[bot]",
    )
    assert received.plan is not None
    return "issue_comment", raw, received.plan


def status(factory: sessionmaker[Session], delivery_id: str) -> str:
    with factory() as session:
        return session.get_one(DeliveryRow, delivery_id).status


def count(factory: sessionmaker[Session], model: type) -> int:
    with factory() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def test_close_works_off_what_is_queued(factory: sessionmaker[Session]) -> None:
    processor = DeliveryProcessor(factory, CONFIG)
    processor.start()
    plans = {f"q-{n}": store(factory, f"q-{n}", 100 + n) for n in range(12)}
    for delivery_id, stored in plans.items():
        processor.submit(delivery_id, *stored)
    processor.close(timeout=60)
    assert processor.processed == 12 and processor.failed == 0
    assert {status(factory, d) for d in plans} == {"processed"}
    assert count(factory, TaskRow) == 12
    assert count(factory, CommandRow) == 12  # one "queued" announcement per run


def test_a_failed_delivery_stays_received_until_a_sweep_processes_it(factory: sessionmaker[Session]) -> None:
    stored = store(factory, "f-1", 7)
    # The database is unreachable for this processor: processing fails, nothing is half-written.
    dead = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    try:
        broken = DeliveryProcessor(make_sessionmaker(dead), CONFIG)
        broken.submit("f-1", *stored)
        wait_for(lambda: broken.failed == 1)
        broken.close()
    finally:
        dead.dispose()
    assert status(factory, "f-1") == "received"
    assert count(factory, TaskRow) == 0
    # Younger than sweep_after: left alone. Then any process's sweep finishes it.
    healthy = DeliveryProcessor(factory, CONFIG)
    assert healthy.sweep() == []
    assert healthy.sweep(older_than_s=0) == ["f-1"]
    assert status(factory, "f-1") == "processed"
    assert count(factory, TaskRow) == 1
    # A second sweep finds nothing; processing the plan again anyway only records duplicates.
    assert healthy.sweep(older_than_s=0) == []
    healthy.submit("f-1", *stored)
    healthy.close(timeout=30)
    assert count(factory, TaskRow) == 1 and count(factory, CommandRow) == 1
    with factory() as session:
        outcome = session.get_one(DeliveryRow, "f-1").outcome
    assert outcome is not None and outcome["tasks"][0]["duplicate"] is True


def test_deliveries_finished_together_share_one_write_and_dedupe_commands(
    engine: Engine, factory: sessionmaker[Session]
) -> None:
    """Two deliveries of one intent and a third, finished in one group: one command each, audited once."""
    first, again, other = (store(factory, d, n) for d, n in (("g-1", 50), ("g-2", 50), ("g-3", 51)))
    assert count(factory, CommandRow) == 0
    items = [
        _Finish(first[2], "g-1", [_Command("k:50", "status", "", 50)], {"tasks": [], "commands": []}),
        _Finish(again[2], "g-2", [_Command("k:50", "status", "", 50)], {"tasks": [], "commands": []}),
        _Finish(
            other[2],
            "g-3",
            [_Command("k:51", "status", "", 51), _Command("k:51:quiet", "announce", "r", 51, report=False)],
            {"tasks": [{"task_id": "t"}], "commands": []},
        ),
        _Finish(first[2], "g-4", [], {"reason": "payload not valid: ValidationError"}, "ignored"),
    ]
    audited = audit_rows(factory)
    outcomes = _write_finished(factory, items)
    assert outcomes == [
        {"tasks": [], "commands": [{"kind": "status", "duplicate": False}]},
        {"tasks": [], "commands": [{"kind": "status", "duplicate": True}]},
        {"tasks": [{"task_id": "t"}], "commands": [{"kind": "status", "duplicate": False}]},
        {"reason": "payload not valid: ValidationError"},
    ]
    assert count(factory, CommandRow) == 3 and audit_rows(factory) == audited + 3
    with factory() as session:
        stored = {d: session.get_one(DeliveryRow, d) for d in ("g-1", "g-2", "g-3")}
    assert {d: row.status for d, row in stored.items()} == dict.fromkeys(stored, "processed")
    assert [row.outcome for row in stored.values()] == outcomes[:3]
    assert all(row.processed_at is not None for row in stored.values())
    # The same group again: every command is a duplicate, nothing more is written or audited.
    again_outcomes = _write_finished(factory, items[:3])
    assert [o["commands"][0]["duplicate"] for o in again_outcomes] == [True, True, True]
    assert count(factory, CommandRow) == 3 and audit_rows(factory) == audited + 3
    assert verify(engine).ok


def audit_rows(factory: sessionmaker[Session]) -> int:
    return count(factory, AuditRow)


class Switch:
    """A busy signal a test turns on and off."""

    def __init__(self, busy: bool) -> None:
        self.on = busy

    def __call__(self) -> bool:
        return self.on


def test_while_busy_deliveries_wait_but_a_batch_gets_through_every_max_hold(
    factory: sessionmaker[Session],
) -> None:
    busy = Switch(True)
    config = replace(CONFIG, threads=4, max_hold_s=1.0, busy_batch=2)
    stored = {f"b-{n}": store(factory, f"b-{n}", 300 + n) for n in range(6)}
    processor = DeliveryProcessor(factory, config, busy=busy)
    processor.start()
    try:
        for delivery_id, delivery in stored.items():
            processor.submit(delivery_id, *delivery)
        time.sleep(0.5)
        assert processor.processed == 0  # held: the process is answering requests
        # Never starved: batches of `busy_batch` go through while the process stays busy.
        assert wait_for(lambda: processor.processed >= 2, timeout=5)
        assert processor.processed < 6
        busy.on = False  # quiet: the rest goes at once
        assert wait_for(lambda: processor.processed == 6, timeout=10)
    finally:
        processor.close()
    assert processor.failed == 0 and count(factory, TaskRow) == 6
