"""Stopping asyncio tasks reliably.

On Python < 3.12, ``asyncio.wait_for`` returns the inner result instead of raising when the
outer task is cancelled at the moment the inner awaitable completes, so a single
``task.cancel()`` can be lost inside a loop that awaits with timeouts. :func:`cancel_and_wait`
repeats the cancellation until the task has ended.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any], retry: float = 0.5) -> None:
    """Cancel `task` (again every `retry` s if it keeps running) and wait until it ends."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=retry)
    error = None if task.cancelled() else task.exception()
    if error is not None:
        raise error
