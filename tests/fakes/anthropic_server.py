"""A local Anthropic Messages API server that plays scripted conversations over real HTTP.

The real `anthropic` SDK is pointed at it with `base_url`. `POST /v1/messages` answers non-streaming
(JSON) or streaming (server-sent events, the exact event sequence the API sends) depending on the
request's `stream` flag. Every request body and header set is recorded.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """A successful answer; stop_reason defaults to tool_use when there is a tool_use block."""

    content: list[dict[str, Any]]
    _: KW_ONLY
    stop_reason: str | None = None
    input_tokens: int = 100
    output_tokens: int = 20
    delay_s: float = 0.0
    model: str | None = None
    # Streaming only: pause between events; an `error` event (e.g. overloaded_error) after the first block.
    event_delay_s: float = 0.0
    fail_mid_stream: str | None = None


@dataclass
class Fail:
    """An error answer: 429 rate_limit_error, 529 overloaded_error, 500 api_error, ..."""

    status: int
    error_type: str
    message: str = "scripted failure"
    retry_after: str | None = None
    delay_s: float = 0.0


Step = Reply | Fail


def text(value: str) -> dict[str, Any]:
    """A text content block."""
    return {"type": "text", "text": value}


_ids = itertools.count(1)


def tool_use(name: str, tool_input: dict[str, Any], tool_id: str | None = None) -> dict[str, Any]:
    """A tool_use content block."""
    return {
        "type": "tool_use",
        "id": tool_id or f"toolu_fake_{next(_ids):04d}",
        "name": name,
        "input": tool_input,
    }


def rate_limited(retry_after: str = "1") -> Fail:
    """429 with retry-after, as the API sends it."""
    return Fail(429, "rate_limit_error", "Number of requests has exceeded your rate limit", retry_after)


def overloaded() -> Fail:
    """529 overloaded_error."""
    return Fail(529, "overloaded_error", "Overloaded")


def server_error() -> Fail:
    """500 api_error."""
    return Fail(500, "api_error", "Internal server error")


@dataclass
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeAnthropic:
    """Scripted Messages API; `script` is consumed in order, one step per request."""

    script: list[Step] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def enqueue(self, *steps: Step) -> None:
        """Append steps to the script."""
        with self._lock:
            self.script.extend(steps)

    def start(self) -> None:
        """Listen on 127.0.0.1 on a random port in a background thread."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-anthropic",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and wake any delayed responses."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies received, in order."""
        return [r.body for r in self.requests]

    def _next_step(self) -> Step | None:
        with self._lock:
            return self.script.pop(0) if self.script else None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        path = handler.path.split("?", 1)[0]
        with self._lock:
            self.requests.append(
                RecordedRequest("POST", path, {k.lower(): v for k, v in handler.headers.items()}, body)
            )
        if path != "/v1/messages":
            self._send_json(handler, 404, _error_body("not_found_error", f"no route {path}"))
            return
        step = self._next_step()
        if step is None:
            self._send_json(handler, 500, _error_body("api_error", "fake script exhausted"))
            return
        if step.delay_s and self._stop.wait(step.delay_s):
            return
        try:
            if isinstance(step, Fail):
                headers = {"retry-after": step.retry_after} if step.retry_after is not None else {}
                self._send_json(handler, step.status, _error_body(step.error_type, step.message), headers)
            elif body.get("stream"):
                self._send_sse(handler, self._message(step, body, streaming=True), step, self._stop)
            else:
                self._send_json(handler, 200, self._message(step, body, streaming=False))
        except (BrokenPipeError, ConnectionResetError):
            return  # the client gave up (timeout): nothing to answer

    def _message(self, step: Reply, body: dict[str, Any], *, streaming: bool) -> dict[str, Any]:
        has_tool = any(b.get("type") == "tool_use" for b in step.content)
        return {
            "id": f"msg_fake_{next(self._counter):04d}",
            "type": "message",
            "role": "assistant",
            "model": step.model or body.get("model", "claude-fake"),
            "content": [] if streaming else step.content,
            "stop_reason": None
            if streaming
            else (step.stop_reason or ("tool_use" if has_tool else "end_turn")),
            "stop_sequence": None,
            "usage": {
                "input_tokens": step.input_tokens,
                "output_tokens": 1 if streaming else step.output_tokens,
            },
        }

    @staticmethod
    def _send_json(
        handler: BaseHTTPRequestHandler,
        status: int,
        payload: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        handler.send_header("request-id", "req_fake")
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def _send_sse(
        handler: BaseHTTPRequestHandler, start: dict[str, Any], step: Reply, stop: threading.Event
    ) -> None:
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("cache-control", "no-cache")
        handler.send_header("request-id", "req_fake")
        handler.send_header("connection", "close")
        handler.end_headers()
        handler.close_connection = True

        def emit(event: str, data: dict[str, Any]) -> None:
            if step.event_delay_s and stop.wait(step.event_delay_s):
                raise BrokenPipeError("server stopping")
            handler.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
            handler.wfile.flush()

        emit("message_start", {"type": "message_start", "message": start})
        emit("ping", {"type": "ping"})
        for index, block in enumerate(step.content):
            if block["type"] == "text":
                emit(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
                for chunk in _chunks(block["text"]):
                    emit(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "text_delta", "text": chunk},
                        },
                    )
            else:
                emit(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {
                            "type": "tool_use",
                            "id": block["id"],
                            "name": block["name"],
                            "input": {},
                        },
                    },
                )
                for chunk in _chunks(json.dumps(block["input"])):
                    emit(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": chunk},
                        },
                    )
            emit("content_block_stop", {"type": "content_block_stop", "index": index})
            if step.fail_mid_stream:
                emit("error", _error_body(step.fail_mid_stream, "scripted mid-stream failure"))
                return
        has_tool = any(b.get("type") == "tool_use" for b in step.content)
        emit(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": step.stop_reason or ("tool_use" if has_tool else "end_turn"),
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": step.output_tokens},
            },
        )
        emit("message_stop", {"type": "message_stop"})


def _chunks(value: str, size: int = 7) -> list[str]:
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]


def _error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}, "request_id": "req_fake"}


@contextmanager
def running_fake_anthropic(*steps: Step) -> Iterator[FakeAnthropic]:
    """Start a fake server with an initial script; stop it afterwards."""
    fake = FakeAnthropic(script=list(steps))
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
