"""Bounded retries with exponential backoff for transient provider failures."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from worker.ai.providers import AICode, AIError

T = TypeVar("T")


class TransientAIError(Exception):
    """A failure worth retrying (429, 529, 5xx, connection reset); `retry_after_s` from the server."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait between attempts."""

    max_retries: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    # A server-requested wait longer than this is not honoured: the call fails instead.
    max_retry_after_s: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def backoff(self, retry_number: int) -> float:
        """Delay before retry number `retry_number` (1-based) when the server gave no retry-after."""
        return float(min(self.max_delay_s, self.base_delay_s * (2 ** (retry_number - 1))))


def call_with_retries(
    attempt: Callable[[float], T],
    *,
    policy: RetryPolicy,
    deadline: float,
) -> tuple[T, int]:
    """Run `attempt(remaining_s)` until it succeeds; return its value and how many retries it took.

    Raises AIError(AI_PROVIDER_UNAVAILABLE) when retries run out, AI_TIMEOUT when the deadline is reached.
    """
    retries = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AIError(AICode.AI_TIMEOUT, "the model call ran past its time limit", retry_count=retries)
        try:
            return attempt(remaining), retries
        except TransientAIError as exc:
            if retries >= policy.max_retries:
                raise AIError(
                    AICode.AI_PROVIDER_UNAVAILABLE,
                    f"provider still failing after {retries} retries: {exc}",
                    retry_count=retries,
                    attempts=retries + 1,
                ) from exc
            retries += 1
            delay = policy.backoff(retries)
            if exc.retry_after_s is not None:
                if exc.retry_after_s > policy.max_retry_after_s:
                    raise AIError(
                        AICode.AI_PROVIDER_UNAVAILABLE,
                        f"provider asked to wait {exc.retry_after_s:.0f}s, longer than allowed",
                        retry_count=retries - 1,
                    ) from exc
                delay = max(0.0, exc.retry_after_s)
            if time.monotonic() + delay >= deadline:
                raise AIError(
                    AICode.AI_TIMEOUT,
                    f"no time left to retry after: {exc}",
                    retry_count=retries - 1,
                ) from exc
            policy.sleep(delay)
