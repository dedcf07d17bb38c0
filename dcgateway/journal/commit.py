"""Group commit: one fdatasync in flight at a time, off the event loop, covering every append made
before it started (docs/architecture.md: "group-commit fsync per batch on a separate thread or executor
while the loop keeps reading"; an fsync is ~200 µs, so one per message would cap the gateway at a
few thousand messages/s, while one per batch costs the same whatever the batch size).

Shape: the fan-out appends a batch (one socket read's worth of messages) and calls :meth:`notify`
(sets an Event; no Future or Task per message). The committer task wakes, hands the buffered bytes
to the OS on the loop thread (:meth:`Journal.flush_writes`, one ``pwrite``), runs
:meth:`Journal.sync` in its own single worker thread, and calls ``on_durable(lsn)`` on the loop;
whatever was appended meanwhile is picked up by the next round. Checkpoints (index fsyncs) run in
the same worker between rounds, after the durable notification, so they never delay one.

Failures (disk full, EIO) go to ``on_error`` and are retried with exponential backoff; nothing is
reported durable until a sync has really succeeded (the journal rewrites un-synced bytes after a
failed fsync, see :meth:`Journal.sync`), so the gateway keeps accepting but stops releasing copies
until the disk recovers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable

from ..errors import JournalError

if TYPE_CHECKING:
    from .base import Journal

log = logging.getLogger(__name__)


class GroupCommitter:
    """At most one fsync in flight, in a dedicated worker thread; everything appended while one
    runs is covered by the next. ``on_durable(lsn)`` is called on the event-loop thread after each
    sync that advanced ``durable_lsn`` (strictly increasing). ``max_delay`` bounds how long an
    append waits before a sync starts (0: as soon as the committer is idle); a small delay trades
    latency for bigger batches. ``on_fsync(seconds, records_in_batch)`` observes every completed
    sync (for the fsync-latency histogram and batch-size metrics)."""

    def __init__(self, journal: Journal, loop: asyncio.AbstractEventLoop,
                 on_durable: Callable[[int], None], *,
                 on_error: Callable[[Exception], None] | None = None, max_delay: float = 0.0,
                 on_fsync: Callable[[float, int], None] | None = None,
                 retry_initial: float = 0.01, retry_max: float = 1.0,
                 stop_timeout: float = 10.0) -> None:
        self._journal = journal
        self._loop = loop
        self._on_durable = on_durable
        self._on_error = on_error or self._log_error
        self._on_fsync = on_fsync
        self._max_delay = max_delay
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._stop_timeout = stop_timeout
        self._wake = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[int]]] = []
        self._notified = journal.durable_lsn
        self.syncs = 0
        self.errors = 0

    @staticmethod
    def _log_error(exc: Exception) -> None:
        log.error("journal commit failed, retrying: %s", exc)

    def notify(self) -> None:
        """Call after a batch of appends: cheap and idempotent (sets an Event)."""
        self._wake.set()

    async def run(self) -> None:
        """The committer task (owned by the gateway's TaskGroup); cancel it to stop. A sync in
        flight at cancellation is allowed to finish (bounded by ``stop_timeout``) so that the
        journal is never closed under it."""
        ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dcgw-journal-sync")
        delay = self._retry_initial
        try:
            while True:
                await self._wake.wait()
                if self._max_delay > 0:
                    await asyncio.sleep(self._max_delay)
                self._wake.clear()
                try:
                    await self._commit_once(ex)
                except JournalError as e:
                    self.errors += 1
                    self._on_error(e)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._retry_max)
                    self._wake.set()
                    continue
                delay = self._retry_initial
        finally:
            self._fail_waiters()
            ex.shutdown(wait=True)

    async def _commit_once(self, ex: ThreadPoolExecutor) -> None:
        j = self._journal
        j.flush_writes()
        before = j.durable_lsn
        if j.written_lsn > before:
            lsn, seconds = await self._in_worker(ex, self._timed_sync)
            self.syncs += 1
            if self._on_fsync is not None:
                self._on_fsync(seconds, lsn - before)
        durable = j.durable_lsn     # also advanced by a segment roll or an owner-thread sync
        if durable > self._notified:
            self._notified = durable
            self._on_durable(durable)
        self._release(durable)
        if j.checkpoint_due:
            await self._in_worker(ex, j.checkpoint)

    def _timed_sync(self) -> tuple[int, float]:
        t0 = time.perf_counter()
        lsn = self._journal.sync()
        return lsn, time.perf_counter() - t0

    async def _in_worker(self, ex: ThreadPoolExecutor, fn: Callable[[], Any]) -> Any:
        fut = self._loop.run_in_executor(ex, fn)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            await asyncio.wait([fut], timeout=self._stop_timeout)
            if fut.done() and not fut.cancelled():
                fut.exception()         # retrieved: the outcome no longer matters, we are stopping
            raise

    async def flush(self, timeout: float | None = None) -> int:
        """Wait until everything appended so far is durable (and ``on_durable`` has been called
        for it); returns the durable LSN. Needs :meth:`run` to be running; ``timeout`` in seconds
        (TimeoutError)."""
        target = self._journal.appended_lsn
        if self._notified >= target:
            return self._notified
        fut: asyncio.Future[int] = self._loop.create_future()
        self._waiters.append((target, fut))
        self.notify()
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            if not fut.done():
                fut.cancel()

    def _release(self, durable: int) -> None:
        if not self._waiters:
            return
        keep = []
        for target, fut in self._waiters:
            if fut.done():
                continue
            if target <= durable:
                fut.set_result(durable)
            else:
                keep.append((target, fut))
        self._waiters = keep

    def _fail_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for _, fut in waiters:
            if not fut.done():
                fut.set_exception(JournalError("journal group committer stopped before the "
                                               "appended records were durable"))
