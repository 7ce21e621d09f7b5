"""Missed deliveries: compare the app's delivery log with what was stored, and process the gaps.

Safe to run at any time: a delivery already stored is skipped by its id, and the semantic keys of
tasks and commands make processing a delivery twice harmless.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_tower.github.client import GitHubClient
from control_tower.github.ingest import receive_delivery
from control_tower.github.processor import DeliveryProcessor, ProcessorConfig
from control_tower.github.tables import DeliveryRow
from control_tower.settings import Settings


@dataclass
class ReconcileReport:
    """What a reconcile pass saw and did."""

    listed: int = 0
    already_stored: int = 0
    recovered: list[str] = field(default_factory=list)
    reprocessed: list[str] = field(default_factory=list)


def reconcile(
    factory: sessionmaker[Session],
    client: GitHubClient,
    settings: Settings,
    *,
    since: datetime | None = None,
    max_pages: int = 10,
) -> ReconcileReport:
    """Store and process deliveries GitHub sent that we never stored, then finish interrupted ones."""
    report = ReconcileReport()
    cursor: str | None = None
    config = settings.policy_config()
    for _ in range(max_pages):
        page = client.list_hook_deliveries(per_page=100, cursor=cursor)
        items = [d for d in page.items if since is None or d.delivered_at >= since]
        report.listed += len(items)
        with factory() as session:
            guids = [d.guid for d in items]
            stored = set(
                session.execute(
                    select(DeliveryRow.delivery_id).where(DeliveryRow.delivery_id.in_(guids))
                ).scalars()
            )
        report.already_stored += len(stored)
        # Oldest first, and one entry per guid (GitHub lists every redelivery attempt separately).
        seen: set[str] = set(stored)
        for summary in sorted(items, key=lambda d: d.delivered_at):
            if summary.guid in seen:
                continue
            seen.add(summary.guid)
            detail = client.get_hook_delivery(summary.id)
            received = receive_delivery(
                factory,
                delivery_id=summary.guid,
                event=summary.event,
                hook_id=None,
                payload=detail.payload,
                raw=json.dumps(detail.payload).encode(),
                config=config,
                label_prefix=settings.github_label_prefix,
                bot_login=settings.github_bot_login,
                max_attempts=settings.worker_max_attempts,
            )
            if not received.duplicate:
                report.recovered.append(summary.guid)
        if page.next_cursor is None or (since is not None and len(items) < len(page.items)):
            break
        cursor = page.next_cursor
    report.reprocessed = finish_interrupted(factory, settings)
    return report


def finish_interrupted(factory: sessionmaker[Session], settings: Settings) -> list[str]:
    """Deliveries stored but never processed (the process died in between): process them now."""
    processor = DeliveryProcessor(factory, ProcessorConfig.from_settings(settings))
    return processor.sweep(older_than_s=0, limit=100_000)
