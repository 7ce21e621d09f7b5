"""Service settings, read from the environment and `.env`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from policy.config import PolicyConfig

_PLACEHOLDERS = {"changeme", "change-me", "secret", "placeholder", "xxx"}


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything an operator can configure; `.env.example` documents each field."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: Literal["local", "test", "production"] = "local"
    database_url: str = "sqlite:///./control_tower.db"
    jct_allowed_repo_prefixes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    log_level: str = "INFO"
    log_json: bool = True
    max_body_bytes: int = 1 << 20

    # Policy knobs beyond the repository allow-list.
    policy_allow_network: bool = False
    policy_allow_secrets: bool = False
    policy_min_time_budget: int = 30
    policy_max_time_budget: int = 86_400

    # Worker.
    trace_root: Path = Path("./traces")
    workspace_root: Path = Path("./workspaces")
    keep_workspaces: bool = False
    git_base_url: str = "https://github.com"
    sandbox: Literal["auto", "bwrap", "landlock", "none"] = "auto"
    # bwrap command starts prepared ahead, each already in its own cgroup (worker/sandbox.py `_Spare`).
    sandbox_spares: int = Field(default=2, ge=0, le=16)
    worker_lease_seconds: float = 30.0
    worker_poll_interval: float = 0.5
    worker_max_attempts: int = 3
    worker_concurrency: int = 1

    # GitHub.
    github_api_url: str = "https://api.github.com"
    github_webhook_secret: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    github_token: SecretStr | None = None
    github_app_id: int | None = None
    github_app_private_key_path: Path | None = None
    github_min_permission: Literal["read", "triage", "write", "maintain", "admin"] = "write"
    github_label_prefix: str = "tower:"
    github_bot_login: str = "control-tower[bot]"
    github_delivery_threads: int = Field(default=32, ge=1, le=64)
    github_sweep_after_seconds: float = Field(default=60.0, ge=0)
    public_base_url: str = "http://127.0.0.1:8000"

    # AI.
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    ai_provider: Literal["auto", "anthropic", "mock"] = "auto"
    ai_model: str = "claude-sonnet-5-5"
    mock_ai_seed: int = 0
    mock_ai_mode: Literal["success", "schema_violation", "timeout", "transient_error"] = "success"

    @field_validator("jct_allowed_repo_prefixes", mode="before")
    @classmethod
    def _csv_prefixes(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("github_webhook_secret", mode="before")
    @classmethod
    def _csv_secrets(cls, value: object) -> object:
        return _split_csv(value)

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> Settings:
        if self.environment != "production":
            return self
        for secret in [*self.github_webhook_secret, self.github_token, self.anthropic_api_key]:
            if secret is not None and secret.get_secret_value().lower() in _PLACEHOLDERS:
                raise ValueError("a placeholder secret is configured; set a real value in production")
        return self

    def policy_config(self) -> PolicyConfig:
        """The pure policy configuration these settings describe."""
        return PolicyConfig(
            allowed_repo_prefixes=tuple(self.jct_allowed_repo_prefixes),
            allow_network=self.policy_allow_network,
            allow_secrets=self.policy_allow_secrets,
            min_time_budget_seconds=self.policy_min_time_budget,
            max_time_budget_seconds=self.policy_max_time_budget,
        )

    def secret_values(self) -> dict[str, str]:
        """Known secret values by name, for redaction before anything is persisted."""
        found: dict[str, str] = {}
        for i, secret in enumerate(self.github_webhook_secret):
            found[f"GITHUB_WEBHOOK_SECRET_{i}"] = secret.get_secret_value()
        if self.github_token is not None:
            found["GITHUB_TOKEN"] = self.github_token.get_secret_value()
        if self.anthropic_api_key is not None:
            found["ANTHROPIC_API_KEY"] = self.anthropic_api_key.get_secret_value()
        return {k: v for k, v in found.items() if v}
