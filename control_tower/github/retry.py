"""Bounded retries for GitHub calls: rate limits wait as told, 5xx and network errors back off."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

import httpx
from githubkit.exception import GitHubException, RateLimitExceeded, RequestFailed, RequestTimeout
from githubkit.retry import RetryOption

from control_tower.github.errors import request_of, unwrap
from control_tower.logs import get_logger

log = get_logger(__name__)

# POSTs whose repetition cannot duplicate anything: a reaction is unique per user and content,
# a token is simply minted again.
_IDEMPOTENT_POST_SUFFIXES = ("/reactions", "/access_tokens")
_MIN_WAIT = timedelta(milliseconds=50)  # githubkit sleeps 60 s when told to wait 0


@dataclass(frozen=True)
class RetryPolicy:
    """How long GitHub failures are retried before a GitHubError is raised."""

    max_retries: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    rate_limit_retries: int = 3
    max_rate_limit_wait_s: float = 60.0

    def backoff(self, retry_count: int) -> float:
        """Exponential backoff with a little jitter, capped."""
        delay = min(self.backoff_max_s, self.backoff_base_s * (2.0**retry_count))
        return delay * (1 + random.random() / 4)  # noqa: S311 - jitter, not security


def safe_to_repeat(exc: BaseException) -> bool:
    """Whether sending the request again cannot create a duplicate (POSTs mostly can)."""
    if isinstance(exc, httpx.ConnectError):
        return True  # never reached the server
    request = request_of(exc)
    if request is None:
        return False
    if request.method != "POST":
        return True
    return request.url.path.endswith(_IDEMPOTENT_POST_SUFFIXES)


class RetryDecision:
    """githubkit `auto_retry` callback implementing a RetryPolicy."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, exc: GitHubException, retry_count: int) -> RetryOption:
        inner = unwrap(exc)
        request = request_of(inner)
        where = f"{request.method} {request.url.path}" if request is not None else "request"
        if isinstance(inner, RateLimitExceeded):
            wait = inner.retry_after.total_seconds()
            if retry_count >= self.policy.rate_limit_retries or wait > self.policy.max_rate_limit_wait_s:
                return RetryOption(False)
            log.warning("github_rate_limited", where=where, wait_s=wait, retry=retry_count + 1)
            return RetryOption(True, max(inner.retry_after, _MIN_WAIT))
        if retry_count >= self.policy.max_retries or not safe_to_repeat(inner):
            return RetryOption(False)
        transient = (isinstance(inner, RequestFailed) and inner.response.status_code >= 500) or isinstance(
            inner, RequestTimeout | httpx.TimeoutException | httpx.TransportError
        )
        if not transient:
            return RetryOption(False)
        delay = self.policy.backoff(retry_count)
        log.warning("github_retry", where=where, error=type(inner).__name__, delay_s=round(delay, 3))
        return RetryOption(True, max(timedelta(seconds=delay), _MIN_WAIT))
