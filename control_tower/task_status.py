"""The intake task shows its run's status: one function every layer that moves a run uses."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from control_tower.tables import TaskRow
from cwom.enums import RUN_TO_TASK, RunStatus


def mirror_run_status(
    session: Session,
    task_ids: Sequence[str],
    status: RunStatus,
    now: datetime,
    error_code: str | None = None,
    error_message: str | None = None,
) -> None:
    """Copy a run's status (and error) onto its intake task(s), in the caller's transaction."""
    if not task_ids:
        return
    values: dict[str, Any] = {"status": RUN_TO_TASK[status].value, "updated_at": now}
    if error_code is not None:
        values["error_code"], values["error_message"] = error_code, error_message
    session.execute(
        update(TaskRow)
        .where(TaskRow.id.in_(list(task_ids)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
