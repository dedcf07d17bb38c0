"""Group commit: the journal's appends reach the OS once per loop turn and the disk once per
batch, off the event loop, at a cost per commit that does not depend on the batch (an fsync is
about 200 µs; one per message would cap the gateway at a few thousand messages/s).

Two durability modes (``gateway.journal_durability``; README "Durability modes"):

``fsync``
    A copy leaves once its record is fdatasync'd: survives a power loss. One fdatasync in
    flight at a time, covering everything written before it started.
``os``
    A copy leaves once its record is written to the OS (the page cache outlives the process:
    any crash of the gateway, kill -9 included, loses nothing; a kernel crash or a power loss
    may lose the last records, as with a FIX engine's file store that flushes but never syncs).
    The fdatasync follows in the background, one every ``fsync_interval`` seconds (started an
    interval after the previous one started, at once if that one took longer): not one after
    the other while records keep coming, which would cost the disk and the CPU for nothing
    that a copy waits for. A commit that finds :data:`OS_SYNC_RECORDS` records or
    :data:`OS_SYNC_BYTES` bytes not synced wakes the thread at once (a long interval under a
    heavy stream), so that the backlog never nears the fan-out's hold nor the journal's limit.

Shape, chosen for a small fixed cost per commit (no Future, Task, executor work item or Event
per batch):

* The fan-out appends a batch (one socket read's worth) and the shell calls :meth:`commit_now`
  right after it, so the copies of that read need no further loop turn; anything else that
  appends calls :meth:`notify`, which schedules one commit on the loop (``call_soon``,
  idempotent until it runs).
* :meth:`_commit` writes the buffered records to the OS on the loop thread
  (:meth:`Journal.flush_writes`). In ``os`` mode that is the durability point: ``on_durable`` is
  called right there. In ``fsync`` mode it wakes the sync thread: a ``threading.Lock`` used as a
  binary semaphore (one ``release()``, no Python-level condition variable).
* One dedicated thread, ``dcgw-journal-sync``, loops: wait for the wake (bounded by
  ``fsync_interval`` in ``os`` mode, so the background sync needs no wake but for a large
  backlog), fdatasync while something written is not synced (in ``os`` mode once per wait;
  :meth:`Journal.sync_to_disk`; the GIL is released for the syscall), then hand the outcome
  to the loop with one ``call_soon_threadsafe`` that is not repeated while one is pending.
  Checkpoints (index fsyncs) run in that thread between syncs, and so do segment rolls
  (:meth:`Journal.roll`, begun by an append on the loop, which then buffers until the thread
  says the next segment exists: the loop never waits for them).
* The early wake-up (``fsync`` mode): waking a sleeping thread costs tens of µs on a virtual
  machine (the hypervisor wakes an idle virtual CPU), and a copy pays it on top of the
  fdatasync. So a source's read wakes an idle sync thread (everything written is on the disk)
  as it begins (:meth:`expect_append`, called by the shell before the session parses the
  read), and the wake-up overlaps the read's own work (parse, validate, route, append, write to
  the OS). The thread needs the GIL to look at the journal, so it usually runs once the loop
  lets go of it after the write, and its fdatasync covers the read. If it looks sooner it finds
  nothing to sync and waits again; ``_wake_pending`` is then clear, and the read's commit wakes
  it as it would have anyway. A busy thread (a sync in flight), a checkpoint due and delayed
  commits (``max_delay``) are left to the commit.
* On the loop, :meth:`_drain` calls ``on_durable(lsn)`` (strictly increasing), then feeds the
  metrics (``on_fsync`` per fdatasync) and logs a slow fsync. In ``fsync`` mode, each time
  ``on_durable`` is called, ``on_wait`` gets how long each commit it covers waited between the
  write of its records to the OS and the loop learning they are durable: the fdatasync that
  covered them, any fdatasync already in flight when they were written, and the two hand-offs
  (what the disk costs the copies of one source read).

A slow or stalled disk (docs/architecture.md, "Durability and recovery"): in ``fsync`` mode copies
wait for it, as the mode requires; in ``os`` mode they do not. Either way it is visible: an fsync
running longer than ``slow_sync`` seconds is logged while it runs and when it ends, the
histogram gets its duration, and :attr:`sync_running_seconds` feeds a gauge the alerts watch.
Memory stays bounded: the fan-out stops reading sources when too many records are not durable
(``fsync``) or not synced (``os``), see :mod:`dcgateway.fanout.router`.

Failures (disk full, EIO) go to ``on_error`` and are retried with exponential backoff; nothing is
reported durable until a write (``os``) or a sync (``fsync``) has really succeeded (after a failed
fsync the journal rewrites what it had written, see :meth:`SegmentJournal.sync_to_disk`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Callable

from ..errors import JournalError

if TYPE_CHECKING:
    from .base import Journal

log = logging.getLogger(__name__)

#: An fsync running longer than this (seconds) is logged as slow.
SLOW_SYNC_S = 0.5
#: How often the loop looks at a sync in flight (seconds).
WATCH_S = 0.25
#: In ``fsync`` mode the sync thread waits this long for a wake before looking again (bounded
#: wait; nothing is missed by it: every write wakes it).
IDLE_WAIT_S = 1.0
#: Commits stopped this long: the journal's deferred upkeep (index runs) is done now.
IDLE_UPKEEP_S = 1.0
#: Slow-fsync warnings at most this often (seconds); the others are counted into the next one.
WARN_EVERY_S = 10.0
#: ``os`` mode: the background fdatasync starts at once, without waiting for its interval, when
#: this many records or bytes are written and not synced (a long ``fsync_interval`` under a
#: heavy stream): well below where the fan-out holds the sources for the sync (100,000 records)
#: and the journal refuses records (``max_unsynced_bytes``, 64 MiB by default).
OS_SYNC_RECORDS = 10_000
OS_SYNC_BYTES = 8 << 20
#: Commits whose wait for durability is timed apart (``on_wait``); past it (a stalled disk
#: under a flood) later commits are counted into the last one kept and timed from it, which
#: overstates their wait but loses none.
MAX_TIMED_COMMITS = 1024


class GroupCommitter:
    """Commits the journal's appends (module docstring). ``on_durable(lsn)`` is called on the
    event-loop thread whenever :attr:`Journal.durable_lsn` advanced (strictly increasing);
    ``on_fsync(seconds, records)`` observes every completed fsync; ``on_error(exc)`` every
    failed write or sync; ``on_wait(seconds, commits)``, in ``fsync`` mode, the wait for
    durability of that many commits (module docstring). ``max_delay`` bounds how long an append
    waits before its commit starts (0: at the end of the loop turn); a small delay trades
    latency for bigger batches. ``fsync_interval``: the bound on the background fsync in ``os``
    mode."""

    def __init__(self, journal: Journal, loop: asyncio.AbstractEventLoop,
                 on_durable: Callable[[int], None], *,
                 on_error: Callable[[Exception], None] | None = None, max_delay: float = 0.0,
                 on_fsync: Callable[[float, int], None] | None = None,
                 on_wait: Callable[[float, int], None] | None = None,
                 fsync_interval: float = 0.05, slow_sync: float = SLOW_SYNC_S,
                 retry_initial: float = 0.01, retry_max: float = 1.0,
                 stop_timeout: float = 10.0) -> None:
        self._journal = journal
        self._loop = loop
        self._on_durable = on_durable
        self._on_error = on_error or self._log_error
        self._on_fsync = on_fsync
        self._on_wait = on_wait
        self._max_delay = max_delay
        self._os_mode = journal.durability == "os"
        self._early = not self._os_mode and max_delay <= 0     # expect_append wakes the thread
        self._interval = fsync_interval if self._os_mode else IDLE_WAIT_S
        self._slow_sync = slow_sync
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._stop_timeout = stop_timeout
        self._waiters: list[tuple[int, asyncio.Future[int]]] = []
        self._notified = journal.durable_lsn
        self._synced_seen = journal.synced_lsn
        # loop side
        self._scheduled = False               # a _commit is on the loop
        self._last_commit = 0.0               # monotonic time of the last commit
        self._idle_scheduled = False          # an idle upkeep is on the loop
        self._write_delay = retry_initial
        self._stopping = False
        self._warned_at = float("-inf")
        self._slow_unlogged = 0
        self._warned_for = 0.0                # the start of the running sync already warned of
        # (written lsn, perf_counter, commits) per commit not yet known durable (on_wait)
        self._timed: deque[tuple[int, float, int]] = deque()
        # the hand-offs (each field written by one side only; the GIL makes each access atomic)
        self._wake = threading.Lock()
        self._wake.acquire()                  # held: no wake pending
        self._wake_pending = False            # set by the loop, cleared by the thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._results: list[tuple[float, int]] = []   # (seconds, records), thread -> loop
        self._failures: list[Exception] = []           # thread -> loop
        self._rolled = False                           # thread -> loop: write what waited
        self._roll_times: list[tuple[float, int]] = []  # thread -> loop, as _results
        self._rolling = False                          # the sync in flight is a roll
        self._posted = False
        self._sync_started = 0.0              # perf_counter at the start of the sync in flight
        self.syncs = 0
        self.errors = 0
        #: times the sync thread was woken (not its timeouts): written by the thread only
        self.wakes = 0

    @staticmethod
    def _log_error(exc: Exception) -> None:
        log.error("journal commit failed, retrying: %s", exc)

    @property
    def sync_running_seconds(self) -> float:
        """How long the fsync in flight has been running (0 when none): a stalled disk shows
        here long before the fsync completes into the histogram."""
        started = self._sync_started
        return time.perf_counter() - started if started else 0.0

    def sync_state(self) -> tuple[float, int]:
        """(:attr:`sync_running_seconds`, records not on the disk yet): for the gauges."""
        j = self._journal
        return self.sync_running_seconds, j.appended_lsn - j.synced_lsn

    # -- loop thread --------------------------------------------------------------------------

    def notify(self) -> None:
        """Call after a batch of appends: cheap and idempotent until the commit runs."""
        if self._scheduled or self._stopping:
            return
        self._scheduled = True
        if self._max_delay > 0:
            self._loop.call_later(self._max_delay, self._scheduled_commit)
        else:
            self._loop.call_soon(self._scheduled_commit)

    def commit_now(self) -> None:
        """Commit at once (the shell calls it at the end of a source's read: the copies of that
        read need no further loop turn); with ``max_delay`` or a write retry pending, the
        same as :meth:`notify`."""
        if self._max_delay > 0 or self._scheduled:
            self.notify()
        elif not self._stopping:
            self._commit()

    @property
    def wakes_early(self) -> bool:
        """Whether :meth:`expect_append` can wake the sync thread (``fsync`` mode, commits not
        delayed): the shell calls it on a source's reads only then."""
        return self._early

    def expect_append(self) -> None:
        """A source's read is about to be processed (loop thread; the shell calls it before
        the session parses the read): in ``fsync`` mode wake the sync thread now, not at the
        read's commit (module docstring). Only when the thread is idle: everything written on
        the disk (at a high rate it is busy syncing, and the commit wakes it as before; woken
        sooner, it would cover less each time), no checkpoint due (it would run it before the
        read's fdatasync), and commits not delayed (``max_delay``: the wake would come too soon
        every time)."""
        if self._early and not self._wake_pending and not self._stopping:
            j = self._journal
            if j.written_lsn == j.synced_lsn and not j.checkpoint_due:
                self._wake_pending = True
                self._wake.release()

    def _scheduled_commit(self) -> None:
        self._scheduled = False
        if not self._stopping:
            self._commit()

    def _commit(self) -> None:
        j = self._journal
        try:
            j.flush_writes(upkeep=False)
        except JournalError as exc:
            self._write_failed(exc)
            return
        self._write_delay = self._retry_initial
        to_sync = not self._os_mode and j.written_lsn > j.synced_lsn
        if to_sync and self._on_wait is not None:
            self._time_commit(j.written_lsn)
        if not self._wake_pending and (to_sync or j.roll_due or self._os_mode and (
                j.written_lsn - j.synced_lsn >= OS_SYNC_RECORDS         # os: a large backlog
                or j.unsynced_bytes >= OS_SYNC_BYTES)):                 # is synced at once
            self._wake_pending = True
            self._wake.release()
        if not to_sync:
            self._publish()
        try:
            j.upkeep()                  # zeros ahead, index runs, snapshot: after the copies
        except JournalError as exc:
            self.errors += 1
            self._on_error(exc)
        self._last_commit = time.monotonic()
        if not self._idle_scheduled:
            self._idle_scheduled = True
            self._loop.call_later(IDLE_UPKEEP_S, self._idle_upkeep)

    def _time_commit(self, lsn: int) -> None:
        """Remember when the records up to ``lsn`` reached the OS (``on_wait``)."""
        timed = self._timed
        if not timed or lsn > timed[-1][0]:
            if len(timed) < MAX_TIMED_COMMITS:
                timed.append((lsn, time.perf_counter(), 1))
            else:
                _, since, commits = timed[-1]
                timed[-1] = (lsn, since, commits + 1)

    def _observe_waits(self, durable: int, now: float) -> None:
        """``on_wait`` for the timed commits up to ``durable``, which ``on_durable`` has just
        been called for, at ``now`` (perf_counter, read before that call)."""
        timed, on_wait = self._timed, self._on_wait
        if on_wait is None:
            return
        while timed and timed[0][0] <= durable:
            _, since, commits = timed.popleft()
            on_wait(now - since, commits)

    def _idle_upkeep(self) -> None:
        """Once commits stopped for ``IDLE_UPKEEP_S``: the journal's deferred upkeep (index
        runs) now, so readers beside the gateway (``dcgateway replay``) see the last records."""
        self._idle_scheduled = False
        if self._stopping:
            return
        quiet = time.monotonic() - self._last_commit
        if quiet < IDLE_UPKEEP_S:
            self._idle_scheduled = True
            self._loop.call_later(IDLE_UPKEEP_S - quiet, self._idle_upkeep)
            return
        try:
            self._journal.upkeep(idle=True)
        except JournalError as exc:
            self.errors += 1
            self._on_error(exc)

    def _write_failed(self, exc: JournalError) -> None:
        self.errors += 1
        self._on_error(exc)
        delay = self._write_delay
        self._write_delay = min(delay * 2, self._retry_max)
        self._scheduled = True
        self._loop.call_later(delay, self._scheduled_commit)

    def _publish(self, synced: bool = False) -> None:
        """``on_durable`` if the durable LSN advanced (or, with ``synced``, if only the synced
        one did: in ``os`` mode the fan-out resumes sources held for the sync on it)."""
        j = self._journal
        durable = j.durable_lsn
        if durable > self._notified or synced:
            timed = self._timed
            now = time.perf_counter() if timed and timed[0][0] <= durable else 0.0
            self._notified = max(self._notified, durable)
            self._on_durable(self._notified)
            if now:
                self._observe_waits(durable, now)
        if self._waiters:
            self._release(durable)

    def _drain(self) -> None:
        """What the sync thread reported (loop thread)."""
        self._posted = False
        results, self._results = self._results, []
        failures, self._failures = self._failures, []
        rolled, self._rolled = self._rolled, False
        roll_times, self._roll_times = self._roll_times, []
        if self._stopping:
            return
        if rolled:                  # the next segment exists: the appends that waited go now
            self.notify()
        synced = self._journal.synced_lsn
        advanced = synced > self._synced_seen
        self._synced_seen = synced
        self._publish(synced=advanced and self._os_mode)     # the copies first, then the rest
        for exc in failures:
            self.errors += 1
            self._on_error(exc)
        on_fsync = self._on_fsync
        for seconds, records in results:
            self.syncs += 1
            if on_fsync is not None:
                on_fsync(seconds, records)
            if seconds >= self._slow_sync:
                self._slow(f"a journal fsync took {seconds:.3f} s")
        for seconds, records in roll_times:     # (its fsyncs, timed as one)
            self.syncs += 1
            if on_fsync is not None:
                on_fsync(seconds, records)
            if seconds >= self._slow_sync:
                self._slow(f"a journal segment roll took {seconds:.3f} s", roll=True)

    def _slow(self, what: str, roll: bool = False) -> None:
        now = time.monotonic()
        if now - self._warned_at < WARN_EVERY_S:
            self._slow_unlogged += 1
            return
        more = f" ({self._slow_unlogged} more since the last report)" if self._slow_unlogged \
            else ""
        self._warned_at, self._slow_unlogged = now, 0
        wait = ("copies wait for it (journal_durability: fsync)" if not self._os_mode else
                "copies do not wait for it (journal_durability: os)")
        if roll:                # (sealing the full segment and creating the next: in both modes)
            wait = "the copies of the records appended meanwhile wait for it"
        log.warning("%s: the disk is slow or stalled; %s%s", what, wait, more)

    def _watch(self) -> None:
        started = self._sync_started
        if started and started != self._warned_for:
            running = time.perf_counter() - started
            if running >= self._slow_sync:
                self._warned_for = started
                what = "a journal segment roll" if self._rolling else "a journal fsync"
                self._slow(f"{what} has been running for {running:.1f} s", roll=self._rolling)

    async def run(self) -> None:
        """The committer's task (owned by the gateway's TaskGroup): starts the sync thread and
        watches it; cancel it to stop. A sync in flight at cancellation is allowed to finish
        (bounded by ``stop_timeout``) so that the journal is never closed under it."""
        self._stop.clear()
        self._stopping = False
        thread = threading.Thread(target=self._work, name="dcgw-journal-sync", daemon=True)
        self._thread = thread
        self._journal.hand_rolls_to(True)
        thread.start()
        if self._journal.appended_lsn > self._notified:
            self.notify()
        try:
            while True:
                await asyncio.sleep(WATCH_S)
                self._watch()
        finally:
            self._stopping = True
            self._stop.set()
            if not self._wake_pending:
                self._wake_pending = True
                self._wake.release()
            deadline = time.monotonic() + self._stop_timeout
            while thread.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            if thread.is_alive():
                log.error("journal sync thread did not stop within %gs", self._stop_timeout)
            else:
                self._journal.hand_rolls_to(False)     # (a roll still due: the close does it)
            self._fail_waiters()

    # -- the sync thread ----------------------------------------------------------------------

    def _work(self) -> None:
        j, stop, wake = self._journal, self._stop, self._wake
        os_mode, interval = self._os_mode, self._interval
        delay = self._retry_initial
        wait = interval
        while not stop.is_set():
            if wake.acquire(timeout=max(wait, 0.0)):
                self._wake_pending = False
                self.wakes += 1
            wait = interval
            started = 0.0                   # os mode: when this turn's fdatasync started
            if j.roll_due and not stop.is_set():
                if not self._roll(j):
                    if stop.wait(delay):
                        return
                    delay = min(delay * 2, self._retry_max)
                    continue
                delay = self._retry_initial
            while not stop.is_set() and j.written_lsn > j.synced_lsn:
                before = j.synced_lsn
                self._sync_started = t0 = time.perf_counter()
                try:
                    lsn = j.sync_to_disk()
                except JournalError as exc:
                    self._sync_started = 0.0
                    self._post(None, exc)
                    if stop.wait(delay):
                        return
                    delay = min(delay * 2, self._retry_max)
                    continue
                seconds = time.perf_counter() - t0
                self._sync_started = 0.0
                delay = self._retry_initial
                self._post((seconds, lsn - before), None)
                if os_mode:
                    # one fdatasync per interval, not one after the other while records keep
                    # coming (module docstring)
                    started = t0
                    break
            if j.checkpoint_due and not stop.is_set():
                try:
                    j.checkpoint()
                except JournalError as exc:
                    self._post(None, exc)
            if started:
                # the next an interval after this one started (at once if it, and the checkpoint
                # after it, took longer), unless a wake comes first
                wait = interval - (time.perf_counter() - started)

    def _roll(self, j: Journal) -> bool:
        """Sync thread: the roll the owner began (:meth:`Journal.roll`), timed like a sync (the
        gauge and the slow warnings see a stalled disk here too; the histogram gets its
        duration). False when it failed (reported; retried after a backoff)."""
        before = j.synced_lsn
        self._rolling = True
        self._sync_started = t0 = time.perf_counter()
        try:
            rolled = j.roll()
        except JournalError as exc:
            self._post(None, exc)
            return False
        finally:
            self._sync_started = 0.0
            self._rolling = False
        if rolled:
            self._rolled = True
            self._roll_times.append((time.perf_counter() - t0, j.synced_lsn - before))
            self._post(None, None)
        return True

    def _post(self, result: tuple[float, int] | None, failure: Exception | None) -> None:
        """Sync thread -> loop: queue the outcome, and wake the loop once for all of them."""
        if result is not None:
            self._results.append(result)
        if failure is not None:
            self._failures.append(failure)
        if not self._posted:
            self._posted = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:          # the loop is closed: the gateway is gone
                pass

    # -- waiting for durability ---------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> int:
        """Wait until everything appended so far is durable (and ``on_durable`` has been called
        for it); returns the durable LSN. Needs :meth:`run` to be running in ``fsync`` mode;
        ``timeout`` in seconds (TimeoutError)."""
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
