"""Every table module of every layer, so the metadata is complete (migrations sit above all layers)."""

from __future__ import annotations

from sqlalchemy import MetaData

import control_tower.github.tables
import control_tower.tables
import cwom.audit
import cwom.tables
import worker.run_steps
from cwom.base import Base

__all__ = ["metadata"]

_LOADED = (control_tower.github.tables, control_tower.tables, cwom.audit, cwom.tables, worker.run_steps)
metadata: MetaData = Base.metadata
