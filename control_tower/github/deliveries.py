"""The app's webhook delivery log as returned to reconcile: summaries, pages, details."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

_NEXT_CURSOR = re.compile(r"<([^>]+)>;\s*rel=\"next\"")


@dataclass(frozen=True)
class DeliverySummary:
    """One entry of the app's webhook delivery log."""

    id: int
    guid: str
    event: str
    action: str | None
    delivered_at: datetime
    redelivery: bool
    status_code: int
    installation_id: int | None
    repository_id: int | None


@dataclass(frozen=True)
class DeliveryPage:
    """A page of deliveries, newest first; pass next_cursor to get the following page."""

    items: list[DeliverySummary]
    next_cursor: str | None


@dataclass(frozen=True)
class DeliveryDetail:
    """A delivery with the request GitHub sent: headers and parsed JSON payload."""

    summary: DeliverySummary
    headers: dict[str, str]
    payload: dict[str, Any]


def summary_from(item: Any) -> DeliverySummary:
    """A DeliverySummary from githubkit's HookDeliveryItem or HookDelivery."""
    return DeliverySummary(
        id=item.id,
        guid=item.guid,
        event=item.event,
        action=item.action,
        delivered_at=item.delivered_at,
        redelivery=item.redelivery,
        status_code=item.status_code,
        installation_id=item.installation_id,
        repository_id=item.repository_id,
    )


def next_cursor(link: str | None) -> str | None:
    """The `cursor` of the rel="next" URL in a Link header."""
    if not link:
        return None
    match = _NEXT_CURSOR.search(link)
    if match is None:
        return None
    cursor = httpx.URL(match.group(1)).params.get("cursor")
    return cursor or None
