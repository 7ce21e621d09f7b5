"""Scripted faults for the GitHub double: 5xx, rate limits (403, 429), lost answers, delays."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Fault:
    """A scripted answer replacing the real one; status None means "only delay, then answer normally"."""

    status: int | None = 502
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "Server Error"
    rate_limit_reset_in_s: int | None = None  # x-ratelimit-reset is computed when the fault fires
    after_effect: bool = False  # process the request for real, then answer with the fault ("response lost")


def server_error(status: int = 502) -> Fault:
    """A 5xx answer."""
    return Fault(status, message="Bad Gateway" if status == 502 else "Server Error")


def rate_limited_403(reset_in_s: int = 1) -> Fault:
    """Primary rate limit: 403 with x-ratelimit-remaining 0 and a reset time."""
    return Fault(403, message="API rate limit exceeded for installation.", rate_limit_reset_in_s=reset_in_s)


def rate_limited_429(retry_after_s: int = 1) -> Fault:
    """Secondary rate limit: 429 with retry-after."""
    return Fault(
        429,
        headers={"retry-after": str(retry_after_s)},
        message="You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
    )


def lost_response(status: int = 502) -> Fault:
    """The request takes effect, but the client only sees a 5xx (as when a proxy drops the answer)."""
    return Fault(status, message="Bad Gateway", after_effect=True)


def slow(delay_s: float) -> Fault:
    """Answer normally, but only after `delay_s` seconds."""
    return Fault(None, delay_s=delay_s)
