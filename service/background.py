"""A coroutine run as a background task of the worker, started and stopped with it."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Background"]


class Background:
    """Subclasses implement `_run()` (loop until cancelled); `start()`/`stop()` manage it."""

    task_name = "touchflow-background"
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        """Cancel the task and wait for it to finish its clean-up."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
