"""The append-only, hash-chained audit log.

Services call `record()` inside their transaction; the rows are chained and written just before
that transaction commits, under a lock on the single chain-head row, so the lock is held for the
commit alone and the chain can never fork, whatever the number of concurrent writers.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any, Protocol, cast

import orjson
from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text, event, insert, select, text, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from cwom.base import Base, ULIDStr, new_ids, utcnow

GENESIS_HASH = "0" * 64
_PENDING = "audit_pending"


class AuditRow(Base):
    """One audit record; never updated or deleted by any code path."""

    __tablename__ = "audit_log"

    # seq is the key every read goes by; nothing looks a row up by id, so it has no index of its own
    # (migration 0011). The id is still unique by construction (a ULID) and covered by the hash.
    id: Mapped[str] = mapped_column(ULIDStr)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ts: Mapped[datetime] = mapped_column(index=True)
    actor_kind: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    entity_kind: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(200))
    # json, not jsonb, on PostgreSQL (migration 0012): the log only stores and returns them (the hash is
    # over their canonical text, which the verifier rebuilds from either type), so the server need not
    # build jsonb trees for them: it validates the text and stores it, which is smaller too.
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    note: Mapped[str | None] = mapped_column(Text)
    trace_id: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_log_actor", "actor_kind", "actor_id", "seq"),
        # Also serves entity queries ordered by seq: one object has few rows (migration 0006).
        Index("ix_audit_log_entity_ts", "entity_kind", "entity_id", "ts"),
        Index("ix_audit_log_action_seq", "action", "seq"),
        Index("ix_audit_log_trace_seq", "trace_id", "seq"),
    )


class AuditHead(Base):
    """The single row holding the chain's newest position and hash; writers serialise on it."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class Redacts(Protocol):
    """Anything that can scrub secrets from a JSON-like value."""

    def redact_json(self, value: Any) -> Any: ...

    def redact_json_text(self, value: Any, text: str) -> Any: ...

    def json_text_clean(self, text: str) -> bool: ...


@dataclass(frozen=True)
class Actor:
    """Who made a change."""

    kind: str
    id: str


SYSTEM = Actor("system", "control-tower")


@dataclass
class Entry:
    """An audit row waiting to be chained and written."""

    actor: Actor
    action: str
    entity_kind: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    note: str | None
    trace_id: str | None
    ts: datetime = field(default_factory=utcnow)
    # True when before/after are already plain JSON values (str keys; str, int, bool, None, lists,
    # dicts), as rows built by `cwom.task_rows` are: the normalising JSON round trip is skipped.
    plain: bool = False
    # True when plain before/after are known to hold no float (see `has_float`): their canonical text
    # is then orjson's, which is the standard encoder's text for such values, ~15x faster.
    floatless: bool = False


def has_float(value: Any) -> bool:
    """Whether JSON-like data holds a float anywhere."""
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(has_float(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_float(v) for v in value)
    return False


def record(
    session: Session,
    *,
    actor: Actor,
    action: str,
    entity_kind: str,
    entity_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    note: str | None = None,
    trace_id: str | None = None,
) -> None:
    """Queue an audit row; it is written in the same transaction, just before it commits."""
    pending: list[Entry] = session.info.setdefault(_PENDING, [])
    pending.append(Entry(actor, action, entity_kind, entity_id, before, after, note, trace_id))


def record_entries(session: Session, entries: list[Entry]) -> None:
    """Queue entries built elsewhere (see `cwom.task_rows`); written like `record()`'s."""
    pending: list[Entry] = session.info.setdefault(_PENDING, [])
    pending.extend(entries)


# One encoder, built once: `json.dumps` with these options builds a new encoder (and its C twin) on
# every call, which cost more than the encoding of a small row.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def canonical(row: dict[str, Any]) -> str:
    """The canonical JSON a row's hash is computed over (what `json.dumps(row, sort_keys=True,
    separators=(",", ":"), ensure_ascii=False, default=str)` gives)."""
    return _CANONICAL.encode(row)


def row_hash(prev_hash: str, row: dict[str, Any]) -> str:
    """sha256 over the previous hash and the row's canonical JSON."""
    return hashlib.sha256((prev_hash + canonical(row)).encode()).hexdigest()


def hashed_fields(
    *,
    id: str,
    seq: int,
    ts: datetime,
    actor_kind: str,
    actor_id: str,
    action: str,
    entity_kind: str,
    entity_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    note: str | None,
    trace_id: str | None,
    ts_text: str | None = None,
) -> dict[str, Any]:
    """The fields covered by the hash, in the form both the writer and the verifier build
    (`ts_text`: `ts`'s text, when the caller has it already)."""
    return {
        "id": id,
        "seq": seq,
        "ts": ts_text if ts_text is not None else ts.isoformat(timespec="microseconds"),
        "actor_kind": actor_kind,
        "actor_id": actor_id,
        "action": action,
        "entity_kind": entity_kind,
        "entity_id": entity_id,
        "before": before,
        "after": after,
        "note": note,
        "trace_id": trace_id,
    }


def _jsonable(
    value: dict[str, Any] | None, redactor: Redacts | None, *, plain_json: bool = False
) -> dict[str, Any] | None:
    """The value as the database will hand it back to the verifier, redacted (see `_document`)."""
    return _document(value, redactor, plain_json=plain_json)[1]


# Numbers that PostgreSQL's jsonb (numeric) gives back in another form than the one hashed: integral
# floats written with an exponent (1e+16 comes back as the integer 10000000000000000), negative zero
# (0.0), and the non-finite values orjson writes as null. Their canonical text always holds one of
# these; any other float comes back as the same double. A match inside a string only costs a walk.
_NUMBER_HINTS = ("e+", "-0.0", "NaN", "Infinity")


def _as_stored(value: Any) -> Any:
    """`value` with every float that jsonb would give back differently replaced by what it gives."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value == 0:
            return 0.0
        text = repr(value)
        return int(Decimal(text)) if "e+" in text else value
    if isinstance(value, dict):
        return {k: _as_stored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_stored(v) for v in value]
    return value


def _document(
    value: dict[str, Any] | None,
    redactor: Redacts | None,
    *,
    plain_json: bool = False,
    floatless: bool = False,
) -> tuple[str, dict[str, Any] | None]:
    """A before/after value as it is stored and hashed: its canonical text and the value.

    A JSON round trip first gives what JSON gives back (skipped for `plain_json` values); numbers
    that jsonb would change are normalised; redaction last. The text is encoded once in the common
    case and serves the redaction check too.
    """
    if value is None:
        return "null", None
    plain: dict[str, Any] = value if plain_json else json.loads(canonical(value))
    if floatless:  # no float, so nothing that jsonb would give back in another form
        text = _canonical_floatless(plain)
    else:
        text = canonical(plain)
        if any(hint in text for hint in _NUMBER_HINTS):
            plain = _as_stored(plain)
            text = canonical(plain)
    if redactor is not None:
        redacted = redactor.redact_json_text(plain, text)
        if redacted is not plain:
            plain, text = redacted, canonical(redacted)
    return text, plain


def _canonical_floatless(value: dict[str, Any]) -> str:
    """`canonical(value)` for plain JSON data without floats: orjson with sorted keys writes the same
    text (same escapes, no ASCII escaping, keys in code point order; property-tested). Whatever
    orjson refuses (an integer past 64 bits, a key that is not a string) takes the reference path."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return canonical(value)


def _split_canonical(fields: dict[str, Any]) -> tuple[str, str]:
    """The row's canonical JSON as (text before the seq value, text after it).

    Only `seq` is unknown until the chain head is locked, so the row is rendered once with seq 0 and
    cut around that value. The top-level `"seq":` is the last one in the text: the keys sort, so only
    `trace_id` and `ts` follow it, and their values are strings or null, in which a quote is escaped
    (a nested object in `after` or `before` may have a "seq" key of its own, always earlier).
    """
    text = canonical({**fields, "seq": 0})
    cut = text.rindex('"seq":0') + len('"seq":')
    return text[:cut], text[cut + 1 :]


# An entry ready for the chain: its row values (without seq, prev_hash, hash) and its canonical JSON
# split around the seq value, which is known only once the head is locked.
Prepared = tuple[dict[str, Any], str, str]


def prepare(entries: list[Entry], redactor: Redacts | None) -> list[Prepared]:
    """Ids, redaction and canonical JSON for each entry: all the work that needs no lock.

    What `prepare_reference` gives (a property test compares them), for less CPU: the documents of
    all the entries are checked for redaction together (`_redact_documents`), and each row's
    canonical text is formatted from its parts in one operation."""
    ids = new_ids(len(entries))
    docs: list[tuple[str, dict[str, Any] | None]] = []
    for item in entries:
        if item.plain and item.floatless:
            before, after = item.before, item.after
            docs.append(("null", None) if before is None else (_canonical_floatless(before), before))
            docs.append(("null", None) if after is None else (_canonical_floatless(after), after))
        else:
            docs.append(_document(item.before, None, plain_json=item.plain))
            docs.append(_document(item.after, None, plain_json=item.plain))
    if redactor is not None:
        _redact_documents(docs, redactor)
    prepared: list[Prepared] = []
    # The entries of one change share their actor, instant and trace: their texts are made once.
    last_actor: Actor | None = None
    actor_text = ""
    last_tail: tuple[datetime, str | None] | None = None
    suffix = ""
    for n, item in enumerate(entries):
        ts, actor, note, trace_id = item.ts, item.actor, item.note, item.trace_id
        before_text, before = docs[2 * n]
        after_text, after = docs[2 * n + 1]
        row = {
            "id": ids[n],
            "seq": 0,
            "ts": ts,
            "actor_kind": actor.kind,
            "actor_id": actor.id,
            "action": item.action,
            "entity_kind": item.entity_kind,
            "entity_id": item.entity_id,
            "before": before,
            "after": after,
            "note": note,
            "trace_id": trace_id,
        }
        try:
            # The canonical encoder's text, keys in sorted order: each scalar as `encode_basestring`
            # writes a string (a TypeError for anything else: such a row takes the reference path),
            # the documents' canonical texts as they are (a dict's canonical text is its items'
            # texts joined in key order).
            if actor is not last_actor:
                actor_text = _ACTOR % (encode_basestring(actor.id), encode_basestring(actor.kind))
                last_actor = actor
            if last_tail is None or last_tail[0] is not ts or last_tail[1] is not trace_id:
                suffix = _SUFFIX % (
                    "null" if trace_id is None else encode_basestring(trace_id),
                    encode_basestring(ts.isoformat(timespec="microseconds")),
                )
                last_tail = ts, trace_id
            prefix = _PREFIX % (
                encode_basestring(item.action),
                actor_text,
                after_text,
                before_text,
                encode_basestring(item.entity_id),
                encode_basestring(item.entity_kind),
                '"' + ids[n] + '"',  # a ULID: nothing to escape
                "null" if note is None else encode_basestring(note),
            )
        except TypeError:  # pragma: no cover - every caller passes strings; the reference form stays exact
            last_actor = last_tail = None
            prefix, suffix = _split_canonical({**row, "ts": ts.isoformat(timespec="microseconds")})
        prepared.append((row, prefix, suffix))
    return prepared


_PREFIX = '{"action":%s,%s,"after":%s,"before":%s,"entity_id":%s,"entity_kind":%s,"id":%s,"note":%s,"seq":'
_ACTOR = '"actor_id":%s,"actor_kind":%s'
_SUFFIX = ',"trace_id":%s,"ts":%s}'


def _redact_documents(docs: list[tuple[str, dict[str, Any] | None]], redactor: Redacts) -> None:
    """Redact prepared (text, value) documents in place, as `_document` would one by one: one check
    of all their texts together (`Redacts.json_text_clean`) answers for the common case, in which
    nothing needs redacting; otherwise each document is checked and redacted on its own."""
    texts = [text for text, value in docs if value is not None]
    if not texts or redactor.json_text_clean(_SEP.join(texts)):
        return
    for n, (doc_text, value) in enumerate(docs):
        if value is None:
            continue
        redacted = redactor.redact_json_text(value, doc_text)
        if redacted is not value:
            docs[n] = canonical(redacted), redacted


def prepare_reference(
    entries: list[Entry], redactor: Redacts | None, *, ids: Sequence[str] | None = None
) -> list[Prepared]:
    """`prepare` the plain way, which it must equal (tests): each document redacted on its own, each
    row's canonical JSON the whole row through the canonical encoder, cut around its seq (`ids`: the
    rows' ids, else new ones)."""
    prepared: list[Prepared] = []
    ids = ids if ids is not None else new_ids(len(entries))
    for n, item in enumerate(entries):
        floatless = item.plain and item.floatless
        _, before = _document(item.before, redactor, plain_json=item.plain, floatless=floatless)
        _, after = _document(item.after, redactor, plain_json=item.plain, floatless=floatless)
        fields = hashed_fields(
            id=ids[n],
            seq=0,
            ts=item.ts,
            actor_kind=item.actor.kind,
            actor_id=item.actor.id,
            action=item.action,
            entity_kind=item.entity_kind,
            entity_id=item.entity_id,
            before=before,
            after=after,
            note=item.note,
            trace_id=item.trace_id,
        )
        prefix, suffix = _split_canonical(fields)
        prepared.append(({**fields, "ts": item.ts}, prefix, suffix))
    return prepared


def flush_pending(session: Session) -> int:
    """Chain and insert the queued rows under the head lock; returns how many were written.

    Everything but the chaining itself (ids, redaction, canonical JSON) is prepared before the lock
    is taken, so the lock is held for two statements and the commit, not for Python work.
    """
    pending: list[Entry] = session.info.pop(_PENDING, [])
    if not pending:
        return 0
    prepared = prepare(pending, session.info.get("redactor"))
    if session.get_bind().dialect.name == "postgresql":
        return _append_postgresql(session, prepared)
    head = session.execute(
        select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1).with_for_update()
    ).one()
    seq, prev = head.seq, head.hash
    rows = []
    for row, prefix, suffix in prepared:
        seq += 1
        digest = hashlib.sha256(f"{prev}{prefix}{seq}{suffix}".encode()).hexdigest()
        rows.append({**row, "seq": seq, "prev_hash": prev, "hash": digest})
        prev = digest
    session.execute(insert(AuditRow), rows)
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=seq, hash=prev))
    return len(rows)


# One statement on PostgreSQL: lock the head, chain the hashes (sha256 over the same text the Python
# path hashes: prev_hash + prefix + seq + suffix), insert the rows and move the head. The head's row
# lock is then held for this statement and the commit only, with no Python in between.
# `rows_param` is a jsonb array built by `pg_payload`; `gate`, over its rows `r`, may keep only some of
# them (e.g. those whose `task` another CTE of the same statement inserted); the kept rows are chained
# in their order. The fragment defines `ins` (the inserted
# seqs) and `moved` (the new head); it is spliced into a WITH RECURSIVE clause.
def pg_chain_ctes(rows_param: str, gate: str = "TRUE", *, texts: str | None = None) -> str:
    """The CTEs that lock the head, chain, insert and move the head, for one statement.

    `rows_param` is the jsonb array of `pg_payload`; with `texts` (a parameter stem), the rows come as the
    parameters `pg_columns(..., stem=texts)` binds instead: `rows_param` then holds only each row's
    `before`/`after`, and the scalar columns and canonical texts are arrays beside it."""
    if texts is None:
        source = (
            f"jsonb_to_recordset(CAST({rows_param} AS jsonb)) AS r("
            "n int, task text, id text, ts timestamptz, actor_kind text, actor_id text, action text,"
            " entity_kind text, entity_id text, before jsonb, after jsonb, note text, trace_id text,"
            " prefix text, suffix text)"
        )
    else:
        # One function scan zips the arrays by position (they are built from one list, in chain order).
        arrays = ", ".join(f"unnest(%({texts}_{name})s::{kind}[])" for name, kind in _COLUMNS)
        split = ", ".join(
            f"unnest(string_to_array(%({texts}_{part})s, {_SEP_SQL}))" for part in ("prefix", "suffix")
        )
        names = ", ".join(name for name, _ in _COLUMNS)
        source = (
            f"ROWS FROM (json_to_recordset(CAST({rows_param} AS json)) AS (before json, after json),"
            f" {arrays}, {split}) WITH ORDINALITY AS r(before, after, {names}, prefix, suffix, n)"
        )
    return f"""
input AS (
    SELECT (row_number() OVER (ORDER BY r.n))::int AS n, r.id, r.ts, r.actor_kind, r.actor_id, r.action,
           r.entity_kind, r.entity_id, r.before, r.after, r.note, r.trace_id, r.prefix, r.suffix
    FROM {source}
    WHERE ({gate})
),
head AS (SELECT seq, hash FROM audit_head WHERE id = 1 AND EXISTS (SELECT 1 FROM input) FOR UPDATE),
chain AS (
    SELECT i.*, head.seq + i.n AS seq,
           audit_chain(head.hash, i.prefix, head.seq + i.n, i.suffix) OVER (ORDER BY i.n) AS hash
    FROM input i CROSS JOIN head
),
chained AS (
    SELECT c.*, coalesce(lag(c.hash) OVER (ORDER BY c.n), (SELECT hash FROM head)) AS prev FROM chain c
),
ins AS (
    INSERT INTO audit_log (id, seq, ts, actor_kind, actor_id, action, entity_kind, entity_id,
                           before, after, note, trace_id, prev_hash, hash)
    SELECT id, seq, ts, actor_kind, actor_id, action, entity_kind, entity_id,
           before, after, note, trace_id, prev, hash
    FROM chained
    RETURNING seq
),
last AS (SELECT seq, hash FROM chained ORDER BY n DESC LIMIT 1),
moved AS (
    UPDATE audit_head SET seq = last.seq, hash = last.hash FROM last WHERE audit_head.id = 1
    RETURNING audit_head.seq
)"""  # noqa: S608 - fixed fragments: `gate` and `rows_param` come from this codebase, never input


# One statement on PostgreSQL: lock the head, chain the hashes (sha256 over the same text the Python
# path hashes: prev_hash + prefix + seq + suffix), insert the rows and move the head. The head's row
# lock is then held for this statement and the commit only, with no Python in between.
_PG_APPEND = text(
    "WITH RECURSIVE"  # noqa: S608
    + pg_chain_ctes(":rows")
    + "\nSELECT (SELECT count(*) FROM ins) AS inserted, (SELECT seq FROM moved) AS head_seq"
)


def pg_payload(prepared: list[Prepared], *, tasks: list[str] | None = None) -> str:
    """The jsonb array `pg_chain_ctes` reads without `texts`: one object per row, numbered in chain order,
    canonical texts included (with the task each row belongs to, when given, for a gate to test)."""
    # Transport only (the hashes were computed over `canonical` text already): orjson is the fast one.
    return transport_json(
        [
            {
                **{k: v for k, v in row.items() if k != "seq"},
                "n": n,
                "ts": row["ts"].isoformat(timespec="microseconds"),
                "prefix": prefix,
                "suffix": suffix,
                **({"task": tasks[n - 1]} if tasks is not None else {}),
            }
            for n, (row, prefix, suffix) in enumerate(prepared, 1)
        ]
    )


def transport_json(value: Any) -> str:
    """JSON text of prepared rows for the server: orjson's, or the standard encoder's for what orjson
    refuses (integers past 64 bits, which normalised documents can hold: 1e+300 is an integer to
    jsonb). Prepared documents hold no NaN or infinity, so either text is valid JSON."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# The canonical texts repeat each row's before/after as JSON. Inside the jsonb document they were JSON
# strings full of escaped quotes, which PostgreSQL's JSON lexer reads a character at a time: parsing
# them was about a fifth of the intake statement's server time. As plain text parameters, joined by a
# separator that canonical JSON never holds (it escapes every control character), they cost the server
# one split (`string_to_array`) and the client one join.
_SEP = "\x1e"
_SEP_SQL = "E'\\x1e'"


# The scalar columns of `pg_columns`, each an array parameter of this SQL type, in the order of the
# rows' `prepared` values (`task` is the gate's: the task each row belongs to).
_COLUMNS = (
    ("task", "text"),
    ("id", "text"),
    ("ts", "timestamptz"),
    ("actor_kind", "text"),
    ("actor_id", "text"),
    ("action", "text"),
    ("entity_kind", "text"),
    ("entity_id", "text"),
    ("note", "text"),
    ("trace_id", "text"),
)


def pg_columns(prepared: list[Prepared], *, tasks: list[str], stem: str) -> dict[str, Any]:
    """The parameters of `pg_chain_ctes(stem, ..., texts=stem)`: `before`/`after` as a jsonb array (the
    only values PostgreSQL must parse as JSON), every scalar column as an array (psycopg sends a list as
    an array literal: no JSON lexing, no object keys to sort and look up), the canonical texts as
    `pg_texts`."""
    rows = [row for row, _, _ in prepared]
    docs = transport_json([{"before": row["before"], "after": row["after"]} for row in rows])
    params: dict[str, Any] = {stem: docs, f"{stem}_task": pg_array(tasks)}
    if rows:
        # Column by column (one C-level transpose of the rows), in `_COLUMNS` order.
        for name, values in zip(_COLUMN_NAMES, zip(*map(_COLUMN_VALUES, rows), strict=True), strict=True):
            if name == "ts":  # the rows of one change share their instant: each encoded once
                texts: dict[datetime, str] = {}
                for ts in values:
                    if ts not in texts:
                        texts[ts] = ts.isoformat()
                params[f"{stem}_ts"] = pg_array([texts[ts] for ts in values])
            else:
                params[f"{stem}_{name}"] = pg_array(values)
    else:
        params.update({f"{stem}_{name}": pg_array([]) for name in _COLUMN_NAMES})
    return {**params, **pg_texts(prepared, stem=stem)}


_COLUMN_NAMES = tuple(name for name, _ in _COLUMNS[1:])
_COLUMN_VALUES = operator.itemgetter(*_COLUMN_NAMES)
_NULL_MARK = "\x01"


def pg_array(values: Sequence[str | None]) -> str:
    """The text of a PostgreSQL array literal holding `values` (None as NULL), for a `::text[]` cast.

    psycopg adapts a list element by element in Python (~1 µs each, more than the server's parsing of
    the JSON it replaced); this escapes the whole text at once: every element quoted, backslashes and
    quotes escaped (PostgreSQL text never holds NUL, which joins the elements meanwhile)."""
    if not values:
        return "{}"
    nulls = values.count(None)
    if nulls:
        joined = "\x00".join([_NULL_MARK if value is None else value for value in values])
    else:  # no None: the values are strings as they are
        joined = "\x00".join(cast("Sequence[str]", values))
    if joined.count("\x00") != len(values) - 1 or joined.count(_NULL_MARK) != nulls:
        # An element holds NUL (the server refuses it anyway) or the NULL mark: element by element.
        return "{" + ",".join("NULL" if v is None else '"' + _escaped(v) + '"' for v in values) + "}"
    quoted = '{"' + _escaped(joined).replace("\x00", '","') + '"}'
    return quoted.replace(f'"{_NULL_MARK}"', "NULL") if nulls else quoted


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def pg_texts(prepared: list[Prepared], *, stem: str) -> dict[str, str]:
    """The two text parameters of `pg_chain_ctes(..., texts=stem)`: every row's prefix, then suffix."""
    prefixes = _SEP.join([prefix for _, prefix, _ in prepared])
    suffixes = _SEP.join([suffix for _, _, suffix in prepared])
    seps = max(len(prepared) - 1, 0)
    if prefixes.count(_SEP) != seps or suffixes.count(_SEP) != seps:
        raise ValueError("an audit row's canonical text holds the separator")  # pragma: no cover
    return {f"{stem}_prefix": prefixes, f"{stem}_suffix": suffixes}


def _append_postgresql(session: Session, prepared: list[Prepared]) -> int:
    result = session.execute(_PG_APPEND, {"rows": pg_payload(prepared)}).one()
    if result.inserted != len(prepared):  # pragma: no cover - the statement inserts all or fails
        raise RuntimeError(f"audit append wrote {result.inserted} of {len(prepared)} rows")
    return int(result.inserted)


@event.listens_for(Session, "before_commit")
def _write_pending_audit(session: Session) -> None:
    flush_pending(session)


@event.listens_for(Session, "after_rollback")
def _drop_pending_audit(session: Session) -> None:
    session.info.pop(_PENDING, None)
