"""The audit hash prepared before the chain head is locked."""

from __future__ import annotations


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
