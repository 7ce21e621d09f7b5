"""The delivery processor: deliveries are acted on after the webhook's answer, and none is lost."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from control_tower.db import make_engine, make_sessionmaker
from control_tower.github.ingest import accept_delivery
from control_tower.github.processor import DeliveryProcessor, ProcessorConfig
from control_tower.github.tables import CommandRow, DeliveryRow
from control_tower.github.triggers import Plan
from control_tower.tables import TaskRow
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


def store(factory: sessionmaker[Session], delivery_id: str, comment_id: int) -> Plan:
    payload = issue_comment_payload(REPO, comment_id, "/tower run ops ls", comment_id=comment_id)
    received = accept_delivery(
        factory,
        delivery_id=delivery_id,
        event="issue_comment",
        hook_id=None,
        payload=payload,
        raw=signed_delivery("issue_comment", payload, "s").body,
        label_prefix="tower:",
        bot_login="control-tower[bot]",
    )
    assert received.plan is not None
    return received.plan


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
    for delivery_id, plan in plans.items():
        processor.submit(delivery_id, plan)
    processor.close(timeout=60)
    assert processor.processed == 12 and processor.failed == 0
    assert {status(factory, d) for d in plans} == {"processed"}
    assert count(factory, TaskRow) == 12
    assert count(factory, CommandRow) == 12  # one "queued" announcement per run


def test_a_failed_delivery_stays_received_until_a_sweep_processes_it(factory: sessionmaker[Session]) -> None:
    plan = store(factory, "f-1", 7)
    # The database is unreachable for this processor: processing fails, nothing is half-written.
    dead = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    try:
        broken = DeliveryProcessor(make_sessionmaker(dead), CONFIG)
        broken.submit("f-1", plan)
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
    healthy.submit("f-1", plan)
    healthy.close(timeout=30)
    assert count(factory, TaskRow) == 1 and count(factory, CommandRow) == 1
    with factory() as session:
        outcome = session.get_one(DeliveryRow, "f-1").outcome
    assert outcome is not None and outcome["tasks"][0]["duplicate"] is True
