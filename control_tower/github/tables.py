"""Tables of the GitHub integration: every verified delivery, and the commands waiting for the worker."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cwom.base import Base, ULIDStr, utcnow


class DeliveryRow(Base):
    """A verified webhook delivery; the primary key makes a redelivery a no-op."""

    __tablename__ = "github_deliveries"

    delivery_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    event: Mapped[str] = mapped_column(String(100))
    action: Mapped[str | None] = mapped_column(String(100))
    hook_id: Mapped[str | None] = mapped_column(String(40))
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    repo: Mapped[str | None] = mapped_column(String(255))
    sender: Mapped[str | None] = mapped_column(String(100))
    # Read by time only through the composite index below (the sweep), so no index of its own.
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="received")
    outcome: Mapped[dict[str, Any] | None]
    processed_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_github_deliveries_status", "status", "received_at"),)


class CommandRow(Base):
    """A `/tower` command (or a reply owed) that the worker carries out after checking permission."""

    __tablename__ = "github_commands"

    id: Mapped[str] = mapped_column(ULIDStr, primary_key=True)
    semantic_key: Mapped[str] = mapped_column(String(300), unique=True)
    delivery_id: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(32))
    repo: Mapped[str] = mapped_column(String(255))
    issue_number: Mapped[int] = mapped_column(Integer)
    comment_id: Mapped[int | None] = mapped_column(BigInteger)
    sender: Mapped[str] = mapped_column(String(100))
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_by: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    result: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_github_commands_status", "status", "created_at"),)
