"""The one base exception of Control Tower and the policy error."""

from __future__ import annotations

from enum import StrEnum


class ControlTowerError(Exception):
    """A failure with a stable machine-readable code, turned into an HTTP answer at the edge only."""

    code: str = "INTERNAL_ERROR"
    http_status: int = 500

    def __init__(
        self,
        code: str | None = None,
        message: str | None = None,
        *,
        field: str | None = None,
        http_status: int | None = None,
    ) -> None:
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status
        self.field = field
        self.message = message or (type(self).__doc__ or self.code).strip()
        super().__init__(f"{self.code}: {self.message}")

    def to_dict(self) -> dict[str, str | None]:
        """The error body shape shared by every endpoint."""
        return {"code": self.code, "field": self.field, "message": self.message}


class PolicyCode(StrEnum):
    """Stable codes for every reason policy refuses a task."""

    INVALID_OPERATION = "INVALID_OPERATION"
    REPO_NOT_ALLOWED = "REPO_NOT_ALLOWED"
    TIME_BUDGET_TOO_LOW = "TIME_BUDGET_TOO_LOW"
    TIME_BUDGET_TOO_HIGH = "TIME_BUDGET_TOO_HIGH"
    NETWORK_ACCESS_DENIED = "NETWORK_ACCESS_DENIED"
    SECRETS_ACCESS_DENIED = "SECRETS_ACCESS_DENIED"
    PATH_NOT_ALLOWED = "PATH_NOT_ALLOWED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    OPERATION_NOT_ALLOWED_BY_DOCTRINE = "OPERATION_NOT_ALLOWED_BY_DOCTRINE"


class PolicyError(ControlTowerError):
    """The task is outside what policy allows."""

    http_status = 403

    def __init__(self, code: PolicyCode, field: str, message: str | None = None) -> None:
        super().__init__(code.value, message, field=field)
        self.policy_code = code
