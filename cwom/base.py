"""The declarative base, column types and id/clock helpers every table shares."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# python-ulid builds a ULID object per id (a policy object, byte strings, a Python base32 loop): about
# 5 µs, and an accepted task takes fourteen ids. These are the same ids (python-ulid's layout and its
# monotonic policy: within a millisecond the randomness steps by one) from a few table lookups: the
# timestamp's ten characters once per millisecond, the randomness's sixteen as eight 10-bit pairs.
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)  # index: 10 bits, high 5 first
_MAX_RANDOMNESS = (1 << 80) - 1


def _encode_ms(ms: int) -> str:
    """The 48-bit timestamp as ULID's first ten characters."""
    return "".join(_CROCKFORD[(ms >> shift) & 31] for shift in range(45, -1, -5))


def _encode_randomness(randomness: int) -> str:
    """The 80-bit randomness as ULID's last sixteen characters."""
    pairs = _PAIRS
    return (
        pairs[randomness >> 70]
        + pairs[(randomness >> 60) & 1023]
        + pairs[(randomness >> 50) & 1023]
        + pairs[(randomness >> 40) & 1023]
        + pairs[(randomness >> 30) & 1023]
        + pairs[(randomness >> 20) & 1023]
        + pairs[(randomness >> 10) & 1023]
        + pairs[randomness & 1023]
    )


class _Ulids:
    """A thread-safe monotonic ULID source (one per process)."""

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._ms = -1
        self._prefix = ""
        self._randomness = 0

    def new(self) -> str:
        return self.batch(1)[0]

    def batch(self, n: int) -> list[str]:
        """`n` consecutive ids: what `n` calls of `new` would give, under one lock and one clock read."""
        with self._lock:
            ms = self._clock_ns() // 1_000_000
            if ms > self._ms:
                randomness = int.from_bytes(os.urandom(10))
            elif self._randomness < _MAX_RANDOMNESS:  # the same millisecond, or the clock stepped back
                ms, randomness = self._ms, self._randomness + 1
            else:  # exhausted: borrow the next millisecond rather than repeat or reorder
                ms, randomness = self._ms + 1, int.from_bytes(os.urandom(10))
            if ms != self._ms:
                self._ms, self._prefix = ms, _encode_ms(ms)
            low = randomness & 1023
            if low + n <= 1024:
                # The common case: the steps only change the last character pair, so the first 24
                # characters are encoded once (what the loop below gives, ~0.3 instead of 0.8 µs an id).
                head = self._prefix + _encode_randomness(randomness)[:-2]
                pairs = _PAIRS
                ids = [head + pairs[i] for i in range(low, low + n)]
                self._randomness = randomness + n - 1
                return ids
            ids = [self._prefix + _encode_randomness(randomness)]
            for _ in range(n - 1):
                if randomness < _MAX_RANDOMNESS:
                    randomness += 1
                else:  # exhausted mid-batch: the next millisecond, as `new` would borrow it
                    self._ms += 1
                    self._prefix = _encode_ms(self._ms)
                    randomness = int.from_bytes(os.urandom(10))
                ids.append(self._prefix + _encode_randomness(randomness))
            self._randomness = randomness
        return ids


_ULIDS = _Ulids()


def new_id() -> str:
    """A new ULID as its 26-character string (monotonic within this process)."""
    return _ULIDS.new()


def new_ids(n: int) -> list[str]:
    """`n` new ULIDs in order, as `new_id` would give them one by one (one lock, one clock read)."""
    return _ULIDS.batch(n)


def new_trace_id() -> str:
    """A W3C-style trace id (32 lowercase hex digits): the millisecond clock in the first 12, then 80
    random bits (so the rightmost 7 bytes are random, as trace context level 2 asks).

    Time first, so later traces sort later: the audit log's (trace_id, seq) index grows at its right
    edge instead of splitting leaves at random (uuid4 ids did: ~0.3 kB more WAL per task, and at scale
    random leaves out of cache and a full-page image per leaf after every checkpoint)."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
ULIDStr = String(26)


class Base(DeclarativeBase):
    """Shared metadata for every table; migrations import this."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: dict[Any, Any] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
    }
