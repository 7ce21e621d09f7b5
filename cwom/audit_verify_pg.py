"""Fast whole-chain verification on PostgreSQL: seq ranges checked in parallel under one exported snapshot.

Each row costs a fetch, a canonical JSON dump and a sha256; a million rows is too much for one core of
a small machine. The work is split by seq into ranges, each checked by a helper process that imports
the coordinator's snapshot, and the ranges are stitched (seq contiguity and prev_hash across the
boundaries). The per-row check uses orjson; whenever it disagrees with the stored hash the row is
re-checked with the reference `hashed_fields`/`row_hash`, so the verdict is always the reference one
(a match means the bytes hashed at write time were reproduced exactly).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
from sqlalchemy import Engine, text

from cwom.audit import GENESIS_HASH, hashed_fields, row_hash

if TYPE_CHECKING:
    from cwom.audit_query import VerifyResult

# Below this many rows one process is faster than starting helpers.
PARALLEL_MIN_ROWS = 400_000
_TS = "to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"
# The reference check's columns, in `_reference_ok` order.
_FULL = (
    f"SELECT id, seq, {_TS}, actor_kind, actor_id, action, entity_kind, entity_id, before::text, "  # noqa: S608
    "after::text, note, trace_id, prev_hash, hash FROM audit_log"
)
# The fast path: the server renders the canonical JSON around `after` and `before` (the keys sort as
# action, actor_id, actor_kind, after, before, entity_id, ...), prefixed with prev_hash, as UTF-8 bytes;
# Python only canonicalises the two JSON values and hashes. to_json escapes strings as json.dumps does;
# any row where the renderings still differ falls back to the reference check.
_FAST = (
    "SELECT seq, id, hash, convert_to(prev_hash || '{\"action\":' || to_json(action)::text"  # noqa: S608
    " || ',\"actor_id\":' || to_json(actor_id)::text || ',\"actor_kind\":' || to_json(actor_kind)::text"
    " || ',\"after\":', 'UTF8'), after::text, before::text,"
    " convert_to(',\"entity_id\":' || to_json(entity_id)::text || ',\"entity_kind\":'"
    " || to_json(entity_kind)::text || ',\"id\":' || to_json(id)::text || ',\"note\":'"
    " || coalesce(to_json(note)::text, 'null') || ',\"seq\":' || seq::text || ',\"trace_id\":'"
    f" || coalesce(to_json(trace_id)::text, 'null') || ',\"ts\":\"' || {_TS} || '\"}}', 'UTF8')"
    " FROM audit_log"
)


@dataclass(frozen=True)
class RangeResult:
    """What one seq range looked like: its ends (for stitching) and its first internal break."""

    count: int
    first: tuple[int, str, str] | None  # seq, id, prev_hash
    last: tuple[int, str] | None  # seq, hash
    broken: tuple[int, str, str] | None  # seq, id, reason


def _reference_ok(row: tuple[Any, ...]) -> bool:
    fields = hashed_fields(
        id=row[0],
        seq=row[1],
        ts=datetime.fromisoformat(row[2]),
        actor_kind=row[3],
        actor_id=row[4],
        action=row[5],
        entity_kind=row[6],
        entity_id=row[7],
        before=None if row[8] is None else json.loads(row[8]),
        after=None if row[9] is None else json.loads(row[9]),
        note=row[10],
        trace_id=row[11],
    )
    return bool(row_hash(row[12], fields) == row[13])


def _prefetch(cur: psycopg.Cursor[Any], batch: int, stop: threading.Event) -> Iterator[list[Any]]:
    """Chunks of the cursor, fetched one ahead in a thread so the server works while Python hashes."""
    chunks: queue.Queue[list[Any] | BaseException | None] = queue.Queue(maxsize=2)

    def pump() -> None:
        try:
            while not stop.is_set() and (chunk := cur.fetchmany(batch)):
                chunks.put(chunk)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            chunks.put(exc)
        finally:
            chunks.put(None)

    thread = threading.Thread(target=pump, name="audit-verify-fetch", daemon=True)
    thread.start()
    try:
        while (item := chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                chunks.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


def check_range(cur: psycopg.Cursor[Any], *, batch: int, reference: Callable[[int], bool]) -> RangeResult:
    """Check the `_FAST` rows the (already executed) cursor yields, in seq order, against each other."""
    loads, dumps, sort_keys, sha256 = orjson.loads, orjson.dumps, orjson.OPT_SORT_KEYS, hashlib.sha256
    count = 0
    first: tuple[int, str, str] | None = None
    expected = 0
    prev = b""
    digest = ""
    for chunk in _prefetch(cur, batch, threading.Event()):
        for seq, row_id, digest, head, after, before, tail in chunk:
            count += 1
            if first is None:
                first = (seq, row_id, head[:64].decode())
            elif seq != expected:
                reason = f"seq {seq} follows {expected - 1}: row {expected} is missing or moved"
                return RangeResult(count, first, None, (seq, row_id, reason))
            elif head[:64] != prev:
                reason = "prev_hash does not match the row before"
                return RangeResult(count, first, None, (seq, row_id, reason))
            canonical = b"".join(
                (
                    head,
                    b"null" if after is None else dumps(loads(after), option=sort_keys),
                    b',"before":',
                    b"null" if before is None else dumps(loads(before), option=sort_keys),
                    tail,
                )
            )
            if sha256(canonical).hexdigest() != digest and not reference(seq):
                return RangeResult(count, first, None, (seq, row_id, "hash does not match the row's content"))
            prev = digest.encode()
            expected = seq + 1
    last = (expected - 1, digest) if first is not None else None
    return RangeResult(count, first, last, None)


def _bounds_sql(lo: int | None, hi: int | None) -> tuple[str, list[int]]:
    where, params = [], []
    if lo is not None:
        where.append("seq > %s")
        params.append(lo)
    if hi is not None:
        where.append("seq <= %s")
        params.append(hi)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    return f"{_FAST}{clause} ORDER BY seq", params


def verify_range(url: str, snapshot: str, lo: int | None, hi: int | None, batch: int) -> RangeResult:
    """Check seq in (lo, hi] inside the exported snapshot (runs in a helper process)."""
    with psycopg.connect(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        # The first statement of the transaction psycopg opens: adopt the coordinator's snapshot.
        conn.execute(text_literal("SET TRANSACTION SNAPSHOT ", snapshot).encode())
        sql, params = _bounds_sql(lo, hi)
        with conn.cursor(name="audit_verify") as cur:
            cur.itersize = batch
            cur.execute(sql, params)

            def reference(seq: int) -> bool:
                # A second (unnamed) cursor on the same connection and snapshot.
                row = conn.execute(f"{_FULL} WHERE seq = %s", (seq,)).fetchone()
                return row is not None and _reference_ok(row)

            result = check_range(cur, batch=batch, reference=reference)
        conn.rollback()
    return result


def text_literal(prefix: str, value: str) -> str:
    """`prefix` followed by `value` as a quoted SQL literal (snapshot ids are [0-9A-F-]+)."""
    if not all(c in "0123456789ABCDEFabcdef-" for c in value):
        raise ValueError("unexpected snapshot id")
    return f"{prefix}'{value}'"


def stitch(results: list[RangeResult], *, head_seq: int, head_hash: str) -> dict[str, Any]:
    """Join range results in seq order into the chain's verdict (the dict of `VerifyResult`)."""
    expected, prev, total = 1, GENESIS_HASH, 0
    for part in results:
        if part.first is not None:
            seq, row_id, first_prev = part.first
            if seq != expected:
                reason = f"seq {seq} follows {expected - 1}: row {expected} is missing or moved"
                return {"ok": False, "rows": total + 1, "broken": (seq, row_id, reason)}
            if first_prev != prev:
                reason = "prev_hash does not match the row before"
                return {"ok": False, "rows": total + 1, "broken": (seq, row_id, reason)}
        if part.broken is not None:
            return {"ok": False, "rows": total + part.count, "broken": part.broken}
        total += part.count
        if part.last is not None:
            expected, prev = part.last[0] + 1, part.last[1]
    last = expected - 1
    if last < head_seq:
        reason = f"the chain ends at seq {last} but audit_head is at seq {head_seq}: rows are missing"
        return {"ok": False, "rows": total, "broken": (last + 1, None, reason)}
    if last > head_seq:
        reason = f"rows past audit_head (seq {head_seq}) were not written by the chain writer"
        return {"ok": False, "rows": total, "broken": (head_seq + 1, None, reason)}
    if prev != head_hash:
        return {"ok": False, "rows": total, "broken": (last, None, "the last row's hash is not audit_head's")}
    return {"ok": True, "rows": total, "broken": None}


def _ranges(head_seq: int, parts: int) -> list[tuple[int | None, int | None]]:
    if parts <= 1:
        return [(None, None)]
    size = head_seq // parts + 1
    cuts = [size * i for i in range(1, parts)]
    bounds: list[int | None] = [None, *cuts, None]
    return list(itertools.pairwise(bounds))


def verify_pg(engine: Engine, *, batch: int, workers: int | None) -> VerifyResult:
    """Verify the chain on PostgreSQL; returns a `VerifyResult`."""
    from cwom.audit_query import BrokenRow, VerifyResult

    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        snapshot = str(conn.execute(text("SELECT pg_export_snapshot()")).scalar_one())
        head_seq, head_hash = conn.execute(text("SELECT seq, hash FROM audit_head WHERE id = 1")).one()
        if workers is None:
            workers = min(os.cpu_count() or 1, 4) if head_seq >= PARALLEL_MIN_ROWS else 1
        ranges = _ranges(head_seq, workers)
        if len(ranges) == 1:
            results = [verify_range(url, snapshot, None, None, batch)]
        else:
            # spawn, not fork: the caller may be a threaded server holding locks and open sockets.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=len(ranges), mp_context=context) as pool:
                futures = [pool.submit(verify_range, url, snapshot, lo, hi, batch) for lo, hi in ranges]
                results = [f.result() for f in futures]
        conn.rollback()
    verdict = stitch(results, head_seq=head_seq, head_hash=head_hash)
    broken = verdict["broken"]
    return VerifyResult(verdict["ok"], verdict["rows"], BrokenRow(*broken) if broken is not None else None)
