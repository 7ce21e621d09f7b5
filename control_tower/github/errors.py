"""The GitHub error with stable codes, and the translation of githubkit/httpx failures into it."""

from __future__ import annotations

from typing import Any

import httpx
from githubkit.exception import (
    AuthCredentialError,
    GitHubException,
    RateLimitExceeded,
    RequestError,
    RequestFailed,
    RequestTimeout,
)
from pydantic import ValidationError

from policy.errors import ControlTowerError

_BY_STATUS = {
    401: "GITHUB_UNAUTHORIZED",
    403: "GITHUB_FORBIDDEN",
    404: "GITHUB_NOT_FOUND",
    410: "GITHUB_NOT_FOUND",
    422: "GITHUB_VALIDATION_FAILED",
}


class GitHubError(ControlTowerError):
    """A GitHub API call failed; `code` says how (GITHUB_UNAVAILABLE, GITHUB_RATE_LIMITED, ...)."""

    code = "GITHUB_ERROR"
    http_status = 502

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(code, message)
        self.status = status
        self.retry_after_s = retry_after_s


def unwrap(exc: BaseException) -> BaseException:
    """The failure itself: githubkit wraps errors raised in the auth flow (token minting) in RequestError."""
    while isinstance(exc, RequestError) and not isinstance(exc, RequestFailed | RequestTimeout):
        inner = exc.exc
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc


def request_of(exc: BaseException) -> httpx.Request | None:
    """The HTTP request behind a failure, when there is one."""
    try:
        if isinstance(exc, RequestFailed | RequestTimeout):
            return exc.request
        if isinstance(exc, httpx.RequestError):
            return exc.request
    except RuntimeError:  # httpx raises when the request was never attached
        return None
    return None


def _where(exc: BaseException) -> str:
    request = request_of(exc)
    return f"{request.method} {request.url.path}" if request is not None else "GitHub request"


def _github_message(exc: RequestFailed) -> str:
    try:
        doc: Any = exc.response.raw_response.json()
    except ValueError:
        return ""
    return str(doc.get("message", "")) if isinstance(doc, dict) else ""


def translate(exc: BaseException) -> GitHubError:
    """A GitHubError with a stable code for any githubkit, httpx or response-validation failure."""
    inner = unwrap(exc)
    where = _where(inner)
    if isinstance(inner, GitHubError):
        return inner
    if isinstance(inner, RateLimitExceeded):
        wait = inner.retry_after.total_seconds()
        return GitHubError(
            "GITHUB_RATE_LIMITED",
            f"{where}: rate limited, retry after {wait:.0f}s",
            status=inner.response.status_code,
            retry_after_s=wait,
        )
    if isinstance(inner, RequestFailed):
        status = inner.response.status_code
        code = _BY_STATUS.get(status, "GITHUB_UNAVAILABLE" if status >= 500 else "GITHUB_REQUEST_FAILED")
        detail = _github_message(inner)
        return GitHubError(code, f"{where}: HTTP {status}" + (f" {detail}" if detail else ""), status=status)
    if isinstance(inner, RequestTimeout | httpx.TimeoutException):
        return GitHubError("GITHUB_UNAVAILABLE", f"{where}: timed out")
    if isinstance(inner, httpx.TransportError):
        return GitHubError("GITHUB_UNAVAILABLE", f"{where}: {type(inner).__name__}")
    if isinstance(inner, AuthCredentialError):
        return GitHubError("GITHUB_AUTH_CONFIG", f"GitHub credentials: {inner}")
    if isinstance(inner, ValidationError):
        return GitHubError("GITHUB_BAD_RESPONSE", f"unexpected response shape: {inner.error_count()} errors")
    if isinstance(inner, GitHubException):
        return GitHubError("GITHUB_REQUEST_FAILED", f"{where}: {type(inner).__name__}")
    return GitHubError("GITHUB_REQUEST_FAILED", f"{where}: {type(inner).__name__}")
