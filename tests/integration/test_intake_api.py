"""The intake spine through real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from control_tower import intake, intake_pg
from control_tower.intake_plan import IntakePlan
from control_tower.pg_async import AsyncConnection
from control_tower.tables import RefusalRow, TaskRow
from cwom import audit as audit_mod
from cwom import audit_query
from cwom.audit import AuditRow
from cwom.tables import ConstraintSnapshotRow, ContextPacketRow, IssueRow, RepoRow, RunRow
from policy import PolicyConfig, TaskCreateV1, evaluate
from tests.conftest import task_body


def count(factory: sessionmaker[Session], model: type) -> int:
    with factory() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def test_enqueue_creates_task_and_cwom(api: httpx.Client, factory: sessionmaker[Session]) -> None:
    resp = api.post("/tasks/enqueue", json=task_body(idempotency_key="k-1"))
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["status"] == "queued"
    assert body["idempotent_replay"] is False
    assert set(body["cwom"]) == {
        "repo_id",
        "issue_id",
        "context_packet_id",
        "constraint_snapshot_id",
        "run_id",
    }
    assert body["run_id"] == body["cwom"]["run_id"]
    assert resp.headers["x-request-id"]
    got = api.get(f"/tasks/{body['task_id']}")
    assert got.status_code == 200
    assert got.json()["cwom"] == body["cwom"]
    assert got.json()["created_at"] == body["created_at"]
    with factory() as session:
        run = session.get_one(RunRow, body["run_id"])
        assert run.status == "queued" and run.task_id == body["task_id"]
        actions = set(
            session.execute(select(AuditRow.action).where(AuditRow.trace_id == body["trace_id"])).scalars()
        )
    assert {"policy_allowed", "created", "linked"} <= actions


def test_idempotent_replay_and_conflict(api: httpx.Client, factory: sessionmaker[Session]) -> None:
    first = api.post("/tasks/enqueue", json=task_body(idempotency_key="same"))
    again = api.post("/tasks/enqueue", json=task_body(idempotency_key="same"))
    # Legacy aliases describe the same request, so they replay too.
    legacy = task_body(idempotency_key="same")
    legacy["type"] = legacy.pop("operation")
    legacy["payload"] = legacy.pop("inputs")
    aliased = api.post("/tasks/enqueue", json=legacy)
    other = api.post("/tasks/enqueue", json=task_body(idempotency_key="same", objective="something else"))
    assert first.status_code == 201
    assert again.status_code == 200 and aliased.status_code == 200
    assert again.json()["task_id"] == first.json()["task_id"] == aliased.json()["task_id"]
    assert again.json()["idempotent_replay"] is True
    assert again.json()["cwom"] == first.json()["cwom"]
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    assert other.json()["error"]["field"] == "idempotency_key"
    assert count(factory, TaskRow) == 1
    assert count(factory, RunRow) == 1


def test_policy_refusal_is_403_and_recorded(api: httpx.Client, factory: sessionmaker[Session]) -> None:
    resp = api.post("/tasks/enqueue", json=task_body(target={"repo": "evil/app"}))
    assert resp.status_code == 403
    assert resp.json() == {
        "error": {
            "code": "REPO_NOT_ALLOWED",
            "field": "target.repo",
            "message": "repository 'evil/app' is not in the allowed prefixes",
        }
    }
    assert count(factory, TaskRow) == 0
    with factory() as session:
        refusal = session.execute(select(RefusalRow)).scalar_one()
        assert refusal.code == "REPO_NOT_ALLOWED"
        assert refusal.body["target"]["repo"] == "evil/app"
        denied = session.execute(select(AuditRow).where(AuditRow.action == "policy_denied")).scalar_one()
        assert denied.entity_id == refusal.id
        assert denied.after is not None and denied.after["policy_version"].startswith("sha256:")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"objective": "x"}, "requested_by"),
        (task_body(target={"repo": "nope"}), "target.repo"),
        (task_body(constraints={"time_budget_seconds": "soon"}), "constraints.time_budget_seconds"),
        ([1, 2, 3], "body"),
    ],
)
def test_schema_errors_are_422_with_the_error_shape(api: httpx.Client, payload: object, field: str) -> None:
    resp = api.post("/tasks/enqueue", json=payload)
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["code"] == "VALIDATION_ERROR"
    assert err["field"] == field
    assert err["message"]


def test_malformed_json_is_422(api: httpx.Client) -> None:
    resp = api.post("/tasks/enqueue", content=b'{"objective": ', headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "VALIDATION_ERROR"


def test_oversized_body_is_413(api: httpx.Client, factory: sessionmaker[Session]) -> None:
    big = task_body(inputs={"blob": "x" * (1 << 20)})
    resp = api.post("/tasks/enqueue", json=big)
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

    def chunks() -> object:
        for _ in range(300):
            yield b"x" * 4096

    streamed = api.post("/tasks/enqueue", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert count(factory, TaskRow) == 0


def test_get_unknown_task_is_404(api: httpx.Client) -> None:
    resp = api.get("/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "TASK_NOT_FOUND"
    unknown_route = api.get("/nope")
    assert unknown_route.status_code == 404
    assert unknown_route.json()["error"]["code"] == "NOT_FOUND"


def test_list_is_keyset_paginated(api: httpx.Client) -> None:
    ids = [api.post("/tasks/enqueue", json=task_body(objective=f"t{i}")).json()["task_id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 2, "status": "queued"}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/tasks", params=params).json()
        seen += [item["task_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)
    assert api.get("/tasks", params={"status": "failed"}).json()["items"] == []
    assert api.get("/tasks", params={"status": "bogus"}).status_code == 422
    bad = api.get("/tasks", params={"cursor": "!!!"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "INVALID_CURSOR"


def test_policy_dry_run_stores_nothing(api: httpx.Client, factory: sessionmaker[Session]) -> None:
    allow = api.post("/policy/evaluate", json=task_body())
    deny = api.post("/policy/evaluate", json=task_body(constraints={"allow_network": True}))
    assert allow.json()["decision"] == "allow"
    assert allow.json()["task"]["target"]["repo"] == "acme/app"
    assert deny.json()["decision"] == "deny"
    assert deny.json()["error"]["code"] == "NETWORK_ACCESS_DENIED"
    assert allow.json()["policy_version"] == deny.json()["policy_version"]
    assert count(factory, TaskRow) == 0 and count(factory, RefusalRow) == 0 and count(factory, AuditRow) == 0


def test_health_ready_and_openapi(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json()["status"] == "ready"
    spec = api.get("/openapi.json").json()
    assert "/tasks/enqueue" in spec["paths"]
    assert "TaskCreateV1" in spec["components"]["schemas"]


def test_fifty_concurrent_enqueues_with_one_key_make_one_task(
    api: httpx.Client, factory: sessionmaker[Session]
) -> None:
    body = task_body(idempotency_key="race")
    base = str(api.base_url)

    def post(_: int) -> tuple[int, str]:
        with httpx.Client(base_url=base, timeout=60) as client:
            resp = client.post("/tasks/enqueue", json=body)
            return resp.status_code, resp.json()["task_id"]

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(post, range(50)))
    statuses = sorted(code for code, _ in results)
    assert statuses.count(201) == 1 and statuses.count(200) == 49
    assert len({task_id for _, task_id in results}) == 1
    assert count(factory, TaskRow) == 1
    assert count(factory, RunRow) == 1
    assert count(factory, IssueRow) == 1


def test_failure_inside_intake_leaves_no_partial_rows(factory: sessionmaker[Session]) -> None:
    task = TaskCreateV1.model_validate(task_body(idempotency_key="boom"))
    config = PolicyConfig(allowed_repo_prefixes=("acme",))
    with pytest.raises(intake.FailureInjected):
        intake.submit(factory, task=task, config=config, fail_after_cwom=True)
    for model in (TaskRow, RepoRow, IssueRow, ContextPacketRow, ConstraintSnapshotRow, RunRow, AuditRow):
        assert count(factory, model) == 0, model
    # The key was not consumed: the same request succeeds afterwards.
    accepted = intake.submit(factory, task=task, config=config)
    assert accepted.created


def test_repo_is_found_again_by_slug(factory: sessionmaker[Session]) -> None:
    config = PolicyConfig(allowed_repo_prefixes=("acme",))
    a = intake.submit(factory, task=TaskCreateV1.model_validate(task_body(objective="a")), config=config)
    b = intake.submit(
        factory,
        task=TaskCreateV1.model_validate(task_body(objective="b", target={"repo": "ACME/app"})),
        config=config,
    )
    assert a.task.run_id != b.task.run_id
    assert count(factory, RepoRow) == 1


def test_concurrent_distinct_tasks_are_all_stored_whole(
    factory: sessionmaker[Session], engine: Engine
) -> None:
    """Many threads at once (on PostgreSQL they share statements through group commit): every task
    gets all of its objects and audit rows, the duplicates of one key make one task, and the chain
    verifies."""
    config = PolicyConfig(allowed_repo_prefixes=("acme",))
    bodies = [task_body(objective=f"task {i}") for i in range(60)]
    bodies += [task_body(objective="dup", idempotency_key="dup-key") for _ in range(10)]
    bodies += [task_body(objective=f"other {i}", target={"repo": f"acme/r{i % 3}"}) for i in range(15)]

    def submit(body: dict[str, object]) -> intake.Accepted:
        return intake.submit(factory, task=TaskCreateV1.model_validate(body), config=config)

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(submit, bodies))
    created = [r for r in results if r.created]
    assert len(created) == 60 + 1 + 15
    assert len({r.task.id for r in results[60:70]}) == 1
    assert count(factory, TaskRow) == count(factory, RunRow) == count(factory, IssueRow) == 76
    assert count(factory, RepoRow) == 4
    # 9 rows per task (policy_allowed, 4 objects created, 3 linked, task created) + 1 per new repo.
    assert count(factory, AuditRow) == 76 * 9 + 4
    with factory() as session:
        for accepted in created:
            assert accepted.ids is not None
            run = session.get_one(RunRow, accepted.ids.run_id)
            assert run.task_id == accepted.task.id and run.issue_id == accepted.ids.issue_id
            trail = session.execute(
                select(AuditRow.entity_id).where(AuditRow.trace_id == accepted.task.trace_id)
            ).scalars()
            assert accepted.task.id in set(trail)
    assert audit_query.verify(engine).ok


def test_a_stale_cached_repo_is_looked_up_again(factory: sessionmaker[Session], engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the Repo cache belongs to the PostgreSQL writer; SQLite looks up in its transaction")
    config = PolicyConfig(allowed_repo_prefixes=("acme",))
    first = intake.submit(factory, task=TaskCreateV1.model_validate(task_body(objective="a")), config=config)
    assert first.ids is not None
    intake_pg.REPOS.put(engine, "acme/app", "01ZZZZZZZZZZZZZZZZZZZZZZZZ")  # gone, e.g. a restored database
    again = intake.submit(factory, task=TaskCreateV1.model_validate(task_body(objective="b")), config=config)
    assert again.ids is not None and again.ids.repo_id == first.ids.repo_id
    assert intake_pg.REPOS.get(engine, "acme/app") == first.ids.repo_id
    assert count(factory, RepoRow) == 1 and count(factory, TaskRow) == 2
    assert audit_query.verify(engine).ok


def test_one_statement_stores_each_task_of_a_batch_or_none_of_its_rows(
    factory: sessionmaker[Session], engine: Engine
) -> None:
    """The group-commit statement itself: three tasks, one of them reusing a key already stored."""
    if engine.dialect.name != "postgresql":
        pytest.skip("the multi-task statement is the PostgreSQL writer's")
    config = PolicyConfig(allowed_repo_prefixes=("acme",))
    stored = intake.submit(
        factory, task=TaskCreateV1.model_validate(task_body(idempotency_key="taken")), config=config
    )
    assert stored.ids is not None

    def item(**body: object) -> intake_pg._Item:
        task = evaluate(TaskCreateV1.model_validate(task_body(**body)), config)
        built = IntakePlan(task, config, "api", True, 3).build(
            repo_id=stored.ids.repo_id if stored.ids else None
        )
        return intake_pg._Item(built, audit_mod.prepare(built.audit, None))

    batch = [item(objective="one"), item(idempotency_key="taken"), item(objective="three")]
    created = intake_pg._execute(engine, batch)
    assert created == {batch[0].built.task["id"], batch[2].built.task["id"]}
    assert count(factory, TaskRow) == count(factory, RunRow) == count(factory, IssueRow) == 3
    assert count(factory, ContextPacketRow) == count(factory, ConstraintSnapshotRow) == 3
    with factory() as session:
        loser = batch[1].built
        assert loser.objects is not None
        assert session.get(RunRow, loser.objects.ids.run_id) is None
        assert not session.execute(
            select(AuditRow).where(AuditRow.trace_id == loser.task["trace_id"])
        ).first()
        seqs = list(session.execute(select(AuditRow.seq).order_by(AuditRow.seq)).scalars())
    assert seqs == list(range(1, 3 * 9 + 1 + 1))
    assert audit_query.verify(engine).ok


def test_concurrent_enqueues_over_http_are_all_stored_whole(
    api: httpx.Client, factory: sessionmaker[Session], engine: Engine
) -> None:
    """The HTTP path (on PostgreSQL: the event loop's writer and its group commit): tasks sharing
    statements, one key sent ten times and new Repos created meanwhile are each stored whole."""
    bodies = [task_body(objective=f"http {i}") for i in range(40)]
    bodies += [task_body(objective="dup", idempotency_key="http-dup") for _ in range(10)]
    bodies += [task_body(objective=f"repo {i}", target={"repo": f"acme/h{i % 3}"}) for i in range(9)]
    base = str(api.base_url)

    def post(body: dict[str, object]) -> httpx.Response:
        with httpx.Client(base_url=base, timeout=60) as client:
            return client.post("/tasks/enqueue", json=body)

    with ThreadPoolExecutor(max_workers=24) as pool:
        responses = list(pool.map(post, bodies))
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 40 + 1 + 9 and statuses.count(200) == 9, statuses
    assert len({r.json()["task_id"] for r in responses[40:50]}) == 1
    assert count(factory, TaskRow) == count(factory, RunRow) == count(factory, IssueRow) == 50
    assert count(factory, RepoRow) == 4
    assert count(factory, AuditRow) == 50 * 9 + 4
    with factory() as session:
        for resp in responses:
            body = resp.json()
            run = session.get_one(RunRow, body["cwom"]["run_id"])
            assert run.task_id == body["task_id"] and run.repo_id == body["cwom"]["repo_id"]
    assert audit_query.verify(engine).ok


def test_a_stale_cached_repo_is_looked_up_again_over_http(
    api: httpx.Client, factory: sessionmaker[Session], engine: Engine
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the Repo cache belongs to the PostgreSQL writer; SQLite looks up in its transaction")
    first = api.post("/tasks/enqueue", json=task_body(objective="a")).json()
    intake_pg.REPOS.put(engine, "acme/app", "01ZZZZZZZZZZZZZZZZZZZZZZZZ")  # gone, e.g. a restored database
    again = api.post("/tasks/enqueue", json=task_body(objective="b"))
    assert again.status_code == 201, again.text
    assert again.json()["cwom"]["repo_id"] == first["cwom"]["repo_id"]
    assert count(factory, RepoRow) == 1 and count(factory, TaskRow) == 2
    assert audit_query.verify(engine).ok


def test_the_http_writer_replaces_a_connection_the_server_dropped(
    api: httpx.Client, factory: sessionmaker[Session], engine: Engine
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the event loop's writer is PostgreSQL's")
    assert api.post("/tasks/enqueue", json=task_body(objective="before")).status_code == 201
    with engine.connect() as conn:
        dropped = conn.exec_driver_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %(name)s",
            {"name": intake_pg.APPLICATION_NAME},
        ).scalar_one()
    assert dropped == 1
    time.sleep(AsyncConnection.idle_ping_s)
    after = api.post("/tasks/enqueue", json=task_body(objective="after"))
    assert after.status_code == 201, after.text
    assert count(factory, TaskRow) == 2


def test_control_characters_and_quotes_in_task_text_are_chained_exactly(
    api: httpx.Client, factory: sessionmaker[Session], engine: Engine
) -> None:
    """The audit rows' canonical texts travel joined by a control character (PostgreSQL): user text
    holding that very character, quotes, backslashes and non-ASCII must still be stored and hashed
    exactly, in a batch with other tasks."""
    tricky = 'split\x1ehere \x1f "quoted" \\back\\slash é ☃ \x00nul? no'.replace("\x00", "")
    bodies = [task_body(objective=tricky, inputs={"command": tricky, "note\x1ekey": tricky})] + [
        task_body(objective=f"plain {n}") for n in range(7)
    ]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda body: api.post("/tasks/enqueue", json=body), bodies))
    assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
    trace = responses[0].json()["trace_id"]
    with factory() as session:
        rows = session.execute(select(AuditRow).where(AuditRow.trace_id == trace)).scalars().all()
        issue = session.get_one(IssueRow, responses[0].json()["cwom"]["issue_id"])
    assert issue.description == tricky
    created_issue = next(r for r in rows if r.action == "created" and r.entity_kind == "issue")
    assert created_issue.after is not None and created_issue.after["description"] == tricky
    packet = next(r for r in rows if r.action == "created" and r.entity_kind == "context_packet")
    assert packet.after is not None and packet.after["inputs"] == {"command": tricky, "note\x1ekey": tricky}
    result = audit_query.verify(engine)
    assert result.ok, result
    assert result.rows == count(factory, AuditRow)


def test_requester_ids_that_array_literals_would_misread_are_stored_exactly(
    api: httpx.Client, factory: sessionmaker[Session], engine: Engine
) -> None:
    """The audit rows' scalar columns travel as array literals (PostgreSQL): an id that is a literal's
    syntax (quotes, backslashes, braces, commas, spaces, the word NULL, the empty string's look-alikes)
    or holds the NULL mark must still be stored and hashed exactly, in a batch with other tasks."""
    ids = [
        'a "quoted" id',
        "back\\slash\\",
        "{braces},commas",
        "NULL",
        " spaced ",
        "\x01",
        "mark\x01in",
        "é ☃",
    ]
    bodies = [
        task_body(requested_by={"kind": "human", "id": actor}, objective=f"by {n}")
        for n, actor in enumerate(ids)
    ]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda body: api.post("/tasks/enqueue", json=body), bodies))
    assert [r.status_code for r in responses] == [201] * len(ids), [r.text for r in responses]
    with factory() as session:
        for actor, response in zip(ids, responses, strict=True):
            trace = response.json()["trace_id"]
            rows = session.execute(select(AuditRow).where(AuditRow.trace_id == trace)).scalars().all()
            # Nine rows per task, ten for the one that created the Repo.
            assert len(rows) in (9, 10) and {(r.actor_kind, r.actor_id, r.note) for r in rows} == {
                ("human", actor, None)
            }
    result = audit_query.verify(engine)
    assert result.ok, result


def test_floats_that_jsonb_writes_otherwise_keep_the_chain_verifiable(
    api: httpx.Client, factory: sessionmaker[Session], engine: Engine
) -> None:
    """jsonb gives 1e+16 back as an integer and -0.0 as 0.0; the audit rows hash what is stored."""
    numbers = (
        '{"big": 1e16, "huge": 1e300, "negzero": -0.0, "tiny": 1.5e-7, "plain": 0.1, "n": [1e15, -2e22]}'
    )
    body = (
        '{"requested_by": {"kind": "human", "id": "alice"}, "objective": "floats", "operation": "ops",'
        f' "target": {{"repo": "acme/app"}}, "inputs": {{"command": "true", "x": {numbers}}},'
        f' "metadata": {numbers}}}'
    )
    resp = api.post("/tasks/enqueue", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 201, resp.text
    result = audit_query.verify(engine)
    assert result.ok, result
    with factory() as session:
        packet = session.get_one(ContextPacketRow, resp.json()["cwom"]["context_packet_id"])
    assert packet.inputs["x"]["plain"] == 0.1 and packet.inputs["x"]["tiny"] == 1.5e-7
    assert packet.inputs["x"]["big"] == 10**16


@pytest.mark.parametrize(
    ("inputs", "where"),
    [
        ('{"t": NaN}', "inputs"),
        ('{"deep": [1, {"x": -Infinity}]}', "inputs"),
        ('{"n": 123456789012345678901234567890}', "inputs"),
    ],
)
def test_numbers_that_cannot_be_stored_are_422_and_nothing_is_written(
    api: httpx.Client, factory: sessionmaker[Session], inputs: str, where: str
) -> None:
    body = (
        '{"requested_by": {"kind": "human", "id": "alice"}, "objective": "numbers", "operation": "ops",'
        f' "target": {{"repo": "acme/app"}}, "inputs": {inputs}}}'
    )
    resp = api.post("/tasks/enqueue", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["field"] == where
    assert "numbers must be finite" in error["message"]
    assert count(factory, TaskRow) == 0 and count(factory, AuditRow) == 0


def test_the_enqueue_fast_path_keeps_the_apps_http_behaviour(
    api: httpx.Client, factory: sessionmaker[Session]
) -> None:
    """POST /tasks/enqueue skips FastAPI's per-request layers (api/fast_path.py), on both databases;
    what they gave stays: request ids, FastAPI's validation rules and error locations, the app's
    error bodies, the route in OpenAPI, and the other methods through the app."""
    echoed = api.post("/tasks/enqueue", json=task_body(), headers={"X-Request-ID": "req-42"})
    assert echoed.status_code == 201 and echoed.headers["x-request-id"] == "req-42"
    assert echoed.headers["content-type"] == "application/json"
    # The query parameter, parsed as FastAPI parses a bool (the last value counts).
    plain = api.post("/tasks/enqueue", params={"create_cwom": "No"}, json=task_body(objective="plain"))
    assert plain.status_code == 201 and plain.json()["cwom"] is None and plain.json()["run_id"] is None
    last = api.post("/tasks/enqueue?create_cwom=1&create_cwom=off", json=task_body(objective="last"))
    assert last.status_code == 201 and last.json()["cwom"] is None
    bad = api.post("/tasks/enqueue", params={"create_cwom": "maybe"}, json={"objective": "x"})
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["field"] == "create_cwom"
    assert {d["field"] for d in error["details"]} >= {"create_cwom", "requested_by"}
    # Bodies FastAPI does not read as JSON, or that are not JSON at all: 422, never a 500.
    raw = orjson.dumps(task_body())
    for headers, content in (
        ({}, raw),  # no content type
        ({"content-type": "text/plain"}, raw),
        ({"content-type": "application/json"}, b""),
        ({"content-type": "application/json"}, b'{"objective": "\\ud800"}'),  # a lone surrogate
        ({"content-type": "application/json"}, b'{"objective": "\xff"}'),  # not UTF-8
    ):
        resp = api.post("/tasks/enqueue", content=content, headers=headers)
        assert resp.status_code == 422, (headers, content, resp.text)
        assert resp.json()["error"]["code"] == "VALIDATION_ERROR"
        assert resp.json()["error"]["field"] == "body"
    surrogate = api.post(
        "/tasks/enqueue",
        content=b'{"requested_by": {"kind": "human", "id": "a"}, "objective": "o", "operation": "ops",'
        b' "target": {"repo": "acme/app"}, "inputs": {"s": "\\udc00"}}',
        headers={"content-type": "application/json"},
    )
    assert surrogate.status_code == 422, surrogate.text
    suffixed = api.post(
        "/tasks/enqueue",
        content=orjson.dumps(task_body(objective="ld")),
        headers={"content-type": "application/vnd.task+json; charset=utf-8"},
    )
    assert suffixed.status_code == 201, suffixed.text
    # The idempotent replay is answered from the stored row: the same task, as GET shows it.
    first = api.post("/tasks/enqueue", json=task_body(idempotency_key="fast-replay")).json()
    again = api.post("/tasks/enqueue", json=task_body(idempotency_key="fast-replay"))
    assert again.status_code == 200 and again.json()["idempotent_replay"] is True
    shown = api.get(f"/tasks/{first['task_id']}").json()
    assert {**again.json(), "idempotent_replay": False} == first
    assert {k: v for k, v in shown.items() if k != "idempotent_replay"} == {
        k: v for k, v in first.items() if k != "idempotent_replay"
    }
    # Other methods go through the app; the route stays documented with its request schema.
    assert api.put("/tasks/enqueue", json=task_body()).status_code == 405
    assert api.get("/tasks/enqueue").json()["error"]["code"] == "TASK_NOT_FOUND"  # GET /tasks/{id}
    doc = api.get("/openapi.json").json()["paths"]["/tasks/enqueue"]["post"]
    assert doc["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TaskCreateV1"
    }
    assert [p["name"] for p in doc["parameters"]] == ["create_cwom"]
    assert count(factory, TaskRow) == 5


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        ({"objective": "before\u0000after"}, "objective"),
        ({"requested_by": {"kind": "human", "id": "al\u0000ice"}}, "requested_by.id"),
        ({"target": {"repo": "acme/app", "ref": "ma\u0000in"}}, "target.ref"),
        ({"idempotency_key": "k\u0000"}, "idempotency_key"),
        ({"inputs": {"command": "echo \u0000"}}, "inputs"),
        ({"inputs": {"deep": [{"k\u0000ey": 1}]}}, "inputs"),
        ({"metadata": {"note": ["ok", "n\u0000ul"]}}, "metadata"),
    ],
)
def test_a_nul_character_anywhere_is_422_and_nothing_is_written(
    api: httpx.Client, factory: sessionmaker[Session], patch: dict[str, object], where: str
) -> None:
    """PostgreSQL's text and jsonb cannot hold U+0000: the contract refuses it on every database,
    rather than one database storing what the other answers with a 500."""
    body = {**task_body(), **patch}
    resp = api.post("/tasks/enqueue", json=body)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["field"] == where
    assert "NUL" in error["message"]
    assert count(factory, TaskRow) == 0 and count(factory, AuditRow) == 0
    dry = api.post("/policy/evaluate", json=body)
    assert dry.status_code == 422 and dry.json()["error"]["field"] == where
