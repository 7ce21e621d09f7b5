"""Sub-commands contributed by later subsystems (audit, worker, trace, github, replay)."""

from __future__ import annotations

import argparse
from typing import Any

from control_tower.settings import Settings


def add_parsers(sub: Any) -> None:
    """Register the extra sub-command parsers."""
    del sub


def handler(name: str) -> Any:
    """The handler for an extra sub-command."""

    def _missing(_: argparse.Namespace, __: Settings) -> int:
        raise SystemExit(f"unknown command {name}")

    return _missing
