"""A background thread that carries out queued `/tower` commands while the worker runs."""

from __future__ import annotations

import threading

from sqlalchemy.exc import SQLAlchemyError

from control_tower.github.setup import client_from_settings
from control_tower.logs import get_logger
from control_tower.settings import Settings
from worker.github.commands import CommandProcessor
from worker.github.hooks import GitHubHooks
from worker.queue import RunQueue

log = get_logger(__name__)


class CommandPump:
    """Polls `github_commands` and processes them one at a time until stopped."""

    def __init__(self, processor: CommandProcessor, *, poll_interval: float = 1.0) -> None:
        self.processor = processor
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="github-commands", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                done = self.processor.run_once()
            except SQLAlchemyError as exc:
                log.warning("github.commands_db_error", error=type(exc).__name__)
                done = None
            except Exception:
                log.exception("github.commands_error")
                done = None
            if done is None:
                self._stop.wait(self.poll_interval)


def github_side(
    settings: Settings, queue: RunQueue, worker_id: str
) -> tuple[GitHubHooks | None, CommandPump | None]:
    """Hooks for the executor and the command pump, when GitHub is configured."""
    client = client_from_settings(settings)
    if client is None:
        return None, None
    hooks = GitHubHooks(client=client, settings=settings, factory=queue.factory)
    processor = CommandProcessor(
        factory=queue.factory, client=client, queue=queue, settings=settings, worker_id=worker_id
    )
    return hooks, CommandPump(processor, poll_interval=max(settings.worker_poll_interval, 0.2))
