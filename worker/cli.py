"""The `control-tower` console script: every layer's sub-commands, assembled at the top layer."""

from __future__ import annotations

from collections.abc import Sequence

import control_tower.cli as base_cli

# Importing a module registers its sub-commands (see `control_tower.cli.command`).
COMMAND_MODULES: tuple[str, ...] = (
    "control_tower.cli_github",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `control-tower`."""
    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module)
    return base_cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
