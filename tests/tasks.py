"""Stopping background tasks in tests, bounded."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(*tasks: asyncio.Task, timeout: float = 15.0, attempts: int = 3) -> None:
    """Cancel ``tasks`` and wait until each is done, within ``timeout``. Python 3.11's
    ``asyncio.wait_for`` can swallow a cancellation that arrives as its own awaitable completes,
    so a task still running after a share of the time is cancelled again (``gather`` after one
    ``cancel()`` waited forever on such a task). Exceptions of the tasks are retrieved."""
    pending = [t for t in tasks if not t.done()]
    for _ in range(attempts):
        if not pending:
            break
        for t in pending:
            t.cancel()
        _, still = await asyncio.wait(pending, timeout=timeout / attempts)
        pending = list(still)
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()
    assert not pending, f"tasks still running after {timeout:g}s of cancelling: {pending}"
