"""Waiting for a webhook delivery's outcome: the webhook answers first and processes after."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.support.runs import wait_for


def delivery_outcome(
    get: Callable[[str], httpx.Response], response: httpx.Response, timeout: float = 30.0
) -> dict[str, Any]:
    """The outcome of a delivery the webhook accepted (`received`), once it has been processed."""
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "received", response.text
    path = f"/github/deliveries/{response.json()['delivery_id']}"

    def processed() -> dict[str, Any] | None:
        found = get(path)
        assert found.status_code == 200, found.text
        body: dict[str, Any] = found.json()
        return body if body["status"] == "processed" else None

    outcome: dict[str, Any] = wait_for(processed, timeout)["outcome"]
    return outcome
