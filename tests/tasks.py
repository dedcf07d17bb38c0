"""Stopping background tasks in tests, bounded."""

from __future__ import annotations

import asyncio

from dcgateway.runtime.process import cancel_and_wait as cancel_until_done


async def cancel_and_wait(*tasks: asyncio.Task, timeout: float = 15.0, attempts: int = 3) -> None:
    """The gateway's own :func:`~dcgateway.runtime.process.cancel_and_wait` (a task still running
    is cancelled again: Python 3.11's ``asyncio.wait_for`` can swallow a cancellation), cancelling
    ``attempts`` times within ``timeout``; a task still running then fails the test."""
    try:
        async with asyncio.timeout(timeout):
            await cancel_until_done(*tasks, recancel_s=timeout / attempts)
    except TimeoutError:
        pending = [t for t in tasks if not t.done()]
        raise AssertionError(f"tasks still running after {timeout:g}s of cancelling: "
                             f"{pending}") from None
