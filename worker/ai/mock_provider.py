"""A deterministic provider for runs without an API key; it speaks the same tool-use protocol."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from enum import StrEnum
from typing import Any

from worker.ai.providers import AICode, AIError, AIRequest, AIResponse, ContentBlock, Message
from worker.ai.retry import RetryPolicy, TransientAIError, call_with_retries
from worker.ai.schema_gen import generate_valid, generate_violation
from worker.ai.wire import response_from_raw

MOCK_MODEL = "mock"
NOTE_FILE = "CONTROL_TOWER.md"
# The doctrine's verify command as build_system_prompt lists it: "- verify: make test".
_VERIFY = re.compile(r"^- verify(?:_command)?: (.+)$", re.MULTILINE)
_FILE_TOKEN = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[\w-]+\.[A-Za-z0-9]{1,8})(?![\w/-])")


class MockMode(StrEnum):
    """How the mock behaves (MOCK_AI_MODE)."""

    SUCCESS = "success"
    SCHEMA_VIOLATION = "schema_violation"
    TIMEOUT = "timeout"
    TRANSIENT_ERROR = "transient_error"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


class MockProvider:
    """Deterministic from its seed: the same requests give the same answers, ids and token counts."""

    name = "mock"

    def __init__(
        self,
        *,
        seed: int = 0,
        mode: MockMode | str = MockMode.SUCCESS,
        default_model: str = MOCK_MODEL,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self.seed = seed
        self.mode = MockMode(mode)
        self.default_model = default_model
        self._policy = retry_policy or RetryPolicy(base_delay_s=0.01, max_delay_s=0.05)
        self._calls = 0
        self._failed_once = False
        self._lock = threading.Lock()
        self._cancel = threading.Event()

    def complete(self, request: AIRequest) -> AIResponse:
        """Answer as the mode says: scripted tool use, a schema-shaped JSON document, or a failure."""
        start = time.monotonic()
        with self._lock:
            self._calls += 1
            call = self._calls
        if self.mode is MockMode.TIMEOUT:
            # Behave like a model that never answers: the call fails when its time limit is reached.
            self._cancel.wait(request.timeout_s)
            raise AIError(AICode.AI_TIMEOUT, f"mock model did not answer within {request.timeout_s:.1f}s")
        raw, retries = call_with_retries(
            lambda _remaining: self._attempt(request, call),
            policy=self._policy,
            deadline=start + request.timeout_s,
        )
        return response_from_raw(
            raw,
            provider=self.name,
            latency_ms=(time.monotonic() - start) * 1000,
            retry_count=retries,
            fallback_model=request.model,
        )

    def _attempt(self, request: AIRequest, call: int) -> dict[str, Any]:
        if self.mode is MockMode.TRANSIENT_ERROR and not self._failed_once:
            self._failed_once = True
            raise TransientAIError("mock transient error (HTTP 529 overloaded_error)")
        if request.tools:
            content, stop = self._agent_turn(request, call), "tool_use"
        elif request.response_schema is not None:
            content, stop = [{"type": "text", "text": self._document(request, call)}], "end_turn"
        else:
            content, stop = [{"type": "text", "text": f"mock answer {self.seed}:{call}"}], "end_turn"
        prompt_chars = len(request.system) + len(json.dumps(request.messages, default=str))
        return {
            "id": f"msg_mock_{self.seed}_{call:04d}",
            "type": "message",
            "role": "assistant",
            "model": request.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": prompt_chars // 4 + 1,
                "output_tokens": len(json.dumps(content)) // 4 + 1,
            },
        }

    def _document(self, request: AIRequest, call: int) -> str:
        schema = dict(request.response_schema or {})
        rng = random.Random(self.seed * 1_000_003 + call)  # noqa: S311 - determinism, not secrecy
        if self.mode is MockMode.SCHEMA_VIOLATION:
            doc = generate_violation(schema, rng)
        else:
            doc = generate_valid(schema, rng)
        body = json.dumps(doc, indent=2)
        # Odd seeds wrap the answer in a ```json fence, as real models often do.
        return f"```json\n{body}\n```" if self.seed % 2 else body

    def _agent_turn(self, request: AIRequest, call: int) -> list[ContentBlock]:
        tools = {t.name for t in request.tools}
        history = _tool_history(request.messages)
        objective = _text_of(request.messages[0].get("content")) if request.messages else ""
        target = next((m for m in _FILE_TOKEN.findall(objective) if m != NOTE_FILE), None)
        can_write = "write_file" in tools

        def use(name: str, tool_input: dict[str, Any]) -> list[ContentBlock]:
            return [
                {"type": "text", "text": f"Next: {name}."},
                {
                    "type": "tool_use",
                    "id": f"toolu_mock_{self.seed}_{call:04d}",
                    "name": name,
                    "input": tool_input,
                },
            ]

        last = history[-1] if history else None
        done = [name for name, _, _ in history]
        if last is None and "list_dir" in tools:
            return use("list_dir", {"path": "."})
        if target and "read_file" in tools and "read_file" not in done:
            return use("read_file", {"path": target})
        if can_write and not {"write_file", "edit_file"} & set(done):
            note = f"<!-- control-tower mock {self.seed} -->\n{objective.strip()}\n"
            read = next((h for h in history if h[0] == "read_file" and not h[2]), None)
            if target and read is not None:
                lines = [ln for ln in read[1].splitlines() if ln.strip()]
                if lines and read[1].count(lines[-1]) == 1 and "edit_file" in tools:
                    return use(
                        "edit_file",
                        {"path": target, "old_str": lines[-1], "new_str": lines[-1] + "\n" + note},
                    )
                return use("write_file", {"path": target, "content": read[1] + "\n" + note})
            return use("write_file", {"path": NOTE_FILE, "content": f"# Control Tower\n\n{note}"})
        verify = _VERIFY.search(request.system)
        if verify and "bash" in tools and "bash" not in done and can_write:
            # Like a careful agent: run the doctrine's verify command after changing files.
            return use("bash", {"command": verify.group(1).strip()})
        if "git_diff" in tools and "git_diff" not in done and can_write:
            return use("git_diff", {})
        changed = [h for h in history if h[0] in ("write_file", "edit_file") and not h[2]]
        summary = f"Mock agent (seed {self.seed}): looked at {len(done)} tool results; " + (
            f"changed {len(changed)} file(s)." if changed else "made no changes."
        )
        return use("finish", {"summary": summary})


def _tool_history(messages: list[Message]) -> list[tuple[str, str, bool]]:
    """(tool name, result text, is_error) for each tool call so far, in order."""
    names: dict[str, str] = {}
    history: list[tuple[str, str, bool]] = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use":
                names[str(block.get("id"))] = str(block.get("name"))
            elif block.get("type") == "tool_result":
                result = block.get("content")
                history.append(
                    (
                        names.get(str(block.get("tool_use_id")), "?"),
                        _text_of(result),
                        bool(block.get("is_error")),
                    )
                )
    return history
