"""ULIDs: python-ulid's layout and monotonic policy, from Control Tower's own encoder."""

from __future__ import annotations

import random
import threading
import time

from ulid import ULID

from cwom.base import _MAX_RANDOMNESS, _encode_ms, _encode_randomness, _Ulids, new_id, new_ids, new_trace_id


def test_ids_parse_as_ulids_of_now() -> None:
    before = time.time()
    ident = new_id()
    after = time.time()
    parsed = ULID.from_str(ident)
    assert str(parsed) == ident and len(ident) == 26
    assert before - 0.002 <= parsed.timestamp <= after + 0.002


def test_the_encoding_is_python_ulids_for_any_value() -> None:
    rng = random.Random(7)
    for ms, randomness in [(0, 0), ((1 << 48) - 1, _MAX_RANDOMNESS)] + [
        (rng.getrandbits(48), rng.getrandbits(80)) for _ in range(2000)
    ]:
        assert _encode_ms(ms) + _encode_randomness(randomness) == str(ULID.from_int((ms << 80) | randomness))


def test_ids_within_a_millisecond_step_by_one() -> None:
    source = _Ulids(clock_ns=lambda: 1_700_000_000_000 * 1_000_000)
    ids = [ULID.from_str(source.new()) for _ in range(1000)]
    assert [int(u) for u in ids] == list(range(int(ids[0]), int(ids[0]) + 1000))


def test_exhausted_randomness_and_a_clock_stepping_back_keep_the_order() -> None:
    now = [5_000 * 1_000_000]
    source = _Ulids(clock_ns=lambda: now[0])
    first = source.new()
    source._randomness = _MAX_RANDOMNESS
    borrowed = source.new()
    assert ULID.from_str(borrowed).milliseconds == 5_001 and borrowed > first
    now[0] = 4_000 * 1_000_000  # the wall clock steps back
    later = [source.new() for _ in range(10)]
    assert later == sorted(later) and later[0] > borrowed


def test_ids_from_many_threads_are_unique_and_each_threads_are_ordered() -> None:
    results: list[list[str]] = [[] for _ in range(8)]

    def make(out: list[str]) -> None:
        out.extend(new_id() for _ in range(5000))

    threads = [threading.Thread(target=make, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(out == sorted(out) for out in results)
    assert len({ident for out in results for ident in out}) == 8 * 5000


def test_a_batch_is_what_as_many_single_calls_give() -> None:
    clock = [1_700_000_000_000 * 1_000_000]
    one_by_one = _Ulids(clock_ns=lambda: clock[0])
    batched = _Ulids(clock_ns=lambda: clock[0])
    for n in (1, 2, 14, 3):
        singles = [one_by_one.new() for _ in range(n)]
        batch = batched.batch(n)
        # The first id of each millisecond is random, so compare the order and the steps, not the text.
        assert len(batch) == n == len(set(batch)) and batch == sorted(batch)
        assert [int(ULID.from_str(x)) - int(ULID.from_str(batch[0])) for x in batch] == [
            int(ULID.from_str(x)) - int(ULID.from_str(singles[0])) for x in singles
        ]
        clock[0] += 1_000_000


def test_a_batch_that_exhausts_the_randomness_moves_to_the_next_millisecond_in_order() -> None:
    source = _Ulids(clock_ns=lambda: 9_000 * 1_000_000)
    first = source.new()
    source._randomness = _MAX_RANDOMNESS - 1
    batch = source.batch(4)
    parsed = [ULID.from_str(x) for x in batch]
    assert batch == sorted(batch) and batch[0] > first and len(set(batch)) == 4
    assert [u.milliseconds for u in parsed] == [9_000, 9_001, 9_001, 9_001]
    assert source.new() > batch[-1]


def test_batches_from_many_threads_never_collide() -> None:
    out: list[list[str]] = [[] for _ in range(6)]

    def make(into: list[str]) -> None:
        for _ in range(500):
            into.extend(new_ids(9))

    threads = [threading.Thread(target=make, args=(into,)) for into in out]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [x for into in out for x in into]
    assert len(set(every)) == len(every) == 6 * 500 * 9
    assert all(into == sorted(into) for into in out)


def test_trace_ids_are_w3c_hex_and_sort_by_time() -> None:
    first = new_trace_id()
    time.sleep(0.002)
    later = [new_trace_id() for _ in range(100)]
    for trace in (first, *later):
        assert len(trace) == 32 and trace == trace.lower() and int(trace, 16) != 0
        assert all(c in "0123456789abcdef" for c in trace)
    # The clock comes first: a trace made a later millisecond sorts after one made earlier.
    assert all(first < trace for trace in later)
    # 80 random bits after it: ids made in the same millisecond still differ.
    assert len(set(later)) == len(later)


def test_a_batch_within_one_pair_equals_the_step_by_step_encoding() -> None:
    """The batch's shortcut (only the last character pair changes) gives the ids that encoding each
    step gives, wherever in its pair the randomness starts (the last id of a pair included)."""
    rng = random.Random(11)
    for low in (0, 1, 511, 1000, 1013, 1022, 1023):
        for n in (1, 2, 9, 11):
            source = _Ulids(clock_ns=lambda: 7_000 * 1_000_000)
            source.new()
            start = (rng.getrandbits(70) << 10) | low
            source._randomness = start - 1 if start else 0
            if not start:
                continue
            batch = source.batch(n)
            assert batch == [_encode_ms(7_000) + _encode_randomness(start + i) for i in range(n)]
            assert source._randomness == start + n - 1
            assert source.new() == _encode_ms(7_000) + _encode_randomness(start + n)
