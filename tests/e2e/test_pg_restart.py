"""PostgreSQL restarted under load (a private cluster): no run is lost, workers recover and finish all."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from control_tower import intake
from control_tower.db import make_engine, make_sessionmaker
from control_tower.migrate import upgrade
from cwom.audit import AuditRow
from cwom.tables import RunRow
from policy import TaskCreateV1
from tests.conftest import make_settings, task_body
from tests.e2e.test_worker_crash import worker_process
from tests.support.servers import free_port

pytestmark = pytest.mark.slow


class PrivateCluster:
    """A throwaway cluster (initdb + pg_ctl) on a free port, so restarting it touches nothing else."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.bin = Path(found[-1]).parent
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ct-pg-"))
        self.data = self.root / "data"
        self.as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        if self.as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "-N")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/ct"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def _opts(self) -> str:
        return f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"

    def start(self) -> None:
        log = str(self.root / "log")
        self._run("pg_ctl", "-D", str(self.data), "-o", self._opts(), "-l", log, "-w", "start")

    def restart(self) -> None:
        # -m fast: every connection is terminated, as a crash or failover would do to clients.
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            self._opts(),
            "-l",
            str(self.root / "log"),
            "-m",
            "fast",
            "-w",
            "restart",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def create_database(self) -> None:
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE ct")


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    pg = PrivateCluster()
    try:
        pg.start()
        pg.create_database()
        yield pg
    finally:
        try:
            pg.stop()
        finally:
            shutil.rmtree(pg.root, ignore_errors=True)


def test_postgresql_restart_under_load_loses_no_run(cluster: PrivateCluster, tmp_path: Path) -> None:
    engine = make_engine(cluster.url)
    upgrade(engine)
    factory = make_sessionmaker(engine)
    settings = make_settings(cluster.url, tmp_path)
    markers = tmp_path / "markers"
    markers.mkdir()
    run_ids: list[str] = []

    def enqueue() -> None:
        # An intake that retries through the outage, as an HTTP client would.
        while True:
            try:
                accepted = intake.submit(
                    factory, task=TaskCreateV1.model_validate(task_body()), config=settings.policy_config()
                )
            except OperationalError:
                time.sleep(0.1)
                continue
            assert accepted.task.run_id is not None
            run_ids.append(accepted.task.run_id)
            return

    for _ in range(30):
        enqueue()
    with (
        worker_process(cluster.url, "A", markers, lease=2.0, sleep=0.15),
        worker_process(cluster.url, "B", markers, lease=2.0, sleep=0.15),
    ):
        deadline = time.monotonic() + 30
        while len(list(markers.glob("*.done"))) < 4:  # the workers are busy: restart under them
            assert time.monotonic() < deadline
            time.sleep(0.02)
        producer = threading.Thread(target=lambda: [enqueue() for _ in range(30)])
        producer.start()
        cluster.restart()
        producer.join(timeout=60)
        assert len(run_ids) == 60
        deadline = time.monotonic() + 90
        while True:
            try:
                with factory() as session:
                    rows = session.execute(
                        select(RunRow.status, func.count())
                        .where(RunRow.id.in_(run_ids))
                        .group_by(RunRow.status)
                    ).all()
                    statuses = dict(rows)
            except OperationalError:
                statuses = {}
            if statuses == {"done": 60}:
                break
            assert time.monotonic() < deadline, f"runs not all done: {statuses}"
            time.sleep(0.2)
    with factory() as session:
        done = session.scalars(
            select(AuditRow.entity_id).where(
                AuditRow.entity_kind == "run",
                AuditRow.action == "status_changed",
                AuditRow.after["status"].as_string() == "done",
            )
        ).all()
    assert sorted(done) == sorted(run_ids)  # exactly one completion each
    # Both workers were there the whole time and did the work.
    finished_by = {p.name.split(".")[2] for p in markers.glob("*.done")}
    assert finished_by == {"A", "B"}
    logs = "".join(p.read_text() for p in markers.glob("*.log"))
    assert "notify.disconnected" in logs  # the restart really cut the workers off
    engine.dispose()
