"""GroupCommitter: group commit (few fsyncs for many appends), ordering and thread of on_durable,
flush(), fsync/write failures surfaced and retried, checkpoints, clean cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import threading
import time
from collections.abc import AsyncIterator

import pytest

from dcgateway.errors import JournalError
from dcgateway.journal import GroupCommitter, SegmentJournal
from dcgateway.journal import commit as commit_mod
from dcgateway.journal.format import read_checkpoint

from .test_segment import Faults, crash, msg, open_journal, reopen, seqs

pytestmark = pytest.mark.asyncio


async def wait_for(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


def sync_thread_alive() -> bool:
    return any(t.name == "dcgw-journal-sync" for t in threading.enumerate())


@contextlib.asynccontextmanager
async def running(gc: GroupCommitter, *stuck: threading.Event) -> AsyncIterator[None]:
    """``gc.run()`` for the body of the ``async with``, cancelled at its end; each event in
    ``stuck`` (what holds a test's stalled "disk") is set on the way out whatever happens."""
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(gc.run())
            yield
            task.cancel()
    finally:
        for event in stuck:
            event.set()


class Feed:
    """Appends source messages in batches, one target per message, like the fan-out does."""

    def __init__(self, j: SegmentJournal) -> None:
        self.j = j
        self.i = 0

    def batch(self, n: int) -> int:
        lsn = 0
        for _ in range(n):
            self.i += 1
            lsn = self.j.append("S", self.i, 1.0, msg(self.i), [("T", self.i)])
        return lsn


async def test_many_appends_few_fsyncs(tmp_path):
    """What is committed while an fsync is in flight is covered by the next one, whatever the
    machine's speed: the first fsync is held until 199 more batches were committed."""
    stall = Stall()
    j = open_journal(tmp_path / "j", write_hook=stall)
    loop = asyncio.get_running_loop()
    durables: list[int] = []
    fsyncs: list[tuple[float, int]] = []
    threads: set[int] = set()

    def on_durable(lsn: int) -> None:
        threads.add(threading.get_ident())
        durables.append(lsn)

    gc = GroupCommitter(j, loop, on_durable, on_fsync=lambda s, n: fsyncs.append((s, n)))
    start = j.durable_lsn
    feed = Feed(j)
    async with running(gc, stall.release):
        for i in range(200):
            feed.batch(20)
            gc.notify()
            await asyncio.sleep(0)
            if i == 0:
                await wait_for(stall.entered.is_set)     # the first fsync is in flight
        stall.release.set()
        assert await gc.flush(timeout=10) == j.appended_lsn
    assert durables == sorted(set(durables)) and durables[-1] == j.appended_lsn
    assert threads == {threading.get_ident()}                 # on the event-loop thread
    assert [n for _, n in fsyncs] == [20, 199 * 20]          # 200 batches, two fsyncs
    assert sum(n for _, n in fsyncs) == j.appended_lsn - start
    assert all(s > 0 for s, _ in fsyncs) and gc.syncs == len(fsyncs)
    assert seqs(j.read_target("T", 1, 5000)) == list(range(1, 4001))
    j.close()


async def test_max_delay_gathers_batches(tmp_path):
    j = open_journal(tmp_path / "j")
    fsyncs: list[int] = []
    gc = GroupCommitter(j, asyncio.get_running_loop(), lambda lsn: None, max_delay=0.05,
                        on_fsync=lambda s, n: fsyncs.append(n))
    feed = Feed(j)
    async with running(gc):
        for _ in range(10):
            feed.batch(5)
            gc.notify()
            await asyncio.sleep(0)
        await gc.flush(timeout=5)
    assert sum(fsyncs) == 50 and len(fsyncs) <= 3      # 10 batches
    j.close()


async def test_flush_returns_at_once_when_nothing_is_pending(tmp_path):
    j = open_journal(tmp_path / "j")
    gc = GroupCommitter(j, asyncio.get_running_loop(), lambda lsn: None)
    assert await gc.flush(timeout=0.1) == j.durable_lsn     # no run() needed
    j.append("S", 1, 1.0, msg(1), [("T", 1)])
    with pytest.raises(TimeoutError):
        await gc.flush(timeout=0.05)                          # nothing commits without run()
    j.close()


async def test_fsync_error_is_reported_and_retried(tmp_path):
    faults = Faults()
    j = open_journal(tmp_path / "j", write_hook=faults)
    errors: list[Exception] = []
    durables: list[int] = []
    gc = GroupCommitter(j, asyncio.get_running_loop(), durables.append, on_error=errors.append,
                        retry_initial=0.002, retry_max=0.01)
    Feed(j).batch(10)
    faults.fail["fsync"] = errno.EIO
    async with running(gc):
        gc.notify()
        await wait_for(lambda: len(errors) >= 3)
        assert durables == [] and j.read_target("T", 1, 10) == []
        assert all(isinstance(e, JournalError) and "Input/output error" in str(e) for e in errors)
        del faults.fail["fsync"]
        assert await gc.flush(timeout=5) == j.appended_lsn
    assert durables == [j.appended_lsn] and gc.errors == len(errors)
    assert seqs(j.read_target("T", 1, 10)) == list(range(1, 11))
    j.close()


async def test_write_error_is_reported_and_retried(tmp_path):
    faults = Faults()
    j = open_journal(tmp_path / "j", write_hook=faults)
    errors: list[Exception] = []
    gc = GroupCommitter(j, asyncio.get_running_loop(), lambda lsn: None, on_error=errors.append,
                        retry_initial=0.002, retry_max=0.01)
    faults.fail["write"] = errno.ENOSPC
    feed = Feed(j)
    async with running(gc):
        feed.batch(10)
        gc.notify()
        await wait_for(lambda: len(errors) >= 2)
        feed.batch(10)                         # appends keep being accepted meanwhile
        assert "No space left" in str(errors[0])
        del faults.fail["write"]
        await gc.flush(timeout=5)
    j.close()
    j, rec = reopen(tmp_path / "j")
    assert rec.torn_bytes == 0 and seqs(j.read_target("T", 1, 100)) == list(range(1, 21))
    j.close()


async def test_committer_writes_checkpoints(tmp_path):
    j = open_journal(tmp_path / "j", checkpoint_records=100)
    gc = GroupCommitter(j, asyncio.get_running_loop(), lambda lsn: None)
    feed = Feed(j)
    async with running(gc):
        for _ in range(50):
            feed.batch(20)
            gc.notify()
            await asyncio.sleep(0)
        await gc.flush(timeout=5)
        await wait_for(lambda: not j.checkpoint_due)
    ck = read_checkpoint(tmp_path / "j" / "index" / "checkpoint")
    assert ck is not None and ck.lsn >= 900 and ck.targets["T"] == ck.lsn   # lsn 1: snapshot
    crash(j)
    j, rec = reopen(tmp_path / "j")
    assert rec.records == 1001 - ck.lsn and rec.target_next_seq == {"T": 1001}
    j.close()


async def test_on_durable_follows_a_segment_roll(tmp_path):
    """A roll fsyncs the old segment itself; the committer still reports the LSN it reached."""
    j = open_journal(tmp_path / "j", segment_bytes=4096)
    durables: list[int] = []
    gc = GroupCommitter(j, asyncio.get_running_loop(), durables.append)
    async with running(gc):
        Feed(j).batch(100)                     # several rolls inside append
        gc.notify()
        assert await gc.flush(timeout=5) == j.appended_lsn
    assert durables[-1] == j.appended_lsn and durables == sorted(set(durables))
    j.close()


async def test_cancel_waits_for_the_sync_in_flight(tmp_path):
    started = threading.Event()

    def slow_fsync(op: str) -> None:
        if op == "fsync" and threading.current_thread().name.startswith("dcgw-journal-sync"):
            started.set()
            time.sleep(0.2)

    j = open_journal(tmp_path / "j", write_hook=slow_fsync)
    gc = GroupCommitter(j, asyncio.get_running_loop(), lambda lsn: None)
    Feed(j).batch(3)
    task = asyncio.create_task(gc.run())
    gc.notify()
    waiter = asyncio.create_task(gc.flush())
    await wait_for(started.is_set)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert j.durable_lsn == j.appended_lsn        # the fsync finished before run() returned
    with pytest.raises(JournalError, match="committer stopped"):
        await waiter                              # its waiter never got its on_durable
    assert not [t for t in threading.enumerate() if t.name.startswith("dcgw-journal-sync")]
    j.close()


# -- durability modes and a slow disk ------------------------------------------------------------

class Stall:
    """write_hook that holds every fsync of the sync thread until ``release`` is set (a disk
    that stops answering); the test releases it before it ends, so no wait is unbounded."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self, op: str) -> None:
        if op == "fsync" and threading.current_thread().name.startswith("dcgw-journal-sync"):
            self.entered.set()
            self.release.wait(10)


async def test_os_mode_copies_leave_once_written_and_the_fsync_follows(tmp_path):
    j = open_journal(tmp_path / "j", durability="os")
    durables: list[int] = []
    fsyncs: list[int] = []
    waits: list[tuple[float, int]] = []
    gc = GroupCommitter(j, asyncio.get_running_loop(), durables.append, fsync_interval=0.01,
                        on_fsync=lambda s, n: fsyncs.append(n),
                        on_wait=lambda s, n: waits.append((s, n)))
    feed = Feed(j)
    async with running(gc):
        lsn = feed.batch(10)
        gc.notify()
        await wait_for(lambda: durables and durables[-1] == lsn)
        assert j.written_lsn == lsn
        await wait_for(lambda: j.synced_lsn == lsn)      # the background fsync, unasked
        await wait_for(lambda: sum(fsyncs) >= 10)
    assert waits == []                                  # no copy waited for the disk
    assert seqs(j.read_target("T", 1, 10)) == list(range(1, 11))
    j.close()


async def test_os_mode_syncs_once_per_interval_under_a_steady_stream(tmp_path):
    """In ``os`` mode the background fdatasync runs once per ``fsync_interval``, not one after
    the other while records keep coming (each would cost the disk and the CPU, and no copy
    waits for it); what was written is still synced."""
    interval = 0.15
    starts: list[float] = []

    def hook(op: str) -> None:
        if op == "fsync" and threading.current_thread().name.startswith("dcgw-journal-sync"):
            starts.append(time.monotonic())
            time.sleep(0.005)   # a disk this slow sees records arrive during each fdatasync

    # (no checkpoint or roll in the test's time: their fsyncs would pass the hook too)
    j = open_journal(tmp_path / "j", durability="os", write_hook=hook,
                     checkpoint_records=1 << 30, checkpoint_seconds=3600.0)
    gc = GroupCommitter(j, asyncio.get_running_loop(), lambda lsn: None,
                        fsync_interval=interval)
    feed = Feed(j)
    async with running(gc):
        await wait_for(sync_thread_alive)
        deadline = time.monotonic() + 4 * interval
        while time.monotonic() < deadline:      # a record every millisecond or so
            lsn = feed.batch(1)
            gc.commit_now()
            await asyncio.sleep(0.001)
        await wait_for(lambda: j.synced_lsn == lsn)
    assert len(starts) >= 3
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= interval * 0.9, gaps
    j.close()


@pytest.mark.parametrize("limit", ["records", "bytes"])
async def test_os_mode_a_large_backlog_is_synced_without_waiting_for_the_interval(
        tmp_path, monkeypatch, limit):
    """With a long ``fsync_interval`` (up to 10 s) a heavy stream would pile up records not on
    the disk until the fan-out holds the sources or the journal refuses records: past
    OS_SYNC_RECORDS records or OS_SYNC_BYTES bytes not synced, a commit wakes the thread."""
    if limit == "records":
        monkeypatch.setattr(commit_mod, "OS_SYNC_RECORDS", 30)
    else:
        monkeypatch.setattr(commit_mod, "OS_SYNC_BYTES", 30 * len(msg(1)))
    j = open_journal(tmp_path / "j", durability="os")
    gc = GroupCommitter(j, asyncio.get_running_loop(), lambda lsn: None, fsync_interval=60.0)
    feed = Feed(j)
    async with running(gc):
        await wait_for(sync_thread_alive)
        first = feed.batch(20)
        gc.commit_now()
        await asyncio.sleep(0.2)
        assert j.synced_lsn < first                     # a small backlog waits its interval
        lsn = feed.batch(20)
        gc.commit_now()
        await wait_for(lambda: j.synced_lsn == lsn)     # a large one does not
        assert gc.wakes == 1                            # (woken by the commit)
    j.close()


async def test_os_mode_a_stalled_fsync_holds_no_copy(tmp_path, caplog):
    stall = Stall()
    j = open_journal(tmp_path / "j", durability="os", write_hook=stall)
    durables: list[int] = []
    gc = GroupCommitter(j, asyncio.get_running_loop(), durables.append, fsync_interval=0.01,
                        slow_sync=0.05)
    feed = Feed(j)
    async with running(gc, stall.release):
        feed.batch(5)
        gc.notify()
        await wait_for(stall.entered.is_set)          # the fsync is stuck in the "disk"
        for _ in range(20):
            lsn = feed.batch(5)
            gc.notify()
            await wait_for(lambda: durables and durables[-1] == lsn)
        assert j.synced_lsn < lsn == j.durable_lsn
        await wait_for(lambda: gc.sync_running_seconds > 0.05)
        await wait_for(lambda: "has been running for" in caplog.text)
        assert "copies do not wait for it" in caplog.text
        stall.release.set()
        await wait_for(lambda: j.synced_lsn == lsn)
        assert gc.sync_running_seconds == 0.0
    j.close()


async def test_fsync_mode_a_stalled_fsync_holds_copies_and_says_so(tmp_path, caplog):
    stall = Stall()
    j = open_journal(tmp_path / "j", write_hook=stall)
    durables: list[int] = []
    gc = GroupCommitter(j, asyncio.get_running_loop(), durables.append, slow_sync=0.05)
    feed = Feed(j)
    async with running(gc, stall.release):
        lsn = feed.batch(5)
        gc.notify()
        await wait_for(stall.entered.is_set)
        await wait_for(lambda: "has been running for" in caplog.text)
        assert "copies wait for it" in caplog.text
        assert durables == [] and j.written_lsn == lsn and j.durable_lsn < lsn
        assert gc.sync_running_seconds > 0.05
        stall.release.set()
        assert await gc.flush(timeout=10) == lsn
        await wait_for(lambda: "a journal fsync took" in caplog.text
                       or gc.syncs >= 1)
    assert durables[-1] == lsn
    j.close()


async def test_sync_thread_is_stopped_with_the_task(tmp_path):
    j = open_journal(tmp_path / "j", durability="os")
    gc = GroupCommitter(j, asyncio.get_running_loop(), lambda lsn: None)
    task = asyncio.create_task(gc.run())
    await wait_for(sync_thread_alive)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not [t for t in threading.enumerate() if t.name.startswith("dcgw-journal-sync")]
    j.close()


@pytest.mark.parametrize("durability", ["fsync", "os"])
async def test_once_commits_stop_the_index_is_written_for_readers_beside_the_gateway(
        tmp_path, monkeypatch, durability):
    """``dcgateway replay`` reads the index files of a running gateway without its lock: a few
    copies and then silence must not leave the last ones invisible to it (the index runs are
    batched while commits flow and written once they stop)."""
    from dcgateway.journal import commit as commit_module
    from dcgateway.journal.replay import last_seq, read_sent
    monkeypatch.setattr(commit_module, "IDLE_UPKEEP_S", 0.05)
    j = open_journal(tmp_path / "j", durability=durability)
    gc = GroupCommitter(j, asyncio.get_running_loop(), lambda lsn: None)
    feed = Feed(j)
    async with running(gc):
        feed.batch(5)
        gc.notify()
        await gc.flush(timeout=5)
        await wait_for(lambda: last_seq(tmp_path / "j", "T") == 5)
    assert [s.target_seq for s in read_sent(tmp_path / "j", "T", 1, 10)] == [1, 2, 3, 4, 5]
    j.close()


async def test_fsync_mode_times_each_commit_s_wait_for_the_disk(tmp_path):
    """on_wait: once per commit, from its write to the OS until the loop learns it is on the
    disk; a commit made while an fsync is stuck waits for that one and its own."""
    stall = Stall()
    j = open_journal(tmp_path / "j", write_hook=stall)
    waits: list[float] = []
    fsyncs: list[float] = []

    def on_wait(seconds: float, commits: int) -> None:
        waits.extend([seconds] * commits)

    gc = GroupCommitter(j, asyncio.get_running_loop(), lambda lsn: None, on_wait=on_wait,
                        on_fsync=lambda s, n: fsyncs.append(s))
    feed = Feed(j)
    async with running(gc, stall.release):
        feed.batch(2)
        gc.commit_now()
        await wait_for(stall.entered.is_set)        # the first fsync is stuck
        for _ in range(3):                          # three more commits behind it
            feed.batch(2)
            gc.commit_now()
        held = time.perf_counter()
        await asyncio.sleep(0.15)
        assert waits == []                          # nothing is durable: nothing timed
        stall.release.set()
        await gc.flush(timeout=10)
        released = time.perf_counter() - held
    assert len(waits) == 4, waits
    assert all(0.15 <= w <= released + 0.15 + 1.0 for w in waits), (waits, released)
    assert waits[0] >= fsyncs[0] >= 0.15                # the stuck fsync is inside its wait
    j.close()


async def test_fsync_mode_timing_is_bounded_under_a_stalled_disk(tmp_path, monkeypatch):
    """At most MAX_TIMED_COMMITS entries are kept while the disk is stuck; the later commits
    are counted into the last one (their wait is overstated, none is lost)."""
    monkeypatch.setattr(commit_mod, "MAX_TIMED_COMMITS", 3)
    stall = Stall()
    j = open_journal(tmp_path / "j", write_hook=stall)
    waits: list[tuple[float, int]] = []
    gc = GroupCommitter(j, asyncio.get_running_loop(), lambda lsn: None,
                        on_wait=lambda s, n: waits.append((s, n)))
    feed = Feed(j)
    async with running(gc, stall.release):
        feed.batch(1)
        gc.commit_now()
        await wait_for(stall.entered.is_set)
        for _ in range(20):
            feed.batch(1)
            gc.commit_now()
        assert len(gc._timed) == 3
        assert gc._timed[-1][0] == j.written_lsn    # the last one kept covers them all
        stall.release.set()
        assert await gc.flush(timeout=10) == j.appended_lsn
    assert [n for _, n in waits] == [1, 1, 19] and not gc._timed     # 21 commits
    j.close()


async def test_a_wait_is_timed_only_once_its_copies_were_published(tmp_path):
    """A commit made durable while on_durable runs (the sync thread goes on meanwhile) is timed
    at the on_durable that covers it, not at the one already running."""
    stall = Stall()
    publishing = threading.Event()
    syncs = 0

    def hook(op: str) -> None:                # the 1st fsync stalls, the 2nd waits for on_durable
        nonlocal syncs
        if op == "fsync" and threading.current_thread().name.startswith("dcgw-journal-sync"):
            syncs += 1
            if syncs == 1:
                stall(op)
            elif syncs == 2:
                publishing.wait(10)

    j = open_journal(tmp_path / "j", write_hook=hook)
    published: list[int] = []
    waits: list[tuple[float, int]] = []       # (seconds, lsn published when on_wait ran)
    fsyncs: list[float] = []

    def on_durable(lsn: int) -> None:
        published.append(lsn)
        if len(published) == 1:
            publishing.set()                  # the second fsync may end while this one runs
            time.sleep(0.1)                   # slow publishing; the GIL goes to the sync thread

    gc = GroupCommitter(j, asyncio.get_running_loop(), on_durable,
                        on_wait=lambda s, n: waits.append((s, published[-1])),
                        on_fsync=lambda s, n: fsyncs.append(s))
    feed = Feed(j)
    async with running(gc, stall.release, publishing):
        first = feed.batch(1)
        gc.commit_now()
        await wait_for(stall.entered.is_set)
        second = feed.batch(1)            # written while the first fsync is stuck
        gc.commit_now()
        stall.release.set()
        assert await gc.flush(timeout=10) == second
    assert published == [first, second]
    assert [lsn for _, lsn in waits] == [first, second]
    assert waits[1][0] >= 0.1                 # it waited out the slow publishing of the first
    j.close()


@pytest.mark.parametrize("durability", ["fsync", "os"])
async def test_a_segment_roll_waits_for_the_disk_in_the_sync_thread_not_on_the_loop(
        tmp_path, caplog, durability):
    """Every fsync of a roll stalls (a disk that stops answering): the loop's appends and
    commits go on without waiting, the records before the roll stay durable, the ones after it
    wait (in both modes: the next segment does not exist yet), the stall is visible (gauge,
    warning), and once the disk answers everything is durable, in order."""
    entered, release = threading.Event(), threading.Event()
    j: SegmentJournal | None = None

    def hook(op: str) -> None:
        if op == "fsync" and j is not None and j.roll_due:
            entered.set()
            release.wait(10)

    j = open_journal(tmp_path / "j", segment_bytes=4096, durability=durability,
                     write_hook=hook)
    durables: list[int] = []
    gc = GroupCommitter(j, asyncio.get_running_loop(), durables.append, slow_sync=0.05,
                        fsync_interval=0.01)
    feed = Feed(j)
    async with running(gc, release):
        await asyncio.sleep(0)                         # run() starts: rolls are its thread's
        while not j.roll_due:
            lsn = feed.batch(1)
            gc.commit_now()
            await wait_for(lambda: j.roll_due or (durables and durables[-1] == lsn))
        await wait_for(entered.is_set)                 # the sync thread is stuck in the roll
        before = j.durable_lsn
        t0 = time.perf_counter()
        for _ in range(20):
            lsn = feed.batch(3)
            gc.commit_now()
        assert time.perf_counter() - t0 < 1.0        # (a stalled roll holds it 10 s)
        await asyncio.sleep(0.1)
        assert j.roll_due and j.durable_lsn == before < lsn
        await wait_for(lambda: gc.sync_running_seconds > 0.05)
        await wait_for(lambda: "a journal segment roll has been running for" in caplog.text)
        release.set()
        await wait_for(lambda: durables and durables[-1] == lsn)
        assert not j.roll_due and gc.sync_running_seconds == 0.0
    assert durables == sorted(durables)     # (os: repeated when only the sync advanced)
    assert seqs(j.read_target("T", 1, feed.i)) == list(range(1, feed.i + 1))
    j.close()


async def test_a_failed_roll_is_reported_and_retried(tmp_path):
    faults = Faults()
    j = open_journal(tmp_path / "j", segment_bytes=4096, write_hook=faults)
    durables: list[int] = []
    errors: list[Exception] = []
    gc = GroupCommitter(j, asyncio.get_running_loop(), durables.append, on_error=errors.append,
                        retry_initial=0.005)
    feed = Feed(j)
    async with running(gc):
        await asyncio.sleep(0)
        while not j.roll_due:
            lsn = feed.batch(1)
            if j.roll_due:
                faults.fail["fsync"] = errno.EIO     # the roll's seal fails, then is retried
            gc.commit_now()
            await wait_for(lambda: j.roll_due or (durables and durables[-1] == lsn))
        await wait_for(lambda: len(errors) >= 2)
        assert all("cannot seal journal segment" in str(e) for e in errors) and j.roll_due
        lsn = feed.batch(5)
        faults.fail = {}
        gc.commit_now()
        await wait_for(lambda: durables and durables[-1] == lsn)
    assert seqs(j.read_target("T", 1, feed.i)) == list(range(1, feed.i + 1))
    j.close()


async def test_fsync_mode_a_read_wakes_the_sync_thread_before_its_commit(tmp_path, monkeypatch):
    """``expect_append`` (a source's read begins) wakes the sync thread with nothing written
    yet; the thread finds nothing to sync and waits again, and the read's commit wakes it
    once more. The thread's own bounded wait is made a minute long: only a wake moves it."""
    monkeypatch.setattr(commit_mod, "IDLE_WAIT_S", 60.0)
    j = open_journal(tmp_path / "j")
    fsyncs: list[int] = []
    durables: list[int] = []
    gc = GroupCommitter(j, asyncio.get_running_loop(), durables.append,
                        on_fsync=lambda s, n: fsyncs.append(n))
    feed = Feed(j)
    async with running(gc):
        await asyncio.sleep(0.05)                   # the thread waits for its first wake
        assert gc.wakes == 0
        gc.expect_append()
        await wait_for(lambda: gc.wakes == 1)       # woken by the read alone
        assert fsyncs == []                         # with nothing written: no fdatasync
        lsn = feed.batch(3)
        gc.commit_now()
        await wait_for(lambda: durables and durables[-1] == lsn, timeout=10)
        await wait_for(lambda: gc.wakes == 2)       # the commit woke it again
        assert fsyncs == [3]
    j.close()


async def test_fsync_mode_a_commit_after_an_early_wake_adds_no_second_one(tmp_path):
    """The wake of a read's start is still pending when its records are written (the thread
    has not run yet, as when its wake-up takes longer than the read): the commit leaves it at
    that, and the thread's one fdatasync covers the read."""
    j = open_journal(tmp_path / "j")
    fsyncs: list[int] = []
    gc = GroupCommitter(j, asyncio.get_running_loop(), lambda lsn: None,
                        on_fsync=lambda s, n: fsyncs.append(n))
    feed = Feed(j)
    gc.expect_append()                              # no thread yet: the wake stays pending
    lsn = feed.batch(3)
    gc.commit_now()              # written; releasing the wake again would raise RuntimeError
    assert j.written_lsn == lsn and j.synced_lsn < lsn
    async with running(gc):
        assert await gc.flush(timeout=10) == lsn
    assert fsyncs == [3]
    j.close()


@pytest.mark.parametrize("durability,max_delay", [("os", 0.0), ("fsync", 0.05)])
async def test_a_read_does_not_wake_the_sync_thread_when_no_copy_waits_for_it(
        tmp_path, durability, max_delay):
    """In ``os`` mode copies do not wait for the disk (the background fdatasync keeps its own
    pace); with ``max_delay`` the commit comes later than the thread would wake. Either way a
    read's start wakes nothing."""
    j = open_journal(tmp_path / "j", durability=durability)
    gc = GroupCommitter(j, asyncio.get_running_loop(), lambda lsn: None, fsync_interval=60.0,
                        max_delay=max_delay)
    async with running(gc):
        await asyncio.sleep(0.05)
        gc.expect_append()
        await asyncio.sleep(0.1)
        assert gc.wakes == 0
    j.close()


async def test_fsync_mode_a_read_does_not_wake_a_sync_thread_that_is_busy(tmp_path, monkeypatch):
    """While written records are not yet on the disk (a high rate: the thread is syncing), a
    read's start wakes nothing: the thread goes on from its fdatasync to the next one with
    whatever was written meanwhile, and an early wake would only make it sync smaller batches."""
    monkeypatch.setattr(commit_mod, "IDLE_WAIT_S", 60.0)
    stall = Stall()
    j = open_journal(tmp_path / "j", write_hook=stall)
    durables: list[int] = []
    gc = GroupCommitter(j, asyncio.get_running_loop(), durables.append)
    feed = Feed(j)
    async with running(gc, stall.release):
        await asyncio.sleep(0.05)                   # the thread waits for its first wake
        lsn = feed.batch(1)
        gc.commit_now()
        await wait_for(stall.entered.is_set)        # the thread is inside its fdatasync
        gc.expect_append()                          # a read begins meanwhile
        stall.release.set()
        await wait_for(lambda: durables and durables[-1] == lsn)
        await asyncio.sleep(0.1)                    # the thread is back waiting for a wake
        assert gc.wakes == 1
    j.close()
