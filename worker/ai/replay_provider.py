"""Plays a recorded run's model responses back, refusing to go on when the run diverges."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.ai.providers import AICode, AIError, AIRequest, AIResponse, last_user_tool_results
from worker.ai.wire import blocks_from_raw, response_from_raw


@dataclass(frozen=True)
class RecordedCall:
    """One recorded model call: the raw response and, when known, the tool results sent with the request."""

    raw: dict[str, Any]
    tool_results: tuple[tuple[str, bool], ...] | None = None


class ReplayProvider:
    """No API calls: answers request n with recorded response n after checking the conversation matches."""

    name = "replay"

    def __init__(self, calls: Iterable[RecordedCall], *, default_model: str = "replay") -> None:
        self._calls = list(calls)
        self._next = 0
        self.default_model = default_model

    @classmethod
    def from_events(
        cls, events: Iterable[tuple[str, Mapping[str, Any]] | Mapping[str, Any]]
    ) -> ReplayProvider:
        """Build from recorded `ai.request` / `ai.response` events in trace order.

        Each event is a (type, data) pair or an events.jsonl record with "type" and "data" keys.
        """
        calls: list[RecordedCall] = []
        pending: tuple[tuple[str, bool], ...] | None = None
        model = "replay"
        for event in events:
            if isinstance(event, Mapping):
                kind, data = str(event.get("type")), event.get("data") or {}
            else:
                kind, data = event
            if kind == "ai.request":
                pending = tuple(
                    (str(r.get("tool_use_id")), bool(r.get("is_error"))) for r in data.get("tool_results", [])
                )
            elif kind == "ai.response" and isinstance(data.get("raw"), dict):
                calls.append(RecordedCall(raw=dict(data["raw"]), tool_results=pending))
                model = str(data.get("model") or model)
                pending = None
        return cls(calls, default_model=model)

    @property
    def remaining(self) -> int:
        """Recorded responses not yet played."""
        return len(self._calls) - self._next

    def complete(self, request: AIRequest) -> AIResponse:
        """The next recorded response, if the request continues the recorded conversation."""
        start = time.monotonic()
        index = self._next
        if index >= len(self._calls):
            raise AIError(
                AICode.AI_REPLAY_EXHAUSTED, f"the recording has only {len(self._calls)} model calls"
            )
        self._check(request, index)
        self._next += 1
        return response_from_raw(
            self._calls[index].raw,
            provider=self.name,
            latency_ms=(time.monotonic() - start) * 1000,
            retry_count=0,
            fallback_model=request.model,
        )

    def _check(self, request: AIRequest, index: int) -> None:
        sent = [m.get("content") for m in request.messages if m.get("role") == "assistant"]
        expected = [blocks_from_raw(list(c.raw.get("content") or [])) for c in self._calls[:index]]
        sent_calls = [_tool_calls(c) for c in sent]
        expected_calls = [_tool_calls(c) for c in expected]
        if sent_calls != expected_calls:
            raise AIError(
                AICode.AI_REPLAY_DIVERGED,
                f"call {index + 1}: the conversation's tool calls differ from the recording",
            )
        recorded = self._calls[index].tool_results
        if recorded is not None:
            now = tuple(
                (str(r["tool_use_id"]), bool(r["is_error"])) for r in last_user_tool_results(request.messages)
            )
            if now != recorded:
                raise AIError(
                    AICode.AI_REPLAY_DIVERGED,
                    f"call {index + 1}: tool results {now} differ from the recording {recorded}",
                )


def _tool_calls(content: Any) -> list[tuple[str, Any]]:
    if not isinstance(content, list):
        return []
    return [
        (str(b.get("name")), b.get("input"))
        for b in content
        if isinstance(b, dict) and b.get("type") == "tool_use"
    ]
