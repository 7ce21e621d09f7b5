"""Build the GitHub client the settings describe (App or token), or None when GitHub is not configured."""

from __future__ import annotations

from control_tower.github.auth import AppAuth, TokenAuth
from control_tower.github.client import GitHubClient
from control_tower.settings import Settings


def client_from_settings(settings: Settings) -> GitHubClient | None:
    """A GitHub App client when an app id and key are set, else a token client, else None."""
    if settings.github_app_id is not None and settings.github_app_private_key_path is not None:
        auth: AppAuth | TokenAuth = AppAuth.from_key_file(
            settings.github_app_id, settings.github_app_private_key_path
        )
    elif settings.github_token is not None and settings.github_token.get_secret_value():
        auth = TokenAuth(settings.github_token.get_secret_value())
    else:
        return None
    return GitHubClient(auth=auth, base_url=settings.github_api_url, bot_login=settings.github_bot_login)
