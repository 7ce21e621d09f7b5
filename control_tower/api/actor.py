"""The `X-Actor: kind:id` header naming who makes a change through the API (audited as the actor)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Header

from cwom.audit import Actor
from policy.errors import ControlTowerError

ACTOR_KINDS = frozenset({"human", "agent", "system"})
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@/\[\]-]{0,199}")
DEFAULT_ACTOR = Actor("human", "api")


class InvalidActor(ControlTowerError):
    """X-Actor must be `kind:id` with kind human, agent or system."""

    code = "INVALID_ACTOR"
    http_status = 422


def parse_actor(value: str | None) -> Actor:
    """The actor a header names; `human:api` when there is none."""
    if value is None or value == "":
        return DEFAULT_ACTOR
    kind, sep, ident = value.partition(":")
    if not sep or kind not in ACTOR_KINDS or not _ID.fullmatch(ident):
        raise InvalidActor(field="X-Actor")
    return Actor(kind, ident)


def _actor(x_actor: Annotated[str | None, Header()] = None) -> Actor:
    return parse_actor(x_actor)


ActorDep = Annotated[Actor, Depends(_actor)]
