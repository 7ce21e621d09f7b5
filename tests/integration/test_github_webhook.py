"""POST /github/webhook through real HTTP on both databases: signatures, storage, dedupe, triggers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from control_tower.api.app import create_app
from control_tower.github import deliveries_pg
from control_tower.github.tables import CommandRow, DeliveryRow
from control_tower.pg_async import AsyncConnection
from control_tower.tables import RefusalRow, TaskRow
from tests.conftest import make_settings
from tests.fakes.github_webhooks import issue_comment_payload, issues_labeled_payload, signed_delivery
from tests.support.github import delivery_outcome
from tests.support.runs import wait_for
from tests.support.servers import serve_in_thread

SECRET = "whsec-current-0123456789"
OLD_SECRET = "whsec-previous-987654321"
REPO = "acme/app"


@pytest.fixture
def gh(db_url: str, tmp_path: Path, engine: Engine) -> Iterator[httpx.Client]:
    settings = make_settings(
        db_url, tmp_path, github_webhook_secret=[SecretStr(SECRET), SecretStr(OLD_SECRET)]
    )
    with serve_in_thread(create_app(settings, engine=engine)) as base, httpx.Client(base_url=base) as client:
        yield client


def count(factory: sessionmaker[Session], model: type, *where: object) -> int:
    with factory() as session:
        return int(session.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


def post(
    client: httpx.Client,
    event: str,
    payload: dict[str, object],
    *,
    secret: str = SECRET,
    delivery_id: str | None = None,
) -> httpx.Response:
    return signed_delivery(event, payload, secret, delivery_id=delivery_id).post(
        "/github/webhook", client=client
    )


def test_bad_signature_is_401_and_nothing_is_stored(gh: httpx.Client, factory: sessionmaker[Session]) -> None:
    resp = post(gh, "issues", issues_labeled_payload(REPO, 1, "tower:ops"), secret="wrong-secret-123456")
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "INVALID_SIGNATURE"
    unsigned = gh.post(
        "/github/webhook", content=b"{}", headers={"X-GitHub-Event": "ping", "X-GitHub-Delivery": "x"}
    )
    assert unsigned.status_code == 401
    assert count(factory, DeliveryRow) == 0 and count(factory, TaskRow) == 0
    assert gh.get("/github/webhook/stats").json()["bad_signature"] == 2


def test_rotated_secret_is_accepted(gh: httpx.Client, factory: sessionmaker[Session]) -> None:
    payload = {"zen": "Keep it simple.", "hook_id": 1, "nested": {"é": [1, 2.5, None, True]}}
    resp = post(gh, "ping", payload, secret=OLD_SECRET)
    assert resp.status_code == 202
    assert resp.json()["status"] == "ignored"
    assert count(factory, DeliveryRow) == 1
    with factory() as session:  # the body's own text went in; it reads back as the same JSON value
        stored = session.execute(select(DeliveryRow)).scalar_one()
        assert stored.payload == payload and stored.event == "ping"


def test_label_creates_one_task_and_redelivery_does_nothing(
    gh: httpx.Client, factory: sessionmaker[Session]
) -> None:
    payload = issues_labeled_payload(REPO, 7, "tower:ops", body="Please format\n\n```sh\nmake fmt\n```\n")
    first = post(gh, "issues", payload, delivery_id="d-1")
    assert first.status_code == 202, first.text
    assert delivery_outcome(gh.get, first)["tasks"][0]["duplicate"] is False
    for _ in range(2):
        again = post(gh, "issues", payload, delivery_id="d-1")
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
    # The same intent in a different delivery (GitHub retried with a new id) is one run too.
    other = post(gh, "issues", payload, delivery_id="d-2")
    assert delivery_outcome(gh.get, other)["tasks"][0]["duplicate"] is True
    assert count(factory, TaskRow) == 1 and count(factory, DeliveryRow) == 2
    with factory() as session:
        task = session.execute(select(TaskRow)).scalar_one()
    assert task.source == "github" and task.operation == "ops"
    assert task.body["inputs"]["command"] == "make fmt"
    assert task.body["requested_by"] == {"kind": "human", "id": "alice", "label": "github"}
    assert task.body["metadata"]["github"]["issue_number"] == 7


def test_comment_commands(gh: httpx.Client, factory: sessionmaker[Session]) -> None:
    body = "Thanks!\n/tower run ops ls -la\n/tower approve looks good\n/tower frobnicate"
    resp = post(gh, "issue_comment", issue_comment_payload(REPO, 3, body, comment_id=11))
    out = delivery_outcome(gh.get, resp)
    assert len(out["tasks"]) == 1
    assert sorted(c["kind"] for c in out["commands"]) == ["approve", "help"]
    with factory() as session:
        task = session.execute(select(TaskRow)).scalar_one()
        kinds = {c.kind: c for c in session.execute(select(CommandRow)).scalars()}
    assert task.body["inputs"]["command"] == "ls -la"
    assert kinds["approve"].text == "looks good" and kinds["approve"].sender == "alice"
    # The same comment in another delivery adds nothing.
    again = delivery_outcome(
        gh.get, post(gh, "issue_comment", issue_comment_payload(REPO, 3, body, comment_id=11))
    )
    assert again["tasks"][0]["duplicate"] is True and all(c["duplicate"] for c in again["commands"])
    assert count(factory, TaskRow) == 1
    assert count(factory, CommandRow, CommandRow.kind != "announce") == 2
    assert count(factory, CommandRow, CommandRow.kind == "announce") == 1


def test_nul_characters_in_an_issue_are_stored_as_replacement_characters(
    gh: httpx.Client, factory: sessionmaker[Session]
) -> None:
    """PostgreSQL's jsonb and text cannot hold U+0000, which an issue's text may carry: the delivery is
    still stored and acted on (never a 500 that GitHub would retry forever), with U+FFFD instead."""
    payload = issues_labeled_payload(
        REPO, 9, "tower:ops", title="Tidy\u0000up", body="Run it\u0000\n\n```sh\nmake fmt\n```\n"
    )
    resp = post(gh, "issues", payload, delivery_id="d-nul")
    assert resp.status_code == 202, resp.text
    outcome = delivery_outcome(gh.get, resp)
    assert outcome["tasks"] and outcome["tasks"][0]["duplicate"] is False, outcome
    with factory() as session:
        task = session.execute(select(TaskRow)).scalar_one()
        delivery = session.execute(select(DeliveryRow).where(DeliveryRow.delivery_id == "d-nul")).scalar_one()
    assert "Tidy\ufffdup" in task.body["objective"] and "\x00" not in task.body["objective"]
    assert delivery.payload["issue"]["title"] == "Tidy\ufffdup"
    # A body with a literal backslash-u0000 text (no NUL) is stored exactly as sent.
    literal = issues_labeled_payload(REPO, 10, "tower:ops", title="Escape \\u0000 stays text")
    assert post(gh, "issues", literal, delivery_id="d-lit").status_code == 202
    with factory() as session:
        stored = session.execute(select(DeliveryRow).where(DeliveryRow.delivery_id == "d-lit")).scalar_one()
    assert stored.payload["issue"]["title"] == "Escape \\u0000 stays text"


@pytest.mark.parametrize(
    ("body", "kwargs"),
    [
        ("/tower run ops rm -rf /", {"sender": "dependabot[bot]", "sender_type": "Bot"}),
        ("/tower run ops ls", {"sender": "control-tower[bot]", "sender_type": "Bot"}),
        ("> /tower run ops ls", {}),
        ("```\n/tower run ops ls\n```", {}),
        ("`/tower run ops ls`", {}),
        ("/tower run ops ls", {"action": "edited", "previous_body": "hi"}),
        ("just chatting", {}),
    ],
)
def test_things_that_never_trigger(
    gh: httpx.Client, factory: sessionmaker[Session], body: str, kwargs: dict[str, str]
) -> None:
    resp = post(gh, "issue_comment", issue_comment_payload(REPO, 4, body, **kwargs))
    assert resp.status_code == 202
    assert resp.json()["status"] == "ignored"
    assert count(factory, TaskRow) == 0 and count(factory, CommandRow) == 0
    assert count(factory, DeliveryRow) == 1  # recorded all the same


def test_policy_refusal_is_recorded_and_answered(gh: httpx.Client, factory: sessionmaker[Session]) -> None:
    resp = post(gh, "issue_comment", issue_comment_payload("evil/app", 5, "/tower run docs fix it"))
    assert delivery_outcome(gh.get, resp)["refusals"][0]["code"] == "REPO_NOT_ALLOWED"
    assert count(factory, RefusalRow) == 1
    assert count(factory, CommandRow, CommandRow.kind == "refusal") == 1
    assert count(factory, TaskRow) == 0


def test_unknown_events_are_acknowledged_and_recorded(
    gh: httpx.Client, factory: sessionmaker[Session]
) -> None:
    for event in ("push", "check_suite", "installation", "star"):
        resp = post(gh, event, {"action": "created", "repository": {"full_name": REPO}})
        assert resp.status_code == 202
    assert count(factory, DeliveryRow) == 4
    assert count(factory, DeliveryRow, DeliveryRow.status == "ignored") == 4


def test_malformed_deliveries_are_4xx(gh: httpx.Client) -> None:
    d = signed_delivery("issues", {"a": 1}, SECRET)
    headers = {k: v for k, v in d.headers.items() if k != "X-GitHub-Delivery"}
    assert gh.post("/github/webhook", content=d.body, headers=headers).status_code == 400
    from control_tower.github.signature import sign

    raw = b"not json"
    resp = gh.post(
        "/github/webhook",
        content=raw,
        headers={
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": "z",
            "X-Hub-Signature-256": sign(raw, SECRET),
        },
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "INVALID_DELIVERY"


def test_payload_the_typed_models_refuse_triggers_nothing(
    gh: httpx.Client, factory: sessionmaker[Session]
) -> None:
    good = issues_labeled_payload(REPO, 8, "tower:ops", body="make fmt")
    broken = {**good, "issue": {**good["issue"], "number": "not-a-number"}}  # type: ignore[dict-item]
    first = post(gh, "issues", broken)
    # Stored and answered first; the typed models' check is part of processing, after the answer.
    assert first.status_code == 202 and first.json()["status"] == "received"
    path = f"/github/deliveries/{first.json()['delivery_id']}"
    found = wait_for(lambda: (body := gh.get(path).json())["status"] != "received" and body)
    assert found["status"] == "ignored" and found["processed_at"] is not None
    assert found["outcome"]["reason"].startswith("payload not valid")
    assert count(factory, TaskRow) == 0 and count(factory, CommandRow) == 0
    # The validator is built once per event and reused: the next (valid) delivery still triggers.
    second = post(gh, "issues", good)
    assert delivery_outcome(gh.get, second)["tasks"][0]["duplicate"] is False
    assert count(factory, TaskRow) == 1 and count(factory, CommandRow, CommandRow.kind == "announce") == 1


def test_delivery_status_endpoint(gh: httpx.Client) -> None:
    payload = issues_labeled_payload(REPO, 9, "tower:ops", body="make fmt")
    resp = post(gh, "issues", payload, delivery_id="d-status")
    assert resp.json() == {"delivery_id": "d-status", "status": "received"}
    delivery_outcome(gh.get, resp)
    found = gh.get("/github/deliveries/d-status").json()
    assert found["status"] == "processed" and found["event"] == "issues" and found["action"] == "labeled"
    assert found["repo"] == REPO and found["sender"] == "alice" and "payload" not in found
    missing = gh.get("/github/deliveries/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "DELIVERY_NOT_FOUND"


def test_delivery_left_unprocessed_by_a_dead_process_is_swept(
    db_url: str, tmp_path: Path, engine: Engine, factory: sessionmaker[Session]
) -> None:
    """The process that stored a delivery died before processing it: the next server's sweep does it."""
    from control_tower.github.ingest import accept_delivery
    from tests.fakes.github_webhooks import signed_delivery as make

    payload = issue_comment_payload(REPO, 12, "/tower run ops ls", comment_id=1200)
    body = make("issue_comment", payload, SECRET).body
    stored = accept_delivery(
        factory,
        delivery_id="orphan-1",
        event="issue_comment",
        hook_id=None,
        payload=payload,
        raw=body,
        label_prefix="tower:",
        bot_login="control-tower[bot]",
    )
    assert stored.plan is not None and stored.outcome == {"status": "received"}
    assert count(factory, TaskRow) == 0  # stored, not acted on
    settings = make_settings(
        db_url, tmp_path, github_webhook_secret=[SecretStr(SECRET)], github_sweep_after_seconds=0
    )
    with serve_in_thread(create_app(settings, engine=engine)) as base, httpx.Client(base_url=base) as client:
        done = wait_for(lambda: client.get("/github/deliveries/orphan-1").json()["status"] == "processed")
        assert done
    assert count(factory, TaskRow) == 1
    assert count(factory, CommandRow, CommandRow.kind == "announce") == 1


def test_concurrent_copies_of_one_delivery_store_it_once(
    gh: httpx.Client, factory: sessionmaker[Session]
) -> None:
    # Copies sent at the same time share a group commit (on PostgreSQL, one INSERT from the event
    # loop): exactly one of them is told it stored the delivery, and only that one is acted on.
    payload = issues_labeled_payload(REPO, 11, "tower:analysis", title="Concurrent copies")
    delivery = signed_delivery("issues", payload, SECRET, delivery_id="d-concurrent")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: delivery.post("/github/webhook", client=gh), range(8)))
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [200] * 7 + [202], [answer.text for answer in answers]
    first = next(answer for answer in answers if answer.status_code == 202)
    assert delivery_outcome(gh.get, first)["tasks"][0]["duplicate"] is False
    assert count(factory, DeliveryRow) == 1 and count(factory, TaskRow) == 1


def test_a_large_payload_is_stored_whole(
    gh: httpx.Client, factory: sessionmaker[Session], engine: Engine
) -> None:
    text = "".join(f"line {i}: nothing to do here, just a long comment\n" for i in range(2000))  # ~100 kB
    payload = issue_comment_payload(REPO, 12, text, comment_id=4242)
    resp = post(gh, "issue_comment", payload, delivery_id="d-large")
    assert resp.status_code == 202 and resp.json()["status"] == "ignored", resp.text
    with factory() as session:
        assert session.get_one(DeliveryRow, "d-large").payload == payload
    if engine.dialect.name == "postgresql":  # migration 0007: payloads are compressed with lz4
        with engine.connect() as conn:
            method = conn.exec_driver_sql(
                "SELECT pg_column_compression(payload) FROM github_deliveries WHERE delivery_id = 'd-large'"
            ).scalar_one()
        assert method == "lz4"


def test_the_webhook_store_replaces_a_connection_the_server_dropped(
    gh: httpx.Client, factory: sessionmaker[Session], engine: Engine
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the event loop's delivery store is PostgreSQL's")
    assert post(gh, "ping", {"zen": "before"}, delivery_id="d-before").status_code == 202
    with engine.connect() as conn:
        dropped = conn.exec_driver_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %(name)s",
            {"name": deliveries_pg.APPLICATION_NAME},
        ).scalar_one()
    assert dropped == 1
    time.sleep(AsyncConnection.idle_ping_s)
    after = post(gh, "ping", {"zen": "after"}, delivery_id="d-after")
    assert after.status_code == 202, after.text
    assert count(factory, DeliveryRow) == 2


def test_the_webhook_path_keeps_the_apps_http_behaviour(
    gh: httpx.Client, factory: sessionmaker[Session]
) -> None:
    # POST /github/webhook skips the framework's layers (api/fast_path.py); what they gave stays.
    resp = post(gh, "ping", {"zen": "hello"}, delivery_id="d-ping")
    assert resp.status_code == 202 and resp.headers["content-type"] == "application/json"
    assert len(resp.headers["x-request-id"]) == 32
    echoed = signed_delivery("ping", {"zen": "again"}, SECRET)
    answer = gh.post(
        "/github/webhook", content=echoed.body, headers={**echoed.headers, "X-Request-ID": "req-7"}
    )
    assert answer.status_code == 202 and answer.headers["x-request-id"] == "req-7"
    # Over the body limit: 413, by Content-Length and while streaming, and nothing stored.
    big = signed_delivery("issue_comment", issue_comment_payload(REPO, 1, "x" * (1 << 20)), SECRET)
    too_big = gh.post("/github/webhook", content=big.body, headers=big.headers)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

    def chunks() -> Iterator[bytes]:
        for _ in range(300):
            yield b"x" * 4096

    streamed = gh.post("/github/webhook", content=chunks(), headers=big.headers)
    assert streamed.status_code == 413
    # A payload the handler cannot make sense of is the app's 500 body, and nothing is stored.
    broken = post(gh, "issues", {"action": "labeled", "issue": "not an object"}, delivery_id="d-broken")
    assert broken.status_code == 500 and broken.json()["error"]["code"] == "INTERNAL_ERROR"
    # Other methods go through the app: the path is known, the method is not.
    assert gh.get("/github/webhook").status_code == 405
    assert count(factory, DeliveryRow) == 2
    # The endpoint stays documented, with its headers, body and answers.
    doc = gh.get("/openapi.json").json()["paths"]["/github/webhook"]["post"]
    assert {p["name"] for p in doc["parameters"]} == {
        "X-Hub-Signature-256",
        "X-GitHub-Event",
        "X-GitHub-Delivery",
    }
    assert {"200", "202", "401", "413", "422"} <= set(doc["responses"])
    assert doc["requestBody"]["required"] is True
