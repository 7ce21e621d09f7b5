"""A local OpenAI Chat Completions server (`POST /v1/chat/completions`) playing scripted answers."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    """One scripted HTTP answer: a chat completion body or an error status."""

    status: int = 200
    content: str | None = None
    tool_calls: list[tuple[str, str, str]] = field(default_factory=list)  # (id, name, raw JSON arguments)
    finish_reason: str | None = None
    usage: tuple[int, int] = (100, 20)
    retry_after: str | None = None


@dataclass
class FakeOpenAI:
    """Scripted Chat Completions API; records every request."""

    script: list[Answer] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake._lock:
                    fake.requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                        }
                    )
                    step = fake.script.pop(0) if fake.script else Answer(status=500)
                status, payload, headers = fake._render(step, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _render(self, step: Answer, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        headers = {"retry-after": step.retry_after} if step.retry_after else {}
        if step.status != 200:
            return step.status, {"error": {"message": "scripted failure", "type": "server_error"}}, headers
        message: dict[str, Any] = {"role": "assistant", "content": step.content}
        if step.tool_calls:
            message["tool_calls"] = [
                {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                for i, n, a in step.tool_calls
            ]
        finish = step.finish_reason or ("tool_calls" if step.tool_calls else "stop")
        return (
            200,
            {
                "id": f"chatcmpl-fake-{next(self._ids)}",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {
                    "prompt_tokens": step.usage[0],
                    "completion_tokens": step.usage[1],
                    "total_tokens": sum(step.usage),
                },
            },
            headers,
        )


@contextmanager
def running_fake_openai(*answers: Answer) -> Iterator[FakeOpenAI]:
    """Start a fake server with a script; stop it afterwards."""
    fake = FakeOpenAI(script=list(answers))
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
