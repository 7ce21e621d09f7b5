"""The per-run trace folder: redacted, appended as the run goes, sealed by an atomic manifest."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import fcntl
import hashlib
import itertools
import json
import os
import re
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from policy.errors import ControlTowerError
from policy.redaction import Redactor

MANIFEST = "manifest.json"
EVENTS = "events.jsonl"
JSON_FILES = frozenset({"task.json", "policy.json"})
TEXT_FILES = frozenset({"summary.md", "diff.patch", "report.md"})
STEP_FILES = frozenset({"stdout.log", "stderr.log", "result.json"})
TRACE_FORMAT = 1

_RUN_ID = re.compile(r"^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$")
_STEP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_STEP_DIR = re.compile(r"^(\d+)-([A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")
_TMP_MARK = ".tmp-"
_TMP_SEQ = itertools.count()


class TraceError(ControlTowerError):
    """The trace folder cannot be used as asked."""

    http_status = 400


def _check_run_id(run_id: str) -> str:
    if not _RUN_ID.fullmatch(run_id):
        raise TraceError("INVALID_RUN_ID", f"not a ULID run id: {run_id[:40]!r}", field="run_id")
    return run_id


def run_dir(root: Path | str, run_id: str) -> Path:
    """The folder of one run, after checking the id cannot escape the trace root."""
    return Path(root) / _check_run_id(run_id)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _jsonable(obj: Any) -> Any:
    """Plain JSON data for obj, so redaction sees every string before it is serialised."""
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bytes | bytearray):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, enum.Enum):
        return _jsonable(obj.value)
    if isinstance(obj, Path):
        return str(obj)
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return _jsonable(dump(mode="json"))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    return str(obj)


def _dumps(obj: Any, *, indent: int | None = None) -> bytes:
    """UTF-8 JSON of plain data (`_jsonable`'s): compact, or indented by 2 (the only indent used).

    orjson writes the standard encoder's layout (`ensure_ascii=False`; ", " and ": " when indented)
    and the same values, ~10-50x faster: with an indent the standard encoder falls back to pure Python,
    which was the largest Python cost of writing a trace. Two spellings differ: a float below 1e-4
    is written positionally or as 1e-7 (not 1e-07), and NaN/Infinity, which JSON has not, as null.
    What orjson refuses (a lone surrogate from undecodable bytes, an integer past 64 bits) goes
    through the standard encoder, lone surrogates becoming \\udcXX escapes instead of invalid UTF-8.
    """
    if indent in (None, 2):
        try:
            return orjson.dumps(obj, option=_ORJSON_INDENT if indent else 0)
        except (TypeError, orjson.JSONEncodeError):
            pass
    text = json.dumps(obj, ensure_ascii=False, indent=indent, separators=None if indent else (",", ":"))
    return text.encode("utf-8", "backslashreplace")


_ORJSON_INDENT = orjson.OPT_INDENT_2


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_trace_file(rel: str) -> bool:
    return _TMP_MARK not in rel.rsplit("/", 1)[-1]


def _walk(folder: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of every regular file under `folder`, symlinks not followed, sorted."""
    found: list[tuple[str, str]] = []
    stack = [("", str(folder))]
    while stack:
        prefix, where = stack.pop()
        with os.scandir(where) as entries:
            for entry in entries:
                rel = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append((rel + "/", entry.path))
                elif entry.is_file(follow_symlinks=False) and _is_trace_file(rel):
                    found.append((rel, entry.path))
    # The order of the sorted Paths it replaces: component by component.
    for rel, path in sorted(found, key=lambda item: item[0].split("/")):
        yield rel, Path(path)


def file_entries(folder: Path, *, include_manifest: bool = False) -> list[dict[str, Any]]:
    """Relative path, size and sha256 of every file in a trace folder (temporary files excluded)."""
    return [
        {"path": rel, "size": path.stat().st_size, "sha256": _sha256_file(path)}
        for rel, path in _walk(folder)
        if include_manifest or rel != MANIFEST
    ]


def folder_digest(files: list[dict[str, Any]]) -> str:
    """sha256 over the sorted lines "path size sha256": the digest of the trace folder's Artifact."""
    lines = sorted(f"{f['path']} {f['size']} {f['sha256']}\n" for f in files)
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def _last_seq(path: Path) -> tuple[int, bool]:
    """The last seq in an events file and whether the file ends mid-line (a crash during a write)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0, False
    if size == 0:
        return 0, False
    with path.open("rb") as fh:
        window = 1 << 14
        while True:
            start = max(0, size - window)
            fh.seek(start)
            chunk = fh.read(size - start)
            lines = chunk.split(b"\n")
            partial = not chunk.endswith(b"\n")
            # The first piece may be cut unless we read from the start of the file.
            candidates = lines if start == 0 else lines[1:]
            for line in reversed(candidates):
                with contextlib.suppress(ValueError):
                    seq = json.loads(line).get("seq")
                    if isinstance(seq, int):
                        return seq, partial
            if start == 0:
                return 0, partial
            window *= 4


class TraceWriter:
    """Writes one run's trace folder; every byte goes through the Redactor first."""

    def __init__(self, root: Path | str, run_id: str, *, redactor: Redactor, fsync: bool = False) -> None:
        self.run_id = run_id
        self.path = run_dir(root, run_id)
        self.path.mkdir(parents=True, exist_ok=True)
        self._redactor = redactor
        self._fsync = fsync
        self._lock = threading.Lock()
        self._step_dirs: set[Path] = set()
        # A manifest from an earlier attempt no longer describes the folder once we write again.
        with contextlib.suppress(FileNotFoundError):
            (self.path / MANIFEST).unlink()
        events = self.path / EVENTS
        self._seq, partial = _last_seq(events)
        self._fd: int | None = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if partial:
            # Keep the torn line readable as garbage on its own line rather than glued to the next event.
            os.write(self._fd, b"\n")
        self._size = os.fstat(self._fd).st_size

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def seq(self) -> int:
        """The seq of the last event written."""
        return self._seq

    def close(self) -> None:
        """Close the events file; later events raise TRACE_CLOSED."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def event(self, type: str, data: Any = None, step_id: str | None = None) -> int:
        """Append one redacted event line to events.jsonl and return its seq."""
        clean = self._redactor.redact_obj(_jsonable(data if data is not None else {}))
        with self._lock:
            fd = self._fd
            if fd is None:
                raise TraceError("TRACE_CLOSED", "the trace was finalized or closed", http_status=409)
            # flock + size check: another process appending (an older attempt) must not reuse our seqs.
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(fd).st_size
                if size != self._size:
                    self._seq = max(self._seq, _last_seq(self.path / EVENTS)[0])
                self._seq += 1
                record = {
                    "seq": self._seq,
                    "ts": _now(),
                    "type": self._redactor.redact_text(type),
                    "step_id": None if step_id is None else self._redactor.redact_text(step_id),
                    "data": clean,
                }
                line = _dumps(record) + b"\n"
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                if self._fsync:
                    os.fsync(fd)
                # Every appender holds the flock while it writes: the file grew by our line only.
                self._size = size + len(line)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            return self._seq

    def _write_atomic(self, target: Path, data: bytes) -> Path:
        """Write a temporary file beside `target` (O_EXCL, a name unique to this process), rename it over.

        Plain descriptors rather than mkstemp and a buffered file: a trace writes ~9 small files per run.
        """
        while True:
            tmp = f"{target.parent}/.{target.name}{_TMP_MARK}{os.getpid()}-{next(_TMP_SEQ)}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                break
            except FileExistsError:  # left by a crashed process that had our pid: take the next name
                continue
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self._fsync or target.name == MANIFEST:
                    os.fsync(fd)
                os.fchmod(fd, 0o644)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return target

    def write_json(self, name: str, obj: Any) -> Path:
        """Write task.json or policy.json, redacted."""
        if name not in JSON_FILES:
            raise TraceError("INVALID_TRACE_NAME", f"not a trace JSON file: {name[:40]!r}", field="name")
        data = self._redactor.redact_obj(_jsonable(obj))
        return self._write_atomic(self.path / name, _dumps(data, indent=2) + b"\n")

    def write_text(self, name: str, text: str) -> Path:
        """Write summary.md, diff.patch or report.md, redacted."""
        if name not in TEXT_FILES:
            raise TraceError("INVALID_TRACE_NAME", f"not a trace text file: {name[:40]!r}", field="name")
        data = self._redactor.redact_text(text).encode("utf-8", "surrogateescape")
        return self._write_atomic(self.path / name, data)

    def step_dir(self, n: int, step_id: str) -> Path:
        """steps/<n>-<step_id>/, created."""
        if n < 0 or not _STEP_ID.fullmatch(step_id):
            raise TraceError("INVALID_TRACE_NAME", f"bad step {n}-{step_id[:40]!r}", field="step_id")
        folder = self.path / "steps" / f"{n}-{step_id}"
        if folder not in self._step_dirs:  # a step writes its result and both logs: one mkdir
            folder.mkdir(parents=True, exist_ok=True)
            self._step_dirs.add(folder)
        return folder

    def write_step_result(self, n: int, step_id: str, result: dict[str, Any]) -> Path:
        """steps/<n>-<step_id>/result.json, redacted."""
        data = self._redactor.redact_obj(_jsonable(result))
        return self._write_atomic(self.step_dir(n, step_id) / "result.json", _dumps(data, indent=2) + b"\n")

    def write_step_log(self, n: int, step_id: str, stream: Literal["stdout", "stderr"], data: bytes) -> Path:
        """steps/<n>-<step_id>/stdout.log or stderr.log from raw output, redacted."""
        if stream not in ("stdout", "stderr"):
            raise TraceError("INVALID_TRACE_NAME", f"bad stream {stream!r}", field="stream")
        target = self.step_dir(n, step_id) / f"{stream}.log"
        return self._write_atomic(target, self._redactor.redact_bytes(data))

    def write_step_logs(self, n: int, step_id: str, *, stdout: bytes = b"", stderr: bytes = b"") -> None:
        """Both step logs at once."""
        self.write_step_log(n, step_id, "stdout", stdout)
        self.write_step_log(n, step_id, "stderr", stderr)

    def finalize(self, manifest_fields: dict[str, Any]) -> dict[str, Any]:
        """Close events and write manifest.json last and atomically; returns the manifest."""
        self.close()
        files = file_entries(self.path)
        manifest: dict[str, Any] = dict(self._redactor.redact_obj(_jsonable(manifest_fields)))
        manifest.update(
            {
                "trace_format": TRACE_FORMAT,
                "run_id": manifest.get("run_id", self.run_id),
                "finalized_at": _now(),
                "files": files,
                "digest": folder_digest(files),
            }
        )
        self._write_atomic(self.path / MANIFEST, _dumps(manifest, indent=2) + b"\n")
        if self._fsync:
            dir_fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return manifest


@dataclasses.dataclass
class StepTrace:
    """One step folder: its number, id, result.json and the tails of its logs."""

    n: int
    step_id: str
    result: dict[str, Any] | None
    stdout_tail: str
    stderr_tail: str


@dataclasses.dataclass
class Trace:
    """A snapshot of a trace folder, readable while the run is still writing it."""

    run_id: str
    path: Path
    task: Any
    policy: Any
    events: list[dict[str, Any]]
    bad_lines: int
    steps: list[StepTrace]
    summary: str | None
    manifest: dict[str, Any] | None


def _tail(path: Path, max_bytes: int) -> str:
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None


class TraceReader:
    """Reads a trace folder, tolerating a run that is still writing or that crashed mid-line."""

    def __init__(self, root: Path | str, run_id: str) -> None:
        self.run_id = run_id
        self.path = run_dir(root, run_id)
        if not self.path.is_dir():
            raise TraceError("TRACE_NOT_FOUND", f"no trace for run {run_id}", http_status=404)

    def events(self) -> tuple[list[dict[str, Any]], int]:
        """All complete event lines, and how many lines could not be parsed."""
        events: list[dict[str, Any]] = []
        bad = 0
        try:
            raw = (self.path / EVENTS).read_bytes()
        except FileNotFoundError:
            return events, 0
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(record, dict):
                events.append(record)
            else:
                bad += 1
        return events, bad

    def manifest(self) -> dict[str, Any] | None:
        """manifest.json, or None while the run has not finished."""
        data = _load_json(self.path / MANIFEST)
        return data if isinstance(data, dict) else None

    def steps(self, *, tail_bytes: int = 2048) -> list[StepTrace]:
        """Step folders in step order."""
        out: list[StepTrace] = []
        folder = self.path / "steps"
        if not folder.is_dir():
            return out
        for child in folder.iterdir():
            m = _STEP_DIR.fullmatch(child.name)
            if not m or not child.is_dir():
                continue
            result = _load_json(child / "result.json")
            out.append(
                StepTrace(
                    n=int(m.group(1)),
                    step_id=m.group(2),
                    result=result if isinstance(result, dict) else None,
                    stdout_tail=_tail(child / "stdout.log", tail_bytes),
                    stderr_tail=_tail(child / "stderr.log", tail_bytes),
                )
            )
        return sorted(out, key=lambda s: (s.n, s.step_id))

    def read(self, *, tail_bytes: int = 2048) -> Trace:
        """The whole folder as a Trace."""
        events, bad = self.events()
        summary_path = self.path / "summary.md"
        return Trace(
            run_id=self.run_id,
            path=self.path,
            task=_load_json(self.path / "task.json"),
            policy=_load_json(self.path / "policy.json"),
            events=events,
            bad_lines=bad,
            steps=self.steps(tail_bytes=tail_bytes),
            summary=summary_path.read_text("utf-8", "replace") if summary_path.is_file() else None,
            manifest=self.manifest(),
        )


def read_trace(root: Path | str, run_id: str, *, tail_bytes: int = 2048) -> Trace:
    """A snapshot of one run's trace folder."""
    return TraceReader(root, run_id).read(tail_bytes=tail_bytes)


def list_files(root: Path | str, run_id: str) -> list[dict[str, Any]]:
    """Every file of a trace (manifest included) with size and sha256, for GET /runs/{id}/trace."""
    return file_entries(TraceReader(root, run_id).path, include_manifest=True)


def verify_manifest(root: Path | str, run_id: str) -> list[str]:
    """Paths that differ from the manifest (changed, missing or added); ["manifest.json"] if none."""
    reader = TraceReader(root, run_id)
    manifest = reader.manifest()
    if manifest is None or not isinstance(manifest.get("files"), list):
        return [MANIFEST]
    recorded = {f.get("path"): f for f in manifest["files"] if isinstance(f, dict)}
    actual = {f["path"]: f for f in file_entries(reader.path)}
    bad = [
        path
        for path in recorded.keys() | actual.keys()
        if path not in actual
        or path not in recorded
        or (recorded[path].get("size"), recorded[path].get("sha256"))
        != (actual[path]["size"], actual[path]["sha256"])
    ]
    return sorted(str(p) for p in bad)


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _short(value: Any, limit: int = 140) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


_HEADER_KEYS = (
    "run_id",
    "task_id",
    "trace_id",
    "status",
    "error_code",
    "attempt",
    "worker_id",
    "started_at",
    "ended_at",
    "duration_ms",
    "sandbox",
    "tokens",
)


def render_trace(root: Path | str, run_id: str, *, tail_lines: int = 10) -> str:
    """A human view of a trace for `control-tower trace RUN_ID`."""
    trace = read_trace(root, run_id)
    out: list[str] = [f"Trace {trace.run_id}  ({trace.path})"]
    manifest = trace.manifest
    if manifest is None:
        out.append("  manifest: not written yet (run in progress or crashed)")
        header: dict[str, Any] = {}
    else:
        header = {k: v for k, v in manifest.items() if k not in ("files", "digest", "trace_format")}
        changed = verify_manifest(root, run_id)
        state = "ok" if not changed else "MODIFIED: " + ", ".join(changed)
        out.append(f"  manifest: {state}  ({len(manifest.get('files', []))} files, {manifest.get('digest')})")
    ordered = [k for k in _HEADER_KEYS if k in header] + sorted(k for k in header if k not in _HEADER_KEYS)
    out.extend(f"  {key}: {_short(header[key])}" for key in ordered if key != "run_id")
    if isinstance(trace.task, dict):
        brief = {k: trace.task.get(k) for k in ("operation", "target") if k in trace.task}
        out.append(f"  task: {_short(brief)}")
    unreadable = f", {trace.bad_lines} unreadable lines" if trace.bad_lines else ""
    out.extend(["", f"Events ({len(trace.events)}{unreadable})"])
    start = _parse_ts(trace.events[0].get("ts")) if trace.events else None
    for ev in trace.events:
        ts = _parse_ts(ev.get("ts"))
        rel = f"+{(ts - start).total_seconds():8.3f}s" if ts and start else " " * 10
        step = f" [{ev['step_id']}]" if ev.get("step_id") else ""
        data = ev.get("data")
        out.append(f"  {rel} #{ev.get('seq')} {ev.get('type')}{step}" + (f"  {_short(data)}" if data else ""))
    for st in trace.steps:
        result = st.result or {}
        status = result.get("status", "no result")
        keys = ("exit_code", "error_code", "duration_ms")
        extra = "".join(f" {k}={result[k]}" for k in keys if k in result)
        out.extend(["", f"Step {st.n} {st.step_id}: {status}{extra}"])
        for name, tail in (("stdout", st.stdout_tail), ("stderr", st.stderr_tail)):
            lines = tail.splitlines()[-tail_lines:]
            if lines:
                out.append(f"  {name} (last {len(lines)} lines):")
                out.extend(f"    {line}" for line in lines)
    if trace.summary:
        out.extend(["", "Summary", *(f"  {line}" for line in trace.summary.splitlines())])
    return "\n".join(out) + "\n"
