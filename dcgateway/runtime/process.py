"""The process around a gateway or a cluster node (``dcgateway run``): everything it creates is
private (umask 077: files 0600, directories 0700), uvloop comes in through a loop factory (never
a global event-loop policy), and SIGTERM or SIGINT asks for a graceful stop: every phase of
``main`` must watch the stop event (:func:`unless_stopped` around a step that may wait long,
such as connecting), since the signal handler only sets it."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    """Run ``main(stop)`` on a uvloop loop until it returns; ``stop`` is set on SIGTERM or
    SIGINT. Returns ``main``'s exit code."""
    os.umask(0o077)

    async def _run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_run())


async def unless_stopped(step: Awaitable[T], stop: asyncio.Event) -> T | None:
    """``step``'s result, or None when ``stop`` is set first: ``step`` is then cancelled and
    waited for (its own clean-up runs). An exception of ``step`` propagates."""
    task = asyncio.ensure_future(step)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            await cancel_and_wait(task)
    return None if task.cancelled() else task.result()


async def cancel_and_wait(*tasks: asyncio.Future[Any], recancel_s: float = 0.25) -> None:
    """Cancel ``tasks`` and wait until each is done; their exceptions are retrieved, not
    raised. Python 3.11's ``asyncio.wait_for`` (nats-py uses it too) can swallow a cancellation
    that arrives as its awaitable completes, and the task then runs on: one still running is
    cancelled again every ``recancel_s`` seconds (a ``gather`` after one ``cancel()`` could wait
    for it forever, and a node would not stop)."""
    pending = {t for t in tasks if not t.done()}
    try:
        while pending:
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=recancel_s)
    finally:
        for t in pending:           # cancelled ourselves meanwhile: leave none uncancelled
            t.cancel()
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()
