"""The audit hash prepared before the chain head is locked."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from cwom.audit import Actor, Entry, _split_canonical, canonical, has_float, prepare
from cwom.enums import ObjectKind


def test_audit_hash_prepared_outside_the_lock_equals_the_reference_hash() -> None:
    """flush_pending hashes prefix + seq + suffix; that must be row_hash() of the whole document."""
    import hashlib
    from datetime import UTC, datetime

    from cwom.audit import _split_canonical, hashed_fields, row_hash

    samples = [
        (None, None, None),
        ({"a": [1, "é", {"z": 1, "b": None}]}, {"x": 1.5, "q": '"'}, 'n"ote\n'),
        # Nested keys that look like the top-level seq must not confuse the split.
        ({"seq": 0, "trace_id": "x"}, {"note": {"seq": 0}}, '"seq":0,'),
    ]
    # A trace id is free text too; it is the value right after the top-level seq.
    traces = ("t", None, '"seq":0,"x"')
    for (before, after, note), trace_id in ((sample, t) for sample in samples for t in traces):
        fields = hashed_fields(
            id="01ARZ3NDEKTSV4RRFFQ69G5FAV",
            seq=0,
            ts=datetime.now(UTC),
            actor_kind="human",
            actor_id="a",
            action="created",
            entity_kind="run",
            entity_id="r",
            before=before,
            after=after,
            note=note,
            trace_id=trace_id,
        )
        prefix, suffix = _split_canonical(fields)
        for seq in (1, 42, 10**12):
            expected = row_hash("f" * 64, {**fields, "seq": seq})
            assert hashlib.sha256(f"{'f' * 64}{prefix}{seq}{suffix}".encode()).hexdigest() == expected


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e16, -0.0, 1e300, 1.5e-7, 1e15, 0.1]),
    _TEXT,
)
_VALUES = st.recursive(
    _LEAVES, lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(_TEXT, kids, max_size=4))
)


def _numbers(value: object) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


@settings(max_examples=300, deadline=None)
@given(
    before=st.one_of(st.none(), st.dictionaries(_TEXT, _VALUES, max_size=4)),
    after=st.dictionaries(_TEXT, _VALUES, max_size=4),
    note=st.one_of(st.none(), _TEXT),
    actor_id=_TEXT,
    plain=st.booleans(),
)
def test_prepared_texts_equal_the_reference_canonical_json(
    before: dict[str, object] | None, after: dict[str, object], note: str | None, actor_id: str, plain: bool
) -> None:
    """`prepare` builds each row's canonical text from its parts; it must be the reference
    `_split_canonical` of the row's fields, whose documents are what JSON (and jsonb) give back."""
    entry = Entry(
        Actor("human", actor_id), "created", ObjectKind.RUN, "r1", before, after, note, None, plain=plain
    )
    [(row, prefix, suffix)] = prepare([entry], None)
    assert (prefix, suffix) == _split_canonical({**row, "ts": row["ts"].isoformat(timespec="microseconds")})
    for doc in (row["before"], row["after"]):
        # What is hashed survives a trip through JSON text unchanged ...
        text = canonical(doc)
        assert canonical(json.loads(text)) == text
        # ... and holds no number that jsonb would give back in another form.
        for number in _numbers(doc):
            assert math.isfinite(number)
            assert not (number == 0 and math.copysign(1, number) < 0)
            assert "e+" not in repr(number)


@settings(max_examples=150, deadline=None)
@given(
    inputs=st.dictionaries(_TEXT, _VALUES, max_size=4),
    metadata=st.dictionaries(_TEXT, _VALUES, max_size=3),
    objective=_TEXT.filter(lambda t: t.strip() != ""),
)
def test_intake_entries_marked_floatless_hold_no_float_and_hash_as_the_reference(
    inputs: dict[str, object], metadata: dict[str, object], objective: str
) -> None:
    """Intake takes orjson's text for documents it marks floatless; the mark must be true, and the
    texts the reference ones, whatever the task's free-form parts hold."""
    from pydantic import ValidationError

    from control_tower.intake_plan import IntakePlan
    from policy import PolicyConfig, TaskCreateV1, evaluate

    config = PolicyConfig(allowed_repo_prefixes=("acme",))
    body = {
        "requested_by": {"kind": "human", "id": "alice"},
        "objective": objective,
        "operation": "ops",
        "target": {"repo": "acme/app"},
        "inputs": inputs,
        "metadata": metadata,
    }
    try:
        task = evaluate(TaskCreateV1.model_validate(body), config)
    except ValidationError:
        return  # NaN, infinities: refused at the contract (tested through HTTP)
    for repo_id in (None, "01ARZ3NDEKTSV4RRFFQ69G5FAV"):
        built = IntakePlan(task, config, "api", True, 3).build(repo_id=repo_id)
        for entry in built.audit:
            if entry.floatless:
                assert not has_float(entry.before) and not has_float(entry.after)
        for row, prefix, suffix in prepare(built.audit, None):
            assert (prefix, suffix) == _split_canonical(
                {**row, "ts": row["ts"].isoformat(timespec="microseconds")}
            )


_SECRETISH = st.sampled_from(
    [
        "api_key",
        "Password",
        "allow_secrets",
        "token",
        "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1",
        "s3cr3t-value-1",
        '"',
    ]
)
_RICH_TEXT = st.lists(st.one_of(_TEXT, _SECRETISH), max_size=4).map("".join)
_DOCS = st.one_of(st.none(), st.dictionaries(st.one_of(_TEXT, _SECRETISH), _VALUES, max_size=4))


@settings(max_examples=300, deadline=None)
@given(
    docs=st.lists(st.tuples(_DOCS, _DOCS, st.one_of(st.none(), _RICH_TEXT), st.booleans()), max_size=6),
    actors=st.lists(st.tuples(st.sampled_from(["human", "system"]), _RICH_TEXT), min_size=1, max_size=2),
    trace_id=st.one_of(st.none(), _RICH_TEXT),
    secrets=st.sampled_from([None, (), ("s3cr3t-value-1",), ('with"quote-1',)]),
)
def test_prepare_equals_the_reference(
    docs: list[tuple[dict[str, object] | None, dict[str, object] | None, str | None, bool]],
    actors: list[tuple[str, str]],
    trace_id: str | None,
    secrets: tuple[str, ...] | None,
) -> None:
    """`prepare` (documents checked for redaction together, texts formatted from their parts, shared
    parts made once) gives what `prepare_reference` gives, entry by entry, for any documents,
    whether they need redacting or not, entries sharing their actor and instant or not."""
    from datetime import UTC, datetime, timedelta

    from cwom.audit import prepare_reference
    from policy.redaction import Redactor

    redactor = None if secrets is None else Redactor(secrets)
    now = datetime.now(UTC)
    shared = [Actor(kind, ident) for kind, ident in actors]
    entries = [
        Entry(
            shared[n % len(shared)],
            "created",
            ObjectKind.ISSUE,
            f"e{n}",
            before,
            after,
            note,
            trace_id,
            now + timedelta(microseconds=n // 2),
            plain=plain,
            # The floatless mark is only ever set on documents without a float.
            floatless=plain and not has_float(before) and not has_float(after),
        )
        for n, (before, after, note, plain) in enumerate(docs)
    ]
    if any(e.plain and _not_plain(e) for e in entries):
        return  # `plain` promises plain JSON values (str keys, no tuples): not drawn here otherwise
    fast = prepare(entries, redactor)
    reference = prepare_reference(entries, redactor, ids=[row["id"] for row, _, _ in fast])
    assert fast == reference
    assert [list(row) for row, _, _ in fast] == [list(row) for row, _, _ in reference]


def _not_plain(entry: Entry) -> bool:
    """Whether a document marked plain would change through a JSON round trip (floats only matter
    as jsonb's forms, which the floatless mark excludes or `_document` normalises)."""
    return any(doc is not None and json.loads(canonical(doc)) != doc for doc in (entry.before, entry.after))


def test_pg_columns_are_the_rows_column_by_column() -> None:
    """The transposed columns of `pg_columns` are each column's values in row order."""
    from datetime import UTC, datetime

    from cwom.audit import _COLUMNS, pg_array, pg_columns, pg_texts

    now = datetime.now(UTC)
    entries = [
        Entry(
            Actor("human", f"a{n}"), "created", "run", f"r{n}", None, {"n": n}, "x" if n else None, None, now
        )
        for n in range(3)
    ]
    prepared = prepare(entries, None)
    params = pg_columns(prepared, tasks=["t1", "t1", "t2"], stem="audit")
    assert params["audit_task"] == pg_array(["t1", "t1", "t2"])
    for name, _ in _COLUMNS[1:]:
        values = [row[name].isoformat() if name == "ts" else row[name] for row, _, _ in prepared]
        assert params[f"audit_{name}"] == pg_array(values)
    assert {k: params[k] for k in ("audit_prefix", "audit_suffix")} == pg_texts(prepared, stem="audit")
    assert pg_columns([], tasks=[], stem="audit")["audit_id"] == "{}"
