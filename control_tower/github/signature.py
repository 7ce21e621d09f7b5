"""Webhook signatures: GitHub's `X-Hub-Signature-256` HMAC, checked in constant time against every secret."""

from __future__ import annotations

from collections.abc import Sequence

from githubkit import webhooks

_SCHEME = "sha256="


def sign(body: bytes, secret: str) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`: `sha256=<hex>`."""
    return webhooks.sign(secret, body, "sha256")


def verify_signature(body: bytes, header: str | None, secrets: Sequence[str]) -> bool:
    """True when `header` is a valid sha256 signature of the raw body under any configured secret."""
    if not header or not header.startswith(_SCHEME) or not header.isascii():
        # Only sha256 is accepted (githubkit would fall back to sha1);
        # non-ASCII would make compare_digest raise.
        return False
    matched = False
    for secret in secrets:
        # Every secret is checked, so the time taken does not reveal which one (if any) matched.
        if secret and webhooks.verify(secret, body, header):
            matched = True
    return matched
