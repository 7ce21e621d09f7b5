"""Tables owned by the service layer: intake tasks and recorded refusals."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cwom.base import Base, ULIDStr, utcnow


class TaskRow(Base):
    """An accepted task; `idempotency_key` is unique so concurrent duplicates cannot both insert."""

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(ULIDStr, primary_key=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    operation: Mapped[str] = mapped_column(String(32))
    repo: Mapped[str] = mapped_column(String(255))
    ref: Mapped[str] = mapped_column(String(255))
    priority: Mapped[int] = mapped_column(Integer)
    requested_by_kind: Mapped[str] = mapped_column(String(16))
    requested_by_id: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(32))
    body: Mapped[dict[str, Any]]
    policy_version: Mapped[str] = mapped_column(String(80))
    trace_id: Mapped[str] = mapped_column(String(64))
    cwom_issue_id: Mapped[str | None] = mapped_column(ULIDStr)
    run_id: Mapped[str | None] = mapped_column(ULIDStr, unique=True)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_tasks_status_id", "status", "id"),)


class RefusalRow(Base):
    """A request policy refused: kept so nothing a client sent is silently dropped."""

    __tablename__ = "intake_refusals"

    id: Mapped[str] = mapped_column(ULIDStr, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    source: Mapped[str] = mapped_column(String(32))
    code: Mapped[str] = mapped_column(String(64), index=True)
    field: Mapped[str | None] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    policy_version: Mapped[str] = mapped_column(String(80))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    requested_by_kind: Mapped[str] = mapped_column(String(16))
    requested_by_id: Mapped[str] = mapped_column(String(200))
    body: Mapped[dict[str, Any]]
    trace_id: Mapped[str] = mapped_column(String(64))
