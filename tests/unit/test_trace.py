"""The trace folder: redacted writes, resumable events, atomic manifest, reader and renderer."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from ulid import ULID

from policy.redaction import Redactor
from worker import trace as trace_mod
from worker.trace import (
    TraceError,
    TraceWriter,
    folder_digest,
    list_files,
    read_trace,
    render_trace,
    verify_manifest,
)

KNOWN = "known-webhook-secret-value"
GH = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"


@pytest.fixture
def redactor() -> Redactor:
    return Redactor(named={"GITHUB_WEBHOOK_SECRET": KNOWN})


@pytest.fixture
def run_id() -> str:
    return str(ULID())


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def _full_run(tmp_path: Path, run_id: str, redactor: Redactor) -> dict[str, Any]:
    w = TraceWriter(tmp_path, run_id, redactor=redactor)
    w.write_json("task.json", {"operation": "ops", "target": {"repo": "o/r"}, "note": f"use {KNOWN}"})
    w.write_json("policy.json", {"allowed": True, "token": GH})
    w.event("run.started", {"attempt": 1})
    w.event("step.started", {"command": f"curl -H 'Authorization: token {GH}'"}, step_id="checkout")
    w.write_step_logs(1, "checkout", stdout=b"cloned\n", stderr=b"")
    w.write_step_result(1, "checkout", {"status": "completed", "exit_code": 0})
    w.event("step.finished", {"status": "completed"}, step_id="checkout")
    w.event("step.started", {"command": "make"}, step_id="shell")
    out = f"line1\nsecret is {KNOWN}\n".encode()
    w.write_step_logs(2, "shell", stdout=out, stderr=b"\xffwarn " + GH.encode())
    w.write_step_result(2, "shell", {"status": "failed", "exit_code": 2, "error_code": "STEP_FAILED"})
    w.event("step.finished", {"status": "failed"}, step_id="shell")
    w.write_text("summary.md", f"# Done\nleaked {GH} and {KNOWN}\n")
    w.write_text("diff.patch", "--- a/x\n+++ b/x\n")
    return w.finalize(
        {
            "run_id": run_id,
            "task_id": "T1",
            "status": "failed",
            "sandbox": {"tier": "bwrap"},
            "tokens": {"input_tokens": 12, "output_tokens": 3},
        }
    )


def test_events_readable_while_being_written(tmp_path: Path, run_id: str, redactor: Redactor) -> None:
    w = TraceWriter(tmp_path, run_id, redactor=redactor)
    assert w.event("run.started", {"attempt": 1}) == 1
    assert w.event("step.started", {"n": 1}, step_id="checkout") == 2
    # Read the file directly, before finalize and while the writer is still open.
    lines = (tmp_path / run_id / "events.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["seq"] for r in records] == [1, 2]
    assert records[1]["type"] == "step.started" and records[1]["step_id"] == "checkout"
    assert records[0]["ts"].endswith("Z")
    assert read_trace(tmp_path, run_id).events == records
    assert read_trace(tmp_path, run_id).manifest is None
    w.close()


def test_seq_continues_after_crash(tmp_path: Path, run_id: str, redactor: Redactor) -> None:
    w = TraceWriter(tmp_path, run_id, redactor=redactor)
    for i in range(3):
        w.event("tick", {"i": i})
    w.close()
    # A crash mid-write leaves a torn last line.
    with (tmp_path / run_id / "events.jsonl").open("ab") as fh:
        fh.write(b'{"seq":4,"ts":"2026-')
    w2 = TraceWriter(tmp_path, run_id, redactor=redactor)
    assert w2.event("resumed") == 4
    assert w2.event("tick") == 5
    w2.close()
    trace = read_trace(tmp_path, run_id)
    assert [e["seq"] for e in trace.events] == [1, 2, 3, 4, 5]
    assert trace.bad_lines == 1


def test_seq_is_unique_across_threads_and_writers(tmp_path: Path, run_id: str, redactor: Redactor) -> None:
    a = TraceWriter(tmp_path, run_id, redactor=redactor)
    b = TraceWriter(tmp_path, run_id, redactor=redactor)  # e.g. a stale attempt still writing

    def spam(w: TraceWriter) -> None:
        for _ in range(200):
            w.event("e")

    threads = [threading.Thread(target=spam, args=(w,)) for w in (a, a, b, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a.close()
    b.close()
    seqs = [e["seq"] for e in read_trace(tmp_path, run_id).events]
    assert sorted(seqs) == list(range(1, 801))
    assert seqs == sorted(seqs)


def test_manifest_lists_every_file_and_is_last(tmp_path: Path, run_id: str, redactor: Redactor) -> None:
    manifest = _full_run(tmp_path, run_id, redactor)
    folder = tmp_path / run_id
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != trace_mod.MANIFEST]
    on_disk = sorted(p.relative_to(folder).as_posix() for p in files)
    assert [f["path"] for f in manifest["files"]] == on_disk
    assert "steps/2-shell/stderr.log" in on_disk and "events.jsonl" in on_disk
    for entry in manifest["files"]:
        data = (folder / entry["path"]).read_bytes()
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["digest"] == folder_digest(manifest["files"])
    assert manifest["status"] == "failed" and manifest["tokens"] == {"input_tokens": 12, "output_tokens": 3}
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    m_mtime = (folder / "manifest.json").stat().st_mtime_ns
    assert all(m_mtime >= (folder / f["path"]).stat().st_mtime_ns for f in manifest["files"])
    assert not [p for p in folder.rglob("*") if ".tmp-" in p.name]
    assert verify_manifest(tmp_path, run_id) == []


def test_manifest_never_partial(
    tmp_path: Path, run_id: str, redactor: Redactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = TraceWriter(tmp_path, run_id, redactor=redactor)
    w.event("run.started")
    folder = tmp_path / run_id
    seen: list[tuple[str, str, bool]] = []
    real_replace = os.replace

    def watching_replace(src: Any, dst: Any) -> None:
        # At the moment of the rename the tmp file is complete and manifest.json does not exist yet.
        seen.append((Path(src).name, Path(dst).name, Path(dst).exists()))
        json.loads(Path(src).read_bytes())
        assert Path(src).parent == Path(dst).parent == folder
        real_replace(src, dst)

    monkeypatch.setattr(trace_mod.os, "replace", watching_replace)
    w.finalize({"status": "completed"})
    assert seen and seen[-1][1] == "manifest.json" and seen[-1][2] is False
    assert seen[-1][0].startswith(".manifest.json.tmp-")


def test_crash_during_manifest_write_leaves_no_manifest(
    tmp_path: Path, run_id: str, redactor: Redactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = TraceWriter(tmp_path, run_id, redactor=redactor)
    w.event("run.started")

    def crash(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(trace_mod.os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        w.finalize({"status": "completed"})
    names = [p.name for p in (tmp_path / run_id).iterdir()]
    assert names == ["events.jsonl"]
    assert verify_manifest(tmp_path, run_id) == ["manifest.json"]


def test_no_secret_reaches_disk(tmp_path: Path, run_id: str, redactor: Redactor) -> None:
    _full_run(tmp_path, run_id, redactor)
    folder = tmp_path / run_id
    everything = _all_bytes(folder)
    assert KNOWN.encode() not in everything
    assert GH.encode() not in everything
    assert b"[REDACTED:GITHUB_WEBHOOK_SECRET]" in (folder / "task.json").read_bytes()
    assert b"[REDACTED]" in (folder / "policy.json").read_bytes()
    assert b"Authorization: token [REDACTED]" in (folder / "events.jsonl").read_bytes()
    stdout = (folder / "steps/2-shell/stdout.log").read_bytes()
    assert stdout == b"line1\nsecret is [REDACTED:GITHUB_WEBHOOK_SECRET]\n"
    assert (folder / "steps/2-shell/stderr.log").read_bytes() == b"\xffwarn [REDACTED]"
    assert (folder / "summary.md").read_text() == (
        "# Done\nleaked [REDACTED] and [REDACTED:GITHUB_WEBHOOK_SECRET]\n"
    )


def test_event_data_of_any_type_is_redacted(tmp_path: Path, run_id: str, redactor: Redactor) -> None:
    class Opaque:
        def __str__(self) -> str:
            return f"opaque {KNOWN}"

    with TraceWriter(tmp_path, run_id, redactor=redactor) as w:
        w.event("x", {"obj": Opaque(), "path": Path("/tmp/a"), "raw": KNOWN.encode()})
    line = json.loads((tmp_path / run_id / "events.jsonl").read_text())
    assert line["data"] == {
        "obj": "opaque [REDACTED:GITHUB_WEBHOOK_SECRET]",
        "path": "/tmp/a",
        "raw": "[REDACTED:GITHUB_WEBHOOK_SECRET]",
    }


def test_verify_manifest_detects_tampering(tmp_path: Path, run_id: str, redactor: Redactor) -> None:
    _full_run(tmp_path, run_id, redactor)
    folder = tmp_path / run_id
    (folder / "steps/1-checkout/stdout.log").write_bytes(b"cloneD\n")  # same size, different content
    (folder / "diff.patch").unlink()
    (folder / "extra.txt").write_text("added")
    assert verify_manifest(tmp_path, run_id) == ["diff.patch", "extra.txt", "steps/1-checkout/stdout.log"]


def test_render_trace(tmp_path: Path, run_id: str, redactor: Redactor) -> None:
    _full_run(tmp_path, run_id, redactor)
    text = render_trace(tmp_path, run_id)
    assert f"Trace {run_id}" in text
    assert "manifest: ok" in text
    assert "status: failed" in text
    assert "Step 1 checkout: completed exit_code=0" in text
    assert "Step 2 shell: failed exit_code=2 error_code=STEP_FAILED" in text
    assert "#4 step.started [shell]" in text
    assert "+   0.000s #1 run.started" in text
    assert "secret is [REDACTED:GITHUB_WEBHOOK_SECRET]" in text
    assert "Summary" in text and "# Done" in text
    (tmp_path / run_id / "summary.md").write_text("changed")
    assert "MODIFIED: summary.md" in render_trace(tmp_path, run_id)


def test_render_in_progress(tmp_path: Path, run_id: str, redactor: Redactor) -> None:
    w = TraceWriter(tmp_path, run_id, redactor=redactor)
    w.event("run.started")
    w.write_step_result(1, "checkout", {"status": "running"})
    text = render_trace(tmp_path, run_id)
    assert "not written yet" in text and "Step 1 checkout: running" in text
    w.close()


def test_list_files(tmp_path: Path, run_id: str, redactor: Redactor) -> None:
    manifest = _full_run(tmp_path, run_id, redactor)
    files = list_files(tmp_path, run_id)
    assert [f["path"] for f in files] == sorted([f["path"] for f in manifest["files"]] + ["manifest.json"])
    with pytest.raises(TraceError) as err:
        list_files(tmp_path, str(ULID()))
    assert err.value.code == "TRACE_NOT_FOUND" and err.value.http_status == 404


def test_resume_drops_stale_manifest(tmp_path: Path, run_id: str, redactor: Redactor) -> None:
    _full_run(tmp_path, run_id, redactor)
    w = TraceWriter(tmp_path, run_id, redactor=redactor)
    assert not (tmp_path / run_id / "manifest.json").exists()
    assert w.event("run.resumed") == 6  # _full_run wrote 5
    w.finalize({"status": "completed"})
    assert verify_manifest(tmp_path, run_id) == []


def test_closed_writer_refuses_events(tmp_path: Path, run_id: str, redactor: Redactor) -> None:
    w = TraceWriter(tmp_path, run_id, redactor=redactor)
    w.finalize({})
    with pytest.raises(TraceError) as err:
        w.event("late")
    assert err.value.code == "TRACE_CLOSED"


@pytest.mark.parametrize(
    "bad",
    ["../etc", "..", "", "a/b", "01ARZ3NDEKTSV4RRFFQ69G5FA/", "0" * 25, "/" + "0" * 26, "0" * 26 + "\n"],
)
def test_run_id_traversal_rejected(tmp_path: Path, redactor: Redactor, bad: str) -> None:
    with pytest.raises(TraceError) as err:
        TraceWriter(tmp_path, bad, redactor=redactor)
    assert err.value.code == "INVALID_RUN_ID"
    with pytest.raises(TraceError):
        read_trace(tmp_path, bad)
    assert list(tmp_path.iterdir()) == []


def test_names_are_fixed(tmp_path: Path, run_id: str, redactor: Redactor) -> None:
    w = TraceWriter(tmp_path, run_id, redactor=redactor)
    for call in (
        lambda: w.write_json("../x.json", {}),
        lambda: w.write_json("manifest.json", {}),
        lambda: w.write_text("../../etc/passwd", ""),
        lambda: w.step_dir(1, "../x"),
        lambda: w.step_dir(1, "a/b"),
        lambda: w.step_dir(-1, "x"),
    ):
        with pytest.raises(TraceError) as err:
            call()
        assert err.value.code == "INVALID_TRACE_NAME"
    assert [p.name for p in (tmp_path / run_id).iterdir()] == ["events.jsonl"]
    w.close()
