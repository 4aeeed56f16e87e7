"""cancel_and_wait ends a task even when one cancellation is lost inside it."""

from __future__ import annotations

import asyncio

import pytest

from seglab.remote.tasks import cancel_and_wait


def test_a_swallowed_cancellation_is_repeated() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed += 1  # what asyncio.wait_for on Python 3.11 can do by accident
        await asyncio.sleep(3600)

    async def scenario() -> bool:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        await cancel_and_wait(task, retry=0.05)
        return task.cancelled()

    assert asyncio.run(scenario()) is True
    assert swallowed == 1


def test_an_error_the_task_ended_with_is_raised() -> None:
    async def failing() -> None:
        raise ValueError("supervisor bug")

    async def scenario() -> None:
        task = asyncio.create_task(failing())
        await asyncio.sleep(0)
        await cancel_and_wait(task)

    with pytest.raises(ValueError, match="supervisor bug"):
        asyncio.run(scenario())
