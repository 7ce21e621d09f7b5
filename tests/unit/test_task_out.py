"""The enqueue answer is written without building `TaskOut`: it must be the model's own JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from control_tower.api.schemas import TaskOut, task_out_json
from control_tower.tables import TaskRow
from cwom.task_rows import CwomIds

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
_TIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.sampled_from([UTC, None])
) | st.just(datetime(2026, 12, 1, 13, 0, tzinfo=timezone(timedelta(hours=-3))))
_IDS = CwomIds("R" * 26, "I" * 26, "P" * 26, "C" * 26, "U" * 26)


def columns(body: dict[str, Any], created: datetime, error: str | None, ids: bool) -> dict[str, Any]:
    return {
        "id": "01M8RWSJRXHHWFBBYYCRWTGG0W",
        "idempotency_key": None,
        "request_hash": "0" * 64,
        "status": "queued",
        "operation": "ops",
        "repo": "acme/app",
        "ref": "main",
        "priority": 100,
        "requested_by_kind": "human",
        "requested_by_id": "alice",
        "source": "api",
        "body": body,
        "policy_version": "sha256:abc",
        "trace_id": "f" * 32,
        "cwom_issue_id": _IDS.issue_id if ids else None,
        "run_id": _IDS.run_id if ids else None,
        "error_code": error,
        "error_message": None if error is None else "it failed",
        "created_at": created,
        "updated_at": created,
    }


@settings(max_examples=300, deadline=None)
@given(
    body=st.dictionaries(st.text(), _JSON, max_size=5),
    created=_TIMES,
    error=st.none() | st.just("SANDBOX_FAILED"),
    ids=st.booleans(),
    replay=st.booleans(),
)
def test_the_answer_is_the_models_json(
    body: dict[str, Any], created: datetime, error: str | None, ids: bool, replay: bool
) -> None:
    values = columns({**body, "requested_by": {"kind": "human", "id": "alice"}}, created, error, ids)
    cwom = _IDS if ids else None
    expected = TaskOut.from_row(TaskRow(**values), ids=cwom, replay=replay).model_dump_json()
    assert task_out_json(values, ids=cwom, replay=replay).decode() == expected


def test_an_integer_orjson_refuses_goes_through_the_model() -> None:
    values = columns({"n": 1 << 70}, datetime(2026, 12, 1, tzinfo=UTC), None, False)
    expected = TaskOut.from_row(TaskRow(**values), replay=False).model_dump_json()
    assert task_out_json(values, ids=None, replay=False).decode() == expected
