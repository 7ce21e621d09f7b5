"""ULIDs: python-ulid's layout and monotonic policy, from Control Tower's own encoder."""

from __future__ import annotations

import random
import threading
import time

from ulid import ULID

from cwom.base import _MAX_RANDOMNESS, _encode_ms, _encode_randomness, _Ulids, new_id


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
