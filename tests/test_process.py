"""dcgateway.runtime.process: stopping a step or a task even when it swallows a cancellation,
as Python 3.11's ``asyncio.wait_for`` can when the cancellation arrives as its awaitable
completes (a node that did this waited forever to stop)."""

from __future__ import annotations

import asyncio

import pytest

from dcgateway.runtime.process import cancel_and_wait, unless_stopped

pytestmark = pytest.mark.asyncio


async def stubborn(cancels_seen: list[int]) -> str:
    """Runs on after its first cancellation, ends at the second."""
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        cancels_seen.append(1)               # swallowed
    await asyncio.sleep(60)
    return "never"


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again_until_it_ends():
    seen: list[int] = []
    task = asyncio.create_task(stubborn(seen))
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await cancel_and_wait(task, recancel_s=0.05)
    assert task.cancelled() and seen == [1]


async def test_the_exception_of_a_task_is_retrieved_not_raised():
    async def fails_on_cancel() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RuntimeError("clean-up failed") from None
    task = asyncio.create_task(fails_on_cancel())
    done = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    await cancel_and_wait(task, done)
    assert isinstance(task.exception(), RuntimeError) and done.done()


async def test_a_stop_ends_a_step_that_swallows_its_first_cancellation():
    seen: list[int] = []
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    async with asyncio.timeout(5):
        assert await unless_stopped(stubborn(seen), stop) is None
    assert seen == [1]


async def test_a_step_that_ends_first_gives_its_result():
    stop = asyncio.Event()
    assert await unless_stopped(asyncio.sleep(0, result="done"), stop) == "done"
