"""The sessions' own files made durable off the event loop (``journal_durability: fsync``).

Every ``SESSION_SYNC_S`` the files written since the last round are fdatasync'd, one after the
other, in a worker thread; the loop only takes a duplicate of each file's descriptor before and
records what was covered after (:meth:`~dcgateway.state.session_files.FileSessionStore.begin_sync`,
:meth:`~dcgateway.state.session_files.FileSessionStore.end_sync`). A slow or stalled disk then
delays this task, never a session: the session file module explains why the messages need not
wait for their records (a bounded number of records unsynced, and a sequence margin after a
power loss). A round never overlaps the previous one, so a stalled disk holds one thread.

A target's "delivered" marker (its Logon and its disconnect) asks for a round at once
(:meth:`SessionFileSync.wake`): the target's copies wait for it, and ``after_round`` lets them go.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence

from ..state.session_files import FileSessionStore, SyncTicket

#: How often the session files written meanwhile are fdatasync'd (seconds).
SESSION_SYNC_S = 0.2


def _fdatasync_all(tickets: list[SyncTicket]) -> list[tuple[OSError | None, float]]:
    """In the worker thread: fdatasync and close each ticket's descriptor."""
    done: list[tuple[OSError | None, float]] = []
    for fd, _, _ in tickets:
        t0 = time.monotonic()
        error: OSError | None = None
        try:
            os.fdatasync(fd)
        except OSError as e:
            error = e
        finally:
            os.close(fd)
        done.append((error, time.monotonic() - t0))
    return done


class SessionFileSync:
    """The background fdatasync of ``files`` (module docstring)."""

    def __init__(self, files: Sequence[FileSessionStore], interval: float = SESSION_SYNC_S,
                 on_round: Callable[[float], None] | None = None,
                 after_round: Callable[[], None] | None = None) -> None:
        self.files = list(files)
        self.interval = interval
        self.on_round = on_round             # (seconds) of each round that synced something
        self.after_round = after_round       # () after each such round, its results recorded
        self.rounds = 0
        self._wake = asyncio.Event()
        for f in self.files:
            f.sync_soon = self.wake

    def wake(self) -> None:
        """Start the next round now rather than at the next interval (after the one under
        way, if any)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            if not self._wake.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                except asyncio.TimeoutError:
                    pass
            self._wake.clear()
            await self.sync_once()

    async def sync_once(self) -> None:
        """One round: every file written since the last one, fdatasync'd in a worker; the files
        whose "delivered" marker a target's copies wait for go first, in a pass of their own,
        so those copies wait for their own file's fdatasync, not for every session's."""
        waiting = [f for f in self.files if not f.marker_synced and not f.sync_failed]
        if waiting:
            await self._pass(waiting)
        await self._pass(self.files)

    async def _pass(self, files: Sequence[FileSessionStore]) -> None:
        work = [(f, t) for f in files if (t := f.begin_sync()) is not None]
        if not work:
            return
        try:
            results = await asyncio.to_thread(_fdatasync_all, [t for _, t in work])
        except BaseException:
            for f, _ in work:                # cancelled (stopping): the close syncs them
                f.abandon_sync()
            raise
        for (f, t), (error, seconds) in zip(work, results, strict=True):
            f.end_sync(t, error, seconds)
        self.rounds += 1
        if self.on_round is not None:
            self.on_round(sum(seconds for _, seconds in results))
        if self.after_round is not None:
            self.after_round()
