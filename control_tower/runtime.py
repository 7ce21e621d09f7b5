"""Process-wide settings every Control Tower process (server, worker) starts with."""

from __future__ import annotations

import gc
import sys

# A thread back from a database round trip waits for the GIL up to the switch interval (5 ms by
# default). ORM transactions (the worker's, the CWOM API's) hold the audit chain's row lock from their
# audit statement to their commit, so that wait, multiplied by every thread, became a throughput limit;
# 0.5 ms keeps the lock short. (Intake's single statement holds it for no Python at all.)
SWITCH_INTERVAL_S = 0.0005


def tune_process() -> None:
    """Apply the process-wide settings (idempotent)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def freeze_startup_heap() -> None:
    """Move everything alive after start-up (modules, models, the app) out of the collector's view.

    A full collection otherwise walks that whole heap (tens of thousands of objects) again each time.
    Measured on the webhook burst, the latency tail did not depend on the collector (with it disabled
    outright, p99 stayed within the run-to-run spread), so this only trims CPU; it costs nothing.
    """
    gc.collect()
    gc.freeze()
