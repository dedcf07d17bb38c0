"""A segment roll handed to a worker (SegmentJournal.hand_rolls_to): the owner thread buffers
the appends that follow and never waits for the disk; the worker seals the full segment and
creates the next (the same disk work, in the same order, as a roll done by the owner); the
buffered records then reach the next segment. A crash meanwhile loses only records that were
never written, so never durable; a failed roll is retried; memory stays bounded."""

from __future__ import annotations

import errno
import threading

import pytest

from dcgateway.errors import JournalError
from dcgateway.journal import SegmentJournal
from dcgateway.journal.format import segment_name

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
