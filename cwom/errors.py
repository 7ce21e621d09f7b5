"""Errors of the canonical-object services, each with a stable code."""

from __future__ import annotations

from policy.errors import ControlTowerError


class ObjectNotFound(ControlTowerError):
    """No object of this kind has this id."""

    code = "NOT_FOUND"
    http_status = 404


class RefNotFound(ControlTowerError):
    """A Ref points at an object that does not exist."""

    code = "REF_NOT_FOUND"
    http_status = 422


class RefKindMismatch(ControlTowerError):
    """A Ref has the wrong kind for this field."""

    code = "REF_KIND_MISMATCH"
    http_status = 422


class RepoExists(ControlTowerError):
    """A repo with this slug already exists."""

    code = "REPO_EXISTS"
    http_status = 409


class ArtifactExists(ControlTowerError):
    """An artifact with this idempotency key already exists."""

    code = "ARTIFACT_EXISTS"
    http_status = 409


class VersionExists(ControlTowerError):
    """The issue already has a context packet with this version."""

    code = "VERSION_EXISTS"
    http_status = 409


class InvalidTransition(ControlTowerError):
    """The status change is not allowed from the current status."""

    code = "INVALID_TRANSITION"
    http_status = 409


class ConcurrentUpdate(ControlTowerError):
    """The object changed while this request was being handled; read it again and retry."""

    code = "CONCURRENT_UPDATE"
    http_status = 409


class ImmutableObject(ControlTowerError):
    """Context packets and constraint snapshots never change; create a new one instead."""

    code = "IMMUTABLE_OBJECT"
    http_status = 405
