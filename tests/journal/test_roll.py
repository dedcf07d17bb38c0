"""A segment roll handed to a worker (SegmentJournal.hand_rolls_to): the owner thread buffers
the appends that follow and never waits for the disk; the worker seals the full segment and
creates the next (the same disk work, in the same order, as a roll done by the owner); the
buffered records then reach the next segment. A crash meanwhile loses only records that were
never written, so never durable; a failed roll is retried; memory stays bounded."""

from __future__ import annotations

import asyncio
import errno
import threading

import pytest

from dcgateway.errors import JournalError
from dcgateway.journal import GroupCommitter, SegmentJournal
from dcgateway.journal.format import HDR_SIZE, MARK_FIXED, encode_name, segment_name

from .test_commit import running, wait_for
from .test_segment import Faults, crash, msg, open_journal, reopen, seqs

SEG = 4096


def fill_until_roll(j: SegmentJournal, start: int = 1) -> int:
    """Append S's messages (to target T, seq = source seq) until a roll is due; the next seq."""
    i = start
    while not j.roll_due:
        j.append("S", i, 1.0, msg(i), [("T", i)])
        i += 1
        assert i < start + 1000, "no roll"
    return i


def test_a_roll_with_a_worker_leaves_the_disk_work_to_it(tmp_path):
    jdir = tmp_path / "j"
    faults = Faults()
    j = open_journal(jdir, segment_bytes=SEG, write_hook=faults)
    j.hand_rolls_to(True)
    nxt = fill_until_roll(j)
    fsyncs = faults.calls["fsync"]
    written = j.written_lsn
    for i in range(nxt, nxt + 5):                 # go on appending: buffered, nothing written
        j.append("S", i, 1.0, msg(i), [("T", i)])
    assert j.flush_writes() == written and faults.calls["fsync"] == fsyncs
    assert not (jdir / segment_name(2)).exists()
    assert j.appended_lsn > written and j.durable_lsn <= written
    assert j.roll() is True                       # what the worker does
    assert not j.roll_due and (jdir / segment_name(2)).exists()
    assert faults.calls["fsync"] > fsyncs
    assert j.flush_writes() == j.appended_lsn     # the buffered records reach the new segment
    assert j.roll() is False                      # nothing due
    assert j.sync() == j.appended_lsn
    last = nxt + 4
    assert seqs(j.read_target("T", 1, last)) == list(range(1, last + 1))
    j.close()
    j, rec = reopen(jdir, segment_bytes=SEG)
    assert rec.target_next_seq == {"T": last + 1} and rec.segments >= 2
    assert [e.raw for e in j.read_target("T", 1, last)] == [msg(i) for i in range(1, last + 1)]
    j.close()


@pytest.mark.parametrize("durability", ["fsync", "os"])
def test_the_owner_goes_on_while_the_worker_s_roll_waits_for_the_disk(tmp_path, durability):
    """A worker stuck in the roll's fsync: the owner's appends and writes return at once
    (buffered), nothing of the next segment is durable, and it all is once the disk answers."""
    entered, release = threading.Event(), threading.Event()

    def hook(op: str) -> None:
        if op == "fsync" and threading.current_thread().name == "roller":
            entered.set()
            assert release.wait(10)

    j = open_journal(tmp_path / "j", segment_bytes=SEG, write_hook=hook, durability=durability)
    j.hand_rolls_to(True)
    nxt = fill_until_roll(j)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            j.roll()
        except BaseException as exc:             # (reported by the assertion below)
            errors.append(exc)

    t = threading.Thread(target=worker, name="roller")
    t.start()
    try:
        assert entered.wait(10)
        before = j.durable_lsn
        for i in range(nxt, nxt + 20):
            j.append("S", i, 1.0, msg(i), [("T", i)])
            j.flush_writes()
        assert j.roll_due and j.durable_lsn == before < j.appended_lsn
    finally:
        release.set()
        t.join(10)
    assert not errors and not j.roll_due
    assert j.sync() == j.appended_lsn
    assert seqs(j.read_target("T", 1, nxt + 19)) == list(range(1, nxt + 20))
    j.close()


def test_a_failed_roll_stays_due_and_a_retry_loses_nothing(tmp_path):
    jdir = tmp_path / "j"
    faults = Faults()
    j = open_journal(jdir, segment_bytes=SEG, write_hook=faults)
    j.hand_rolls_to(True)
    nxt = fill_until_roll(j)
    j.append("S", nxt, 1.0, msg(nxt), [("T", nxt)])
    faults.fail["fsync"] = errno.EIO
    for _ in range(2):
        with pytest.raises(JournalError, match="cannot seal journal segment"):
            j.roll()
        assert j.roll_due and not (jdir / segment_name(2)).exists()
    faults.fail = {}
    assert j.roll() is True
    assert j.sync() == j.appended_lsn
    j.close()
    j, rec = reopen(jdir, segment_bytes=SEG)
    assert rec.target_next_seq == {"T": nxt + 1}
    assert seqs(j.read_target("T", 1, nxt)) == list(range(1, nxt + 1))
    j.close()


def test_a_crash_while_a_roll_is_due_loses_only_what_was_never_written(tmp_path):
    jdir = tmp_path / "j"
    j = open_journal(jdir, segment_bytes=SEG)
    j.hand_rolls_to(True)
    nxt = fill_until_roll(j)                      # (message nxt - 1 began the roll: buffered)
    written = j.written_lsn
    for i in range(nxt, nxt + 3):
        j.append("S", i, 1.0, msg(i), [("T", i)])
    assert j.flush_writes() == written
    crash(j)                                      # before the worker's roll
    j, rec = reopen(jdir, segment_bytes=SEG)
    # every record written before the roll is there; the buffered ones never were (nor
    # durable: no copy of them left), so the source is asked for them again from here
    assert rec.target_next_seq == {"T": nxt - 1} and rec.source_next_in == {"S": nxt - 1}
    assert seqs(j.read_target("T", 1, nxt + 5)) == list(range(1, nxt - 1))
    for i in range(nxt - 1, nxt + 40):            # and the journal goes on, rolling again
        j.append("S", i, 1.0, msg(i), [("T", i)])
    j.close()
    j, rec = reopen(jdir, segment_bytes=SEG)
    assert seqs(j.read_target("T", 1, nxt + 40)) == list(range(1, nxt + 40))
    j.close()


def test_what_needs_the_next_segment_does_the_roll_itself(tmp_path):
    """A read of records not yet written (a sequence reset's carry-over), a sync asked for,
    a sequence reset and the close: each does a roll still due, then goes on."""
    j = open_journal(tmp_path / "j", segment_bytes=SEG)
    j.hand_rolls_to(True)
    nxt = fill_until_roll(j)
    j.append("S", nxt, 1.0, msg(nxt), [("T", nxt)])
    got = j.read_target("T", nxt, nxt, durable_only=False)
    assert seqs(got) == [nxt] and not j.roll_due
    nxt = fill_until_roll(j, nxt + 1)
    assert j.sync() == j.appended_lsn and not j.roll_due
    nxt = fill_until_roll(j, nxt)
    j.reset_target("T")
    assert not j.roll_due and j.target_last_seq("T") == 0
    j.append("S", nxt, 1.0, msg(nxt), [("T", 1)])
    j.close()
    j, rec = reopen(tmp_path / "j", segment_bytes=SEG)
    assert rec.target_next_seq == {"T": 2}
    assert [e.raw for e in j.read_target("T", 1, 1)] == [msg(nxt)]
    j.close()


def test_the_close_does_a_roll_still_due(tmp_path):
    jdir = tmp_path / "j"
    j = open_journal(jdir, segment_bytes=SEG)
    j.hand_rolls_to(True)
    nxt = fill_until_roll(j)
    j.append("S", nxt, 1.0, msg(nxt), [("T", nxt)])
    j.close()
    j, rec = reopen(jdir, segment_bytes=SEG)
    assert rec.target_next_seq == {"T": nxt + 1} and rec.records == 0    # clean: no replay
    assert seqs(j.read_target("T", 1, nxt)) == list(range(1, nxt + 1))
    j.close()


def test_appends_waiting_for_a_roll_are_bounded(tmp_path):
    j = open_journal(tmp_path / "j", segment_bytes=SEG, flush_bytes=2048,
                     max_unsynced_bytes=8192)
    j.hand_rolls_to(True)
    nxt = fill_until_roll(j)
    with pytest.raises(JournalError, match="wait for the next segment"):
        for i in range(nxt, nxt + 100):
            j.append("S", i, 1.0, msg(i), [("T", i)])
    refused = j.appended_lsn
    assert j.roll() is True
    assert j.sync() == refused                    # what was accepted is kept, nothing more
    j.close()


def test_without_a_worker_the_owner_rolls_and_a_failure_refuses_the_message(tmp_path):
    faults = Faults()
    j = open_journal(tmp_path / "j", segment_bytes=SEG, write_hook=faults)
    opened = faults.calls["fsync"]
    i = 1
    while faults.calls["fsync"] == opened:        # append until the owner's own roll fsyncs
        j.append("S", i, 1.0, msg(i), [("T", i)])
        i += 1
    assert not j.roll_due
    while True:                                   # the next roll fails: the message is refused
        faults.fail["fsync"] = errno.EIO
        lsn = j.appended_lsn
        try:
            j.append("S", i, 1.0, msg(i), [("T", i)])
        except JournalError as exc:
            assert "cannot seal journal segment" in str(exc)
            break
        faults.fail = {}
        i += 1
    assert j.appended_lsn == lsn and not j.roll_due and j.target_last_seq("T") == i - 1
    faults.fail = {}
    j.append("S", i, 1.0, msg(i), [("T", i)])    # the retry rolls
    assert j.sync() == j.appended_lsn
    assert seqs(j.read_target("T", 1, i)) == list(range(1, i + 1))
    j.close()


def fill_to_brim(j: SegmentJournal, room: int) -> None:
    """Append until fewer than ``room`` bytes are left in the segment, without a roll."""
    i = 1
    while j._size + len(j._buf) + 400 <= SEG:
        j.append("S", i, 1.0, msg(i), [("T", i)])
        i += 1
    mark = HDR_SIZE + MARK_FIXED.size + len(encode_name("S"))
    k = 1000
    while j._size + len(j._buf) + room <= SEG:       # small records to the brim
        assert j._size + len(j._buf) + mark <= SEG
        j.append_source_next_in("S", k)
        k += 1
    assert not j.roll_due


def test_a_reset_whose_own_record_begins_the_roll_is_durable_when_it_returns(tmp_path):
    jdir = tmp_path / "j"
    j = open_journal(jdir, segment_bytes=SEG)
    j.hand_rolls_to(True)                          # the committer's thread is running
    fill_to_brim(j, HDR_SIZE + len(encode_name("T")))   # the RESET record does not fit
    j.reset_target("T")
    assert not j.roll_due and j.durable_lsn == j.appended_lsn
    crash(j)                                       # kill -9 right after the reset returned
    j, rec = reopen(jdir, segment_bytes=SEG)
    assert rec.target_next_seq.get("T", 1) == 1 and rec.segments >= 2
    j.close()


def test_a_durable_read_during_a_roll_never_opens_the_segment_being_created(tmp_path):
    """A catch-up reads its durable copies while the worker creates the next segment, and the
    creation fails (EIO on its fdatasync; the file is deleted and made again by the retry):
    the read must not have kept an fd of the deleted file, or durable records would read as
    absent afterwards."""
    jdir = tmp_path / "j"
    in_create, go = threading.Event(), threading.Event()
    fsyncs = [0]

    def hook(op: str) -> None:
        if op == "fsync" and threading.current_thread().name == "roller":
            fsyncs[0] += 1
            if fsyncs[0] == 2:                     # 1: the seal; 2: the new segment's
                in_create.set()
                assert go.wait(10)
                raise OSError(errno.EIO, "Input/output error")

    j = open_journal(jdir, segment_bytes=SEG, write_hook=hook)
    j.hand_rolls_to(True)
    i = 1
    while not j.roll_due:
        j.append("S", i, 1.0, msg(i), [("T", i)])
        i += 1
        if not j.roll_due:
            j.sync()
    last = i + 4
    for k in range(i, last + 1):                   # buffered, in the segment to come
        j.append("S", k, 1.0, msg(k), [("T", k)])
    errors: list[JournalError] = []

    def roller() -> None:
        try:
            j.roll()
        except JournalError as e:
            errors.append(e)

    t = threading.Thread(target=roller, name="roller")
    t.start()
    try:
        assert in_create.wait(10)
        assert seqs(j.read_target("T", 1, last)) == list(range(1, i - 1))
    finally:
        go.set()
        t.join(10)
    assert len(errors) == 1 and "cannot create journal segment" in str(errors[0])
    assert j.roll() is True                        # the retry
    assert j.sync() == j.appended_lsn
    assert seqs(j.read_target("T", 1, last)) == list(range(1, last + 1))
    j.close()


@pytest.mark.asyncio
async def test_records_sealed_before_a_failing_roll_are_durable(tmp_path):
    """The disk is full: the next segment cannot be created, and the roll keeps failing. The
    records written to the full segment were made durable by its seal: their copies go; only
    what follows waits for the next segment."""
    faults = Faults()
    j = open_journal(tmp_path / "j", segment_bytes=SEG, write_hook=faults)
    durables: list[int] = []
    errors: list[Exception] = []
    gc = GroupCommitter(j, asyncio.get_running_loop(), durables.append,
                        on_error=errors.append, retry_initial=0.005)
    async with running(gc):
        await asyncio.sleep(0)
        i = 1
        while not j.roll_due:
            j.append("S", i, 1.0, msg(i), [("T", i)])
            i += 1
        faults.fail["write"] = errno.ENOSPC        # creating the next segment fails
        sealed = j.written_lsn
        gc.commit_now()
        await wait_for(lambda: len(errors) >= 2)   # failed, and failed again on the retry
        assert j.roll_due and j.durable_lsn >= sealed
        assert durables and durables[-1] >= sealed
        assert j.durable_lsn < j.appended_lsn
        faults.fail.clear()
        gc.commit_now()
        await wait_for(lambda: bool(durables) and durables[-1] == j.appended_lsn)
    j.close()


def test_a_reset_whose_roll_fails_is_neither_appended_nor_applied(tmp_path):
    """The RESET record would begin a roll, and creating the next segment fails (a full disk):
    the reset is refused as a whole. Nothing of it reaches the disk later (the retried roll
    writes no RESET the live gateway never applied), so the live journal and the one a restart
    recovers agree on the target's copies."""
    jdir = tmp_path / "j"
    faults = Faults()
    j = open_journal(jdir, segment_bytes=SEG, write_hook=faults)
    j.hand_rolls_to(True)
    fill_to_brim(j, HDR_SIZE + len(encode_name("T")))
    j.flush_writes()
    n = j.target_last_seq("T")
    appended = j.appended_lsn
    faults.fail["write"] = errno.ENOSPC
    with pytest.raises(JournalError, match="cannot create journal segment"):
        j.reset_target("T")
    assert j.target_last_seq("T") == n
    faults.fail.clear()
    assert j.roll() is True                       # the worker's retry
    assert j.appended_lsn == appended + 1         # the next segment's snapshot, no RESET
    j.append("S", 10_000, 1.0, msg(10_000), [("T", n + 1)])   # the gateway goes on
    j.sync()
    live = seqs(j.read_target("T", 1, n + 1))
    assert live[-1] == n + 1 and len(live) > 2
    crash(j)
    j, rec = reopen(jdir, segment_bytes=SEG)
    assert seqs(j.read_target("T", 1, n + 1)) == live
    assert rec.target_next_seq["T"] == n + 2
    j.reset_target("T")                           # and a reset on a healthy disk works
    assert j.target_last_seq("T") == 0
    j.close()
