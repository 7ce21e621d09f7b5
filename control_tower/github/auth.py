"""How the client authenticates: a plain token, or a GitHub App (JWT, then installation tokens)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from control_tower.github.errors import GitHubError


@dataclass(frozen=True)
class TokenAuth:
    """A personal access token or any other bearer token (GITHUB_TOKEN)."""

    token: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.token.strip():
            raise GitHubError("GITHUB_AUTH_CONFIG", "the GitHub token is empty")


@dataclass(frozen=True)
class AppAuth:
    """A GitHub App: id and PEM private key; installation_id pins one installation (else found per repo)."""

    app_id: int
    private_key_pem: str = field(repr=False)
    installation_id: int | None = None

    def __post_init__(self) -> None:
        try:
            key = serialization.load_pem_private_key(self.private_key_pem.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise GitHubError("GITHUB_AUTH_CONFIG", "the GitHub App private key is not a PEM key") from exc
        if not isinstance(key, RSAPrivateKey):
            raise GitHubError("GITHUB_AUTH_CONFIG", "the GitHub App private key must be an RSA key")

    @classmethod
    def from_key_file(cls, app_id: int, path: Path, installation_id: int | None = None) -> AppAuth:
        """Read the private key from GITHUB_APP_PRIVATE_KEY_PATH."""
        try:
            pem = path.read_text()
        except OSError as exc:
            raise GitHubError("GITHUB_AUTH_CONFIG", f"cannot read the GitHub App private key: {exc}") from exc
        return cls(app_id, pem, installation_id)


GitHubAuth = TokenAuth | AppAuth
