"""Trace folder and redaction throughput: events/s (with and without fsync), log redaction MB/s, finalize."""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from ulid import ULID

from policy.redaction import Redactor
from worker.trace import TraceWriter


def main() -> None:
    known = [f"secret-value-{i:04d}" for i in range(20)]
    redactor = Redactor(known, named={"GITHUB_TOKEN": "ghp_" + "a" * 36})
    root = Path(tempfile.mkdtemp(prefix="trace-bench-"))
    for fsync in (False, True):
        n = 2000 if fsync else 20000
        w = TraceWriter(root, str(ULID()), redactor=redactor, fsync=fsync)
        data = {"command": "make test", "cwd": "/workspace", "usage": {"input_tokens": 10}}
        t = time.perf_counter()
        for _ in range(n):
            w.event("step.output", data, step_id="shell")
        d = time.perf_counter() - t
        print(f"events fsync={fsync}: {n / d:,.0f}/s ({d / n * 1e6:.1f} us/event)")
        w.close()
    random.seed(1)
    words = ["the", "build", "passed", "error:", "src/main.py:12", "warning", "0x1f", "-", "compiling"]
    plain = "\n".join(" ".join(random.choice(words) for _ in range(10)) for _ in range(100_000)).encode()
    noisy = plain.replace(b"warning", b"token=abc", 500)
    for name, blob in (("plain", plain), ("with secrets", noisy)):
        t = time.perf_counter()
        redactor.redact_bytes(blob)
        d = time.perf_counter() - t
        print(f"redact_bytes {name}: {len(blob) / d / 1e6:.1f} MB/s ({len(blob) / 1e6:.1f} MB)")
    w = TraceWriter(root, str(ULID()), redactor=redactor)
    for i in range(1, 21):
        w.write_step_logs(i, "shell", stdout=plain[:50_000], stderr=b"")
        w.write_step_result(i, "shell", {"status": "completed", "exit_code": 0})
    t = time.perf_counter()
    manifest = w.finalize({"status": "completed"})
    print(f"finalize ({len(manifest['files'])} files): {(time.perf_counter() - t) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
