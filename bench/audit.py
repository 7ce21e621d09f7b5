"""Audit log at scale on PostgreSQL: query p50/p95 per shape, chain verify time, intake cost of CWOM+audit.

Run: .venv/bin/python bench/audit.py [--rows 1000000] [--requests 200] [--tasks 1500] [--http] [--explain]
Creates a scratch database on 127.0.0.1:5432 and drops it afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker
from ulid import ULID

from bench.common import PG_BASE, pct, scratch_pg, serve_process
from control_tower import intake
from control_tower.db import make_engine, make_sessionmaker
from control_tower.migrate import upgrade
from cwom import audit_query
from cwom.audit import GENESIS_HASH, canonical, hashed_fields
from cwom.audit_query import AuditFilter
from policy import PolicyConfig, TaskCreateV1
from policy.redaction import Redactor

COLUMNS = (
    "id",
    "seq",
    "ts",
    "actor_kind",
    "actor_id",
    "action",
    "entity_kind",
    "entity_id",
    "before",
    "after",
    "note",
    "trace_id",
    "prev_hash",
    "hash",
)
KINDS = ["issue", "run", "context_packet", "constraint_snapshot", "repo", "task", "artifact"]
START = datetime(2026, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=90)


class Corpus:
    """What the generated rows are about, so the queries can ask for things that exist."""

    def __init__(self, rows: int, rng: random.Random) -> None:
        self.rows = rows
        self.rng = rng
        self.actors = [("human", f"user{i}") for i in range(200)] + [
            ("system", "control-tower"),
            ("system", "worker-1"),
            ("agent", "claude"),
        ]
        n_traces = max(1, rows // 10)
        self.traces = [ULID().hex for _ in range(n_traces)]
        self.entities = [(self.rng.choice(KINDS), str(ULID())) for _ in range(max(1, rows // 8))]


def generate(corpus: Corpus, copy: Any) -> tuple[int, str]:
    """Write `corpus.rows` chained rows through COPY; returns the head (seq, hash)."""
    rng = corpus.rng
    prev = GENESIS_HASH
    step = SPAN / corpus.rows
    actions = ["created", "updated", "status_changed", "linked", "policy_allowed", "policy_denied"]
    weights = [30, 20, 30, 15, 4, 1]
    trace = corpus.traces[0]
    for seq in range(1, corpus.rows + 1):
        # Traces are bursts of ~10 neighbouring rows; entities and actors are drawn at random.
        if seq % 10 == 1:
            trace = corpus.traces[(seq // 10) % len(corpus.traces)]
        ts = START + step * seq + timedelta(microseconds=rng.randrange(0, 1000))
        ak, ai = corpus.actors[min(int(rng.paretovariate(1.2)) - 1, len(corpus.actors) - 1)]
        ek, ei = rng.choice(corpus.entities)
        action = rng.choices(actions, weights)[0]
        before = {"status": "queued", "attempt": 0} if action == "status_changed" else None
        after = {
            "status": "running",
            "title": f"Task {seq}: run the formatter over the repository",
            "repo": "acme/app",
            "attempt": rng.randrange(4),
            "labels": ["operation:ops"],
        }
        fields = hashed_fields(
            id=str(ULID.from_datetime(ts)),
            seq=seq,
            ts=ts,
            actor_kind=ak,
            actor_id=ai,
            action=action,
            entity_kind=ek,
            entity_id=ei,
            before=before,
            after=after,
            note=None,
            trace_id=trace,
        )
        digest = hashlib.sha256((prev + canonical(fields)).encode()).hexdigest()
        copy.write_row(
            (
                fields["id"],
                seq,
                ts,
                ak,
                ai,
                action,
                ek,
                ei,
                None if before is None else json.dumps(before),
                json.dumps(after),
                None,
                trace,
                prev,
                digest,
            )
        )
        prev = digest
    return corpus.rows, prev


def load(db_name: str, corpus: Corpus) -> None:
    """COPY the rows in, set the head, ANALYZE."""
    t0 = time.perf_counter()
    with psycopg.connect(f"{PG_BASE}/{db_name}") as conn:
        with conn.cursor() as cur, cur.copy(f"COPY audit_log ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            seq, head = generate(corpus, copy)
        conn.execute("UPDATE audit_head SET seq = %s, hash = %s WHERE id = 1", (seq, head))
        conn.commit()
    with psycopg.connect(f"{PG_BASE}/{db_name}", autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE audit_log")
    print(f"loaded {corpus.rows:,} rows in {time.perf_counter() - t0:.1f} s")


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the verify helpers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def query_shapes(corpus: Corpus) -> dict[str, Callable[[random.Random], AuditFilter]]:
    """Each shape draws fresh parameters per request (so the cache is not always warm on one key)."""

    def window(rng: random.Random) -> AuditFilter:
        since = START + SPAN * rng.random() * 0.95
        return AuditFilter(since=since, until=since + timedelta(hours=1))

    return {
        "by entity": lambda rng: AuditFilter(
            entity_kind=(e := rng.choice(corpus.entities))[0], entity_id=e[1]
        ),
        "by actor": lambda rng: AuditFilter(actor_kind=(a := rng.choice(corpus.actors))[0], actor_id=a[1]),
        "by actor+action": lambda rng: AuditFilter(
            actor_kind=(a := rng.choice(corpus.actors))[0], actor_id=a[1], action="status_changed"
        ),
        "by trace": lambda rng: AuditFilter(trace_id=rng.choice(corpus.traces)),
        "time range (1h)": window,
        "newest page": lambda rng: AuditFilter(),
        "deep page (cursor)": lambda rng: AuditFilter(),
    }


def bench_queries(factory: sessionmaker[Session], corpus: Corpus, n: int) -> dict[str, float]:
    rng = random.Random(7)

    def cursor(name: str, rng: random.Random) -> int | None:
        # "deep page": a keyset cursor somewhere in the log, as a client paging back would send.
        return rng.randrange(1, corpus.rows) if name == "deep page (cursor)" else None

    p95s: dict[str, float] = {}
    with factory() as session:
        for name, make in query_shapes(corpus).items():
            samples = []
            for _ in range(n):
                f = make(rng)
                t = time.perf_counter()
                audit_query.page(session, filters=f, limit=50, before_seq=cursor(name, rng))
                samples.append(time.perf_counter() - t)
                session.rollback()
            ms = [s * 1000 for s in samples]
            p95s[name] = pct(ms, 95)
            print(f"  {name:18s} p50 {pct(ms, 50):6.2f} ms  p95 {pct(ms, 95):6.2f} ms  max {max(ms):6.2f} ms")
        samples = []
        for _ in range(n):
            e = rng.choice(corpus.entities)
            t = time.perf_counter()
            audit_query.history(session, filters=AuditFilter(entity_kind=e[0], entity_id=e[1]), limit=50)
            samples.append(time.perf_counter() - t)
            session.rollback()
        ms = [s * 1000 for s in samples]
        p95s["entity history"] = pct(ms, 95)
        print(f"  {'entity history':18s} p50 {pct(ms, 50):6.2f} ms  p95 {pct(ms, 95):6.2f} ms")
    return p95s


def explain(engine: Engine, corpus: Corpus) -> None:
    rng = random.Random(3)
    from sqlalchemy.dialects import postgresql

    with Session(engine) as session:
        for name, make in query_shapes(corpus).items():
            stmt = audit_query.page_statement(filters=make(rng), limit=50)
            sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
            plan = session.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")).scalars().all()
            print(f"--- {name}\n" + "\n".join(plan))


def bench_http(engine: Engine, url: str, corpus: Corpus, n: int) -> None:
    import httpx

    from control_tower.api.app import create_app
    from control_tower.logs import configure_logging
    from control_tower.settings import Settings
    from tests.support.servers import serve_in_thread

    configure_logging("WARNING")  # one log line per request would be most of what is measured
    settings = Settings(environment="test", database_url=url, _env_file=None)  # type: ignore[call-arg]
    app = create_app(settings, engine=engine)
    rng = random.Random(11)
    with serve_in_thread(app) as base, httpx.Client(base_url=base) as client:
        for name, make in query_shapes(corpus).items():
            samples = []
            for _ in range(n):
                f = make(rng)
                params = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in f.__dict__.items()}
                params = {k: v for k, v in params.items() if v is not None}
                t = time.perf_counter()
                resp = client.get("/audit", params={**params, "limit": 50})
                samples.append(time.perf_counter() - t)
                assert resp.status_code == 200, resp.text
            ms = [s * 1000 for s in samples]
            print(f"  HTTP {name:18s} p50 {pct(ms, 50):6.2f} ms  p95 {pct(ms, 95):6.2f} ms")


BODY = {
    "requested_by": {"kind": "system", "id": "bench"},
    "objective": "Benchmark task",
    "operation": "ops",
    "target": {"repo": "acme/app"},
    "inputs": {"command": "true"},
}


def intake_rate(factory: sessionmaker[Session], config: PolicyConfig, *, tasks: int, cwom: bool) -> float:
    """Tasks/s through `intake.submit` from 8 threads."""
    task = TaskCreateV1.model_validate(BODY)
    counter = iter(range(tasks))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            try:
                intake.submit(factory, task=task, config=config, source="bench", create_cwom=cwom)
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=work) for _ in range(8)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return tasks / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=1500, help="tasks per intake measurement")
    parser.add_argument("--http", action="store_true", help="also measure the queries through HTTP")
    parser.add_argument("--http-seconds", type=float, default=6.0, help="per wrk run of the intake ratio")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of each shape")
    args = parser.parse_args()
    corpus = Corpus(args.rows, random.Random(1))
    with scratch_pg("ct_bench_audit") as (name, url):
        engine = make_engine(url, pool_size=10)
        upgrade(engine)
        load(name, corpus)
        factory = make_sessionmaker(engine, info={"redactor": Redactor()})
        print(
            f"queries ({args.requests} requests each, page of 50, service functions); "
            f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs:"
        )
        p95s = bench_queries(factory, corpus, args.requests)
        if args.explain:
            explain(engine, corpus)
        if args.http:
            bench_http(engine, url, corpus, args.requests)
        timings = []
        for workers in (None, 1, None):
            before = cpu_seconds()
            t = time.perf_counter()
            result = audit_query.verify(engine, workers=workers)
            timings.append(time.perf_counter() - t)
            assert result.ok, result
            print(
                f"verify (workers={workers or 'auto'}): {timings[-1]:.2f} s wall, "
                f"{cpu_seconds() - before:.2f} s client CPU; load {os.getloadavg()[0]:.1f}"
            )
        print(f"verify {result.rows:,} rows: best {min(timings):.2f} s, worst {max(timings):.2f} s")
        config = PolicyConfig(allowed_repo_prefixes=("acme",))
        intake_rate(factory, config, tasks=100, cwom=True)  # warm-up: pool, caches, the repo row
        rates = {}
        for cwom in (False, True, False, True):
            rate = intake_rate(factory, config, tasks=args.tasks, cwom=cwom)
            rates.setdefault(cwom, []).append(rate)
        off, on = max(rates[False]), max(rates[True])
        print(
            f"intake (8 threads): without CWOM {off:.0f} tasks/s, with CWOM+audit {on:.0f} tasks/s, "
            f"ratio {on / off:.2f}"
        )
        engine.dispose()
        http = intake_http_ratios(url, args.http_seconds) if shutil.which("wrk") else {}
        worst = max(p95s.values())
        ratio = http.get(32, on / off)
        ok = worst < 10 and min(timings) < 10 and ratio >= 0.6
        print(
            f"targets: query p95 max {worst:.2f} ms (<10), verify {min(timings):.2f} s (<10), "
            f"intake ratio {ratio:.2f} ({'POST /tasks/enqueue at concurrency 32' if http else 'in-process'}; "
            f">=0.60): {'MET' if ok else 'MISSED'}"
        )


def intake_http_ratios(url: str, seconds: float) -> dict[int, float]:
    """The endpoint's rate with and without CWOM + audit (`?create_cwom=false`), through `control-tower
    serve` (2 processes) on this database and wrk, alternated; best of two each. The in-process figure
    above leaves out the HTTP work both kinds of intake share; this is what a client sees."""
    from bench.intake import run_wrk

    env = {"DATABASE_URL": url, "JCT_ALLOWED_REPO_PREFIXES": "acme", "LOG_LEVEL": "WARNING"}
    ratios: dict[int, float] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve_process(env, ["--no-worker", "--workers", "2"], Path(tmp)) as base,
    ):
        run_wrk(base, 8, 2, "")  # warm-up: both processes, their connections, the repo row
        for conc in (8, 32):
            got: dict[bool, list[float]] = {False: [], True: []}
            for cwom in (False, True, False, True):
                got[cwom].append(run_wrk(base, conc, seconds, "" if cwom else "?create_cwom=false")["rate"])
            off, on = max(got[False]), max(got[True])
            ratios[conc] = on / off
            print(
                f"intake over HTTP (concurrency {conc}): without CWOM {off:.0f} tasks/s, "
                f"with CWOM+audit {on:.0f} tasks/s, ratio {on / off:.2f}"
            )
    return ratios


if __name__ == "__main__":
    main()
