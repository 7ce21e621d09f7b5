"""Opaque keyset cursors shared by every list endpoint."""

from __future__ import annotations

import base64
import json
from typing import Any

from policy.errors import ControlTowerError


class InvalidCursor(ControlTowerError):
    """The cursor is not one this service issued."""

    code = "INVALID_CURSOR"
    http_status = 422


def encode_cursor(*key: Any) -> str:
    """An opaque cursor for the given sort key."""
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    """The sort key inside a cursor, or InvalidCursor."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError) as exc:
        raise InvalidCursor(message="cursor is malformed", field="cursor") from exc
    if not isinstance(key, list) or len(key) != arity:
        raise InvalidCursor(message="cursor is malformed", field="cursor")
    return key
