"""Blocking probes of a NATS cluster, for code that has no event loop of its own (the local
cluster's start-up, ``cluster status``): each runs one short-lived loop, bounded in time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import nats
from nats.js.errors import APIError


async def _probe_once(urls: Sequence[str], name: str) -> None:
    nc = await nats.connect(servers=list(urls), connect_timeout=1, max_reconnect_attempts=0,
                            allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=2)
        await js.add_stream(name=name, subjects=[f"{name.lower()}.probe"], num_replicas=1,
                            max_msgs=1)
        await js.delete_stream(name)
    finally:
        await nc.close()


def wait_jetstream(urls: Sequence[str], timeout: float, name: str = "DCGW_PROBE") -> None:
    """Until JetStream on ``urls`` creates and deletes a stream (its meta leader is elected);
    TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            asyncio.run(asyncio.wait_for(_probe_once(urls, name), 5))
            return
        except (OSError, asyncio.TimeoutError, APIError, nats.errors.Error) as exc:
            last = exc
            time.sleep(0.2)
    raise TimeoutError(f"JetStream on {', '.join(urls)} not ready within {timeout:g}s: {last!r}")
