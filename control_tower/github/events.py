"""githubkit's typed webhook models, with one pydantic validator per event kept for the process.

`githubkit.webhooks.parse` builds a new `TypeAdapter` (a full core-schema build over the event's
union of models) on every call: about 1.3 ms of CPU per delivery, and under load most of a webhook
process's time (the import lock it takes is contended too). The adapter does not depend on the
payload, so it is built once per event name and reused; validation itself takes ~0.05 ms.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from githubkit.webhooks import parse
from pydantic import TypeAdapter

# The versioned package githubkit's own `parse` imports event modules from.
_PACKAGE = importlib.import_module(parse.__module__).__package__ or ""


@functools.cache
def _adapter(event: str) -> TypeAdapter[Any]:
    module = importlib.import_module(f".{event}", _PACKAGE)
    return TypeAdapter(module.Event)


def validate(event: str, raw: bytes) -> Any:
    """The typed event for a raw body; raises pydantic's ValidationError when the models refuse it."""
    return _adapter(event).validate_json(raw)


def warm(events: frozenset[str]) -> None:
    """Build the validators up front, so the first delivery of a kind does not pay for it."""
    for event in events:
        _adapter(event)
