"""A worker process for crash tests: the real Worker and queue, with an executor that sleeps and records.

Usage: python -m tests.e2e.worker_proc DB_URL WORKER_ID LEASE_SECONDS SLEEP_SECONDS MARKER_DIR [GRACE]
Each attempt touches MARKER_DIR/<run>.<attempt>.<worker>.<event> for start, done, refused, lost_lease.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from control_tower.db import make_engine, make_sessionmaker
from control_tower.logs import configure_logging
from cwom.enums import RunStatus
from cwom.tables import RunRow
from worker.cli import install_signal_handlers
from worker.loop import Worker
from worker.notify import Notifier, PgNotifier
from worker.queue import Claim, LostLease, RunControl, RunQueue


def main() -> int:
    url, worker_id, lease, sleep, markers = sys.argv[1:6]
    grace = float(sys.argv[6]) if len(sys.argv) > 6 else 30.0
    out = Path(markers)
    configure_logging("INFO", json=True)
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    queue = RunQueue(factory, lease_seconds=float(lease), max_attempts=5)

    def mark(claim: Claim, event: str) -> None:
        (out / f"{claim.run_id}.{claim.attempt}.{worker_id}.{event}").touch()

    def executor(claim: Claim, control: RunControl) -> None:
        mark(claim, "start")
        end = time.monotonic() + float(sleep)
        # Sleep in small steps so SIGSTOP/SIGCONT leaves the thread mid-sleep, not in the database.
        while time.monotonic() < end and not control.cancelled.is_set():
            time.sleep(0.02)
        try:
            with queue.fenced(claim) as session:
                session.get_one(RunRow, claim.run_id).current_step = f"{worker_id}#{claim.attempt}"
        except LostLease:
            mark(claim, "lost_lease")
        outputs = [{"worker": worker_id, "attempt": claim.attempt}]
        if queue.transition(claim, RunStatus.DONE, outputs=outputs):
            mark(claim, "done")
        else:
            mark(claim, "refused")

    notifier: Notifier | None = PgNotifier.for_engine(engine) if queue.is_postgresql else None
    worker = Worker(queue, executor, worker_id=worker_id, concurrency=2, poll_interval=0.1, notifier=notifier)
    install_signal_handlers(worker, grace)
    (out / f"ready.{worker_id}").touch()
    worker.run()
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
