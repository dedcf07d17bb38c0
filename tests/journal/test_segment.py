"""Journal: append/read round trips, durability visibility, recovery (clean, torn, corrupt, crash,
index rebuild), segments and pruning, source/target sequence state, I/O faults via write_hook.
Real files in tmp_path, real fsync. The group committer and kill -9 tests are in
tests/journal/test_commit.py and tests/journal/test_crash.py."""

from __future__ import annotations

import errno
import os
from collections import Counter

import pytest

from dcgateway.errors import JournalError
from dcgateway.journal import Entry, SegmentJournal
from dcgateway.journal import segment as journal_mod
from dcgateway.journal.format import segment_name


def msg(i: int, src: str = "SRC", pad: int = 200) -> bytes:
    """A deterministic FIX-like message; includes SOH and a non-UTF-8 byte (raw must be opaque)."""
    body = b"35=8\x0149=" + src.encode() + b"\x0134=%d\x0158=" % i + bytes([0xE9]) + b"x" * (pad + i % 7) + b"\x01"
    return b"8=FIX.4.2\x019=%d\x01" % len(body) + body + b"10=%03d\x01" % (sum(body) % 256)


def open_journal(path, **kw) -> SegmentJournal:
    j = SegmentJournal(path, **kw)
    j.recover()
    return j


def reopen(path, **kw):
    j = SegmentJournal(path, **kw)
    return j, j.recover()


def synced(jdir, n: int) -> SegmentJournal:
    """A journal holding source S's messages 1..n, copied to target T as seqs 1..n, fsynced."""
    j = open_journal(jdir)
    for i in range(1, n + 1):
        j.append("S", i, 1.0, msg(i), [("T", i)])
    j.sync()
    return j


def data_end(seg) -> int:
    """Where a live segment's records end: it is kept zero-filled ahead of them (a record never
    ends in a zero byte in these tests: each ends with its message's SOH or a name)."""
    return len(seg.read_bytes().rstrip(b"\0"))


def crash(j: SegmentJournal) -> None:
    """Process death: what was written stays in the page cache; nothing buffered is flushed and
    nothing is synced or checkpointed."""
    j._release()


class Faults:
    """write_hook that raises OSError(errno) for the ops set in ``fail``."""

    def __init__(self) -> None:
        self.fail: dict[str, int] = {}
        self.calls: Counter[str] = Counter()

    def __call__(self, op: str) -> None:
        self.calls[op] += 1
        if op in self.fail:
            e = self.fail[op]
            raise OSError(e, os.strerror(e))


def seqs(entries: list[Entry]) -> list[int]:
    return [e.target_seq for e in entries]


@pytest.fixture
def jdir(tmp_path):
    return tmp_path / "journal"


# -- round trips ----------------------------------------------------------------------------------

def test_append_read_round_trip_several_targets(jdir):
    j = open_journal(jdir)
    nxt = Counter()
    expected: dict[str, list[tuple[int, int]]] = {"A": [], "B": [], "C": []}
    lsns = []
    for i in range(1, 101):
        ts = [t for t, every in (("A", 1), ("B", 2), ("C", 3)) if i % every == 0]
        assign = []
        for t in ts:
            nxt[t] += 1
            assign.append((t, nxt[t]))
            expected[t].append((nxt[t], i))
        lsns.append(j.append("SRC", i, 1_700_000_000.0 + i, msg(i), assign))
    assert lsns == sorted(set(lsns)) and j.appended_lsn == lsns[-1]
    assert j.sync() == lsns[-1] == j.durable_lsn == j.written_lsn
    for t in "ABC":
        got = j.read_target(t, 1, 1000)
        assert [(e.target_seq, e.source_seq) for e in got] == expected[t]
        assert all(e.raw == msg(e.source_seq) and e.source == "SRC" for e in got)
        assert all(e.received == 1_700_000_000.0 + e.source_seq for e in got)
        assert j.target_last_seq(t) == nxt[t]
    e = j.read_target("B", 7, 7)[0]
    assert e == Entry(7, "SRC", 14, 1_700_000_014.0, msg(14), lsns[13])
    assert j.target_last_seq("nobody") == 0 and j.read_target("nobody", 1, 10) == []
    j.close()


def test_read_target_ranges_with_gaps(jdir):
    j = open_journal(jdir)
    # target seqs 2, 3, 6 and 9 went to admin messages (heartbeats, test requests): no entries
    for i, s in enumerate([1, 4, 5, 7, 8, 10, 400], start=1):
        j.append("S1", i, 1.0, msg(i, "S1"), [("T", s)])
    j.sync()
    assert seqs(j.read_target("T", 1, 10)) == [1, 4, 5, 7, 8, 10]
    assert seqs(j.read_target("T", 2, 3)) == []
    assert seqs(j.read_target("T", 3, 7)) == [4, 5, 7]
    assert seqs(j.read_target("T", 0, 4)) == [1, 4]
    assert seqs(j.read_target("T", 10, 10_000)) == [10, 400]     # a big gap: a separate run
    assert j.read_target("T", 401, 500) == [] and j.read_target("T", 8, 7) == []
    j.close()
    j, _ = reopen(jdir)
    assert seqs(j.read_target("T", 1, 500)) == [1, 4, 5, 7, 8, 10, 400]
    j.close()


def test_durable_only_hides_unsynced_entries(jdir):
    j = synced(jdir, 5)
    for i in range(6, 9):
        j.append("S", i, 1.0, msg(i), [("T", i)])
    assert seqs(j.read_target("T", 1, 10)) == [1, 2, 3, 4, 5]
    assert seqs(j.read_target("T", 1, 10, durable_only=False)) == list(range(1, 9))
    assert j.written_lsn > j.durable_lsn                  # durable_only=False flushed, no sync
    assert seqs(j.read_target("T", 1, 10)) == [1, 2, 3, 4, 5]
    j.sync()
    assert seqs(j.read_target("T", 1, 10)) == list(range(1, 9))
    j.close()


def test_invalid_sequences_are_refused_and_change_nothing(jdir):
    j = open_journal(jdir)
    j.append("S", 1, 1.0, msg(1), [("T", 5)])
    lsn = j.appended_lsn
    with pytest.raises(ValueError, match="seq 5 is not after 5"):
        j.append("S", 2, 1.0, msg(2), [("U", 1), ("T", 5)])
    with pytest.raises(ValueError, match="twice"):
        j.append("S", 2, 1.0, msg(2), [("U", 1), ("U", 2)])
    assert j.appended_lsn == lsn and j.target_last_seq("U") == 0
    with pytest.raises(ValueError):
        j.append("S", 2, 1.0, msg(2), [("x" * 300, 1)])
    j.close()


def test_api_misuse_is_a_clear_error(jdir):
    j = SegmentJournal(jdir)
    with pytest.raises(JournalError, match="not recovered"):
        j.append("S", 1, 1.0, b"x", [])
    j.recover()
    with pytest.raises(JournalError, match="in use by another process"):
        SegmentJournal(jdir).recover()
    with pytest.raises(JournalError, match="exactly once"):
        j.recover()
    j.close()
    j.close()
    with pytest.raises(JournalError, match="closed"):
        j.read_target("T", 1, 2)


# -- recovery -------------------------------------------------------------------------------------

def test_recovery_after_clean_close(jdir):
    j = open_journal(jdir)
    for i in range(1, 51):
        j.append("S1", i, 100.0 + i, msg(i), [("T1", i), ("T2", 2 * i)])
    j.append_source_next_in("S1", 53)
    last = j.appended_lsn
    j.close()
    j, rec = reopen(jdir)
    assert rec.last_lsn == last and rec.torn_bytes == 0 and rec.records == 0   # checkpoint at close
    assert not rec.rebuilt_indexes
    assert rec.target_next_seq == {"T1": 51, "T2": 101} and rec.source_next_in == {"S1": 53}
    assert seqs(j.read_target("T2", 1, 10)) == [2, 4, 6, 8, 10]
    lsn = j.append("S1", 53, 200.0, msg(53), [("T1", 51)])
    assert lsn == last + 1
    j.close()


def test_torn_tail_is_cut_and_later_appends_work(jdir):
    j = synced(jdir, 20)
    crash(j)
    seg = jdir / segment_name(1)
    os.truncate(seg, data_end(seg) - 40)             # cut the last record in half
    j, rec = reopen(jdir)
    assert 0 < rec.torn_bytes < len(msg(20)) + 100
    assert rec.target_next_seq == {"T": 20} and rec.source_next_in == {"S": 20}
    assert seqs(j.read_target("T", 1, 100)) == list(range(1, 20))
    j.append("S", 20, 1.0, b"again", [("T", 20)])
    j.append("S", 21, 1.0, msg(21), [("T", 21)])
    j.close()
    j, rec = reopen(jdir)
    got = j.read_target("T", 19, 21)
    assert [e.raw for e in got] == [msg(19), b"again", msg(21)] and rec.torn_bytes == 0
    j.close()


def test_corrupted_last_record_is_dropped(jdir):
    j = synced(jdir, 10)
    crash(j)
    seg = jdir / segment_name(1)
    data = bytearray(seg.read_bytes())
    data[data_end(seg) - 10] ^= 0xFF
    seg.write_bytes(bytes(data))
    j, rec = reopen(jdir)
    assert rec.torn_bytes > 0 and rec.target_next_seq == {"T": 10}
    assert seqs(j.read_target("T", 1, 10)) == list(range(1, 10))
    j.close()


def test_unsynced_tail_after_checkpoint_is_replayed_into_index(jdir):
    """The checkpoint from recover() covers nothing; everything after it is replayed, and index
    entries that reached the disk for records that did not survive are removed."""
    j = open_journal(jdir)
    for i in range(1, 31):
        j.append("S", i, 1.0, msg(i), [("T", i), ("U", i)])
    j.sync()
    j.flush_index()                 # index runs are written now and then, not with every sync
    crash(j)
    idx = jdir / "index" / "T.idx"
    assert idx.stat().st_size == 30 * 16
    with open(idx, "r+b") as f:                      # an index slot written for a lost record
        f.seek(40 * 16)
        f.write(bytes.fromhex("01000000") + (99999).to_bytes(8, "little") + (300).to_bytes(4, "little"))
    os.truncate(jdir / "index" / "U.idx", 0)         # an index that never reached the disk
    j, rec = reopen(jdir)
    assert not rec.rebuilt_indexes and rec.records == 30
    assert idx.stat().st_size == 30 * 16
    assert seqs(j.read_target("T", 1, 100)) == seqs(j.read_target("U", 1, 100)) == list(range(1, 31))
    j.close()


@pytest.mark.parametrize("damage", ["delete_indexes", "remove_checkpoint", "truncate_index",
                                    "garbage_checkpoint"])
def test_indexes_rebuilt_from_journal(jdir, damage):
    j = open_journal(jdir, segment_bytes=8192)
    for i in range(1, 121):
        j.append("S", i, 1.0, msg(i), [("T", i), ("U", 1000 + i)])
    j.close()
    index = jdir / "index"
    if damage == "delete_indexes":
        for p in index.glob("*.idx"):
            p.unlink()
    elif damage == "remove_checkpoint":
        (index / "checkpoint").unlink()
    elif damage == "truncate_index":
        os.truncate(index / "T.idx", 16 * 50)
    else:
        (index / "checkpoint").write_bytes(b"DCGWCKP1 nonsense")
    j, rec = reopen(jdir, segment_bytes=8192)
    assert rec.rebuilt_indexes and rec.records > 120 and rec.segments > 3
    assert rec.target_next_seq == {"T": 121, "U": 1121}
    assert [e.raw for e in j.read_target("T", 1, 200)] == [msg(i) for i in range(1, 121)]
    assert seqs(j.read_target("U", 1000, 1010)) == list(range(1001, 1011))
    j.close()
    j, rec = reopen(jdir, segment_bytes=8192)
    assert not rec.rebuilt_indexes and rec.records == 0
    j.close()


def test_corrupt_record_in_earlier_segment_is_an_error(jdir):
    j = open_journal(jdir, segment_bytes=4096)
    for i in range(1, 60):
        j.append("S", i, 1.0, msg(i), [("T", i)])
    j.close()
    (jdir / "index" / "checkpoint").unlink()         # force a scan of every segment
    seg = jdir / segment_name(2)
    data = bytearray(seg.read_bytes())
    data[700] ^= 0x01
    seg.write_bytes(bytes(data))
    with pytest.raises(JournalError, match=r"00000002\.seg is corrupt at offset \d+: checksum"):
        SegmentJournal(jdir, segment_bytes=4096).recover()
    # the failed recovery released its lock and fds: a fixed journal opens fine
    data[700] ^= 0x01
    seg.write_bytes(bytes(data))
    j, rec = reopen(jdir, segment_bytes=4096)
    assert rec.target_next_seq == {"T": 60}
    j.close()


def test_missing_segment_and_foreign_file_are_errors(jdir):
    j = open_journal(jdir, segment_bytes=4096)
    for i in range(1, 60):
        j.append("S", i, 1.0, msg(i), [("T", i)])
    j.close()
    (jdir / segment_name(2)).unlink()
    with pytest.raises(JournalError, match="00000002.seg is missing"):
        SegmentJournal(jdir).recover()
    for p in jdir.glob("*.seg"):
        p.unlink()
    (jdir / segment_name(7)).write_bytes(b"hello, not a journal segment")
    with pytest.raises(JournalError, match="00000007.seg is corrupt at offset 0"):
        SegmentJournal(jdir).recover()


def test_crash_during_roll_leaves_unfinished_segment_aside(jdir):
    j = open_journal(jdir, segment_bytes=4096)
    for i in range(1, 30):
        j.append("S", i, 1.0, msg(i), [("T", i)])
    j.close()
    segs = sorted(jdir.glob("*.seg"))
    nxt = jdir / segment_name(len(segs) + 1)
    nxt.write_bytes(b"DCGWJNL1\x05")                # header cut short by the crash
    j, rec = reopen(jdir, segment_bytes=4096)
    assert rec.segments == len(segs) and rec.target_next_seq == {"T": 30}
    assert (jdir / (nxt.name + ".unfinished")).exists()
    for i in range(30, 60):                           # rolls again, over the same number
        j.append("S", i, 1.0, msg(i), [("T", i)])
    j.close()
    j, rec = reopen(jdir, segment_bytes=4096)
    assert seqs(j.read_target("T", 1, 100)) == list(range(1, 60))
    j.close()


# -- segments, prune, reset -------------------------------------------------------------------------

def test_segment_roll_and_reading_across_segments(jdir):
    j = open_journal(jdir, segment_bytes=4096)
    for i in range(1, 101):
        j.append("S", i, float(i), msg(i), [("T", i)])
    j.sync()
    segs = sorted(jdir.glob("*.seg"))
    assert len(segs) > 5 and all(p.stat().st_size <= 4096 for p in segs)
    got = j.read_target("T", 1, 100)
    assert [e.raw for e in got] == [msg(i) for i in range(1, 101)]
    assert len({e.lsn for e in got}) == 100
    j.close()
    j, rec = reopen(jdir, segment_bytes=4096)
    assert rec.segments == len(segs)
    assert [e.source_seq for e in j.read_target("T", 40, 60)] == list(range(40, 61))
    j.close()


def test_a_record_bigger_than_a_segment_gets_a_segment_of_its_own(jdir):
    j = open_journal(jdir, segment_bytes=4096)
    big = b"8=FIX.4.2\x01" + b"Z" * 10_000
    j.append("S", 1, 1.0, msg(1), [("T", 1)])
    j.append("S", 2, 1.0, big, [("T", 2)])
    j.append("S", 3, 1.0, msg(3), [("T", 3)])
    j.close()
    j, _ = reopen(jdir, segment_bytes=4096)
    assert [e.raw for e in j.read_target("T", 1, 3)] == [msg(1), big, msg(3)]
    j.close()


def test_prune_removes_old_segments_only(jdir):
    j = open_journal(jdir, segment_bytes=4096)
    for i in range(1, 101):                            # received = i seconds
        j.append("S", i, float(i), msg(i), [("T", i)])
    j.sync()
    nsegs = len(list(jdir.glob("*.seg")))
    assert j.prune(before=0.5) == 0
    removed = j.prune(before=50.5)
    left = sorted(jdir.glob("*.seg"))
    assert removed >= 1 and len(left) == nsegs - removed
    got = j.read_target("T", 1, 100)
    assert got[0].source_seq > 1 and got[-1].source_seq == 100
    assert all(e.received >= 1 for e in got) and seqs(got) == list(range(got[0].target_seq, 101))
    assert min(e.received for e in j.read_target("T", 1, 100)) <= 51    # nothing newer removed
    assert j.prune(before=1e12) == len(left) - 1      # never the current segment
    assert len(list(jdir.glob("*.seg"))) == 1 and j.target_last_seq("T") == 100
    j.close()
    (jdir / "index" / "checkpoint").unlink()          # state must survive in the snapshot alone
    j, rec = reopen(jdir, segment_bytes=4096)
    assert rec.rebuilt_indexes and rec.target_next_seq == {"T": 101} and rec.source_next_in == {"S": 101}
    assert j.append("S", 101, 101.0, msg(101), [("T", 101)]) == rec.last_lsn + 1
    j.close()


def test_reset_target_restarts_its_sequence(jdir):
    j = open_journal(jdir)
    for i in range(1, 11):
        j.append("S", i, 1.0, msg(i), [("T", i), ("U", i)])
    j.reset_target("T")
    assert j.target_last_seq("T") == 0 and j.read_target("T", 1, 10) == []
    for i in range(11, 14):
        j.append("S", i, 1.0, msg(i), [("T", i - 10), ("U", i)])
    j.sync()
    assert [e.source_seq for e in j.read_target("T", 1, 10)] == [11, 12, 13]
    assert seqs(j.read_target("U", 1, 100)) == list(range(1, 14))
    crash(j)
    j, rec = reopen(jdir)
    assert rec.target_next_seq == {"T": 4, "U": 14}
    assert [e.source_seq for e in j.read_target("T", 1, 10)] == [11, 12, 13]
    j.close()
    (jdir / "index" / "checkpoint").unlink()
    j, rec = reopen(jdir)
    assert rec.rebuilt_indexes and rec.target_next_seq == {"T": 4, "U": 14}
    assert [e.source_seq for e in j.read_target("T", 1, 10)] == [11, 12, 13]
    j.close()


def test_source_next_in_from_records_and_markers(jdir):
    j = open_journal(jdir)
    j.append("A", 1, 1.0, msg(1), [("T", 1)])
    j.append("A", 2, 1.0, msg(2), [("T", 2)])
    j.append_source_next_in("A", 5)               # admin messages 3 and 4 consumed seqs
    j.append("B", 7, 1.0, msg(7), [("T", 3)])
    j.append_source_next_in("B", 4)               # a sequence reset of B: the marker wins...
    j.append("C", 10, 1.0, msg(10), [])
    j.append_source_next_in("C", 9)
    j.append("C", 9, 1.0, msg(9), [])             # ...and records after a marker raise it again
    j.append("C", 10, 1.0, msg(10), [])
    j.sync()
    crash(j)
    j, rec = reopen(jdir)
    assert rec.source_next_in == {"A": 5, "B": 4, "C": 11}
    j.close()
    (jdir / "index" / "checkpoint").unlink()
    j, rec = reopen(jdir)
    assert rec.source_next_in == {"A": 5, "B": 4, "C": 11} and rec.rebuilt_indexes
    j.close()


def test_a_marker_the_records_already_imply_is_not_written(jdir):
    """After a batch whose last message was seq N, the marker N+1 says nothing new: it is not
    written (one record less per read), and the restart still expects N+1; a marker that
    differs (admin seqs consumed, a sequence reset) is written."""
    j = open_journal(jdir)
    j.append("A", 1, 1.0, msg(1), [("T", 1)])
    lsn = j.appended_lsn
    assert j.append_source_next_in("A", 2) == lsn and j.appended_lsn == lsn
    assert j.append_source_next_in("A", 4) == lsn + 1        # seqs 2, 3 were admin messages
    assert j.append_source_next_in("A", 4) == lsn + 1        # said already
    assert j.append_source_next_in("B", 1) == lsn + 2        # never seen: written
    j.sync()
    crash(j)
    j, rec = reopen(jdir)
    assert rec.source_next_in == {"A": 4, "B": 1}
    j.close()


def test_odd_target_names_get_safe_index_files(jdir):
    j = open_journal(jdir)
    names = ["../evil", "has space", "ÜNI", ".hidden", "A/B", "Ü" * 120]
    for i, t in enumerate(names, 1):
        j.append("S", i, 1.0, msg(i), [(t, 1)])
    j.close()
    j, rec = reopen(jdir)
    assert set(rec.target_next_seq) == set(names)
    assert all(p.parent == jdir / "index" for p in (jdir / "index").iterdir())
    assert [j.read_target(t, 1, 1)[0].source_seq for t in names] == [1, 2, 3, 4, 5, 6]
    j.close()


# -- I/O faults -------------------------------------------------------------------------------------

def test_write_failure_surfaces_and_journal_stays_consistent(jdir):
    faults = Faults()
    j = open_journal(jdir, write_hook=faults)
    j.append("S", 1, 1.0, msg(1), [("T", 1)])
    j.sync()
    faults.fail["write"] = errno.ENOSPC
    j.append("S", 2, 1.0, msg(2), [("T", 2)])      # buffered: nothing to fail yet
    with pytest.raises(JournalError, match="No space left on device"):
        j.sync()
    assert j.durable_lsn < j.appended_lsn and seqs(j.read_target("T", 1, 9)) == [1]
    del faults.fail["write"]
    j.append("S", 3, 1.0, msg(3), [("T", 3)])
    assert j.sync() == j.appended_lsn
    assert seqs(j.read_target("T", 1, 9)) == [1, 2, 3]
    j.close()
    j, rec = reopen(jdir)
    assert rec.torn_bytes == 0 and [e.raw for e in j.read_target("T", 1, 9)] == [msg(1), msg(2), msg(3)]
    j.close()


def test_failed_append_when_buffer_full_appends_nothing(jdir):
    faults = Faults()
    j = open_journal(jdir, write_hook=faults, flush_bytes=1000)
    j.append("S", 1, 1.0, msg(1), [("T", 1)])
    j.append("S", 2, 1.0, msg(2), [("T", 2)])
    j.append("S", 3, 1.0, msg(3), [("T", 3)])
    j.append("S", 4, 1.0, msg(4), [("T", 4)])      # buffer now over flush_bytes
    lsn = j.appended_lsn
    faults.fail["write"] = errno.EIO
    with pytest.raises(JournalError, match="Input/output error"):
        j.append("S", 5, 1.0, msg(5), [("T", 5)])
    assert j.appended_lsn == lsn and j.target_last_seq("T") == 4
    del faults.fail["write"]
    j.append("S", 5, 1.0, msg(5), [("T", 5)])
    j.close()
    j, _ = reopen(jdir)
    assert seqs(j.read_target("T", 1, 9)) == [1, 2, 3, 4, 5]
    j.close()


def test_half_written_batch_leaves_no_half_record(jdir, monkeypatch):
    j = open_journal(jdir)
    j.append("S", 1, 1.0, msg(1), [("T", 1)])
    j.sync()
    size = data_end(jdir / segment_name(1))
    real = journal_mod.write_at

    def half_then_enospc(fd, data, off):
        real(fd, bytes(data[:len(data) // 2]), off)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_mod, "write_at", half_then_enospc)
    j.append("S", 2, 1.0, msg(2), [("T", 2)])
    j.append("S", 3, 1.0, msg(3), [("T", 3)])
    with pytest.raises(JournalError):
        j.flush_writes()
    assert (jdir / segment_name(1)).stat().st_size == size     # cut back to the last whole record
    crash(j)                                                   # and the fault never clears
    monkeypatch.undo()
    j, rec = reopen(jdir)
    assert rec.torn_bytes == 0 and rec.target_next_seq == {"T": 2}
    assert seqs(j.read_target("T", 1, 9)) == [1]
    j.append("S", 2, 1.0, msg(2), [("T", 2)])
    j.close()


def test_fsync_failure_then_recovery(jdir):
    faults = Faults()
    j = open_journal(jdir, write_hook=faults)
    j.append("S", 1, 1.0, msg(1), [("T", 1)])
    before = j.durable_lsn
    faults.fail["fsync"] = errno.EIO
    with pytest.raises(JournalError, match="fdatasync .* failed: Input/output error"):
        j.sync()
    assert j.durable_lsn == before and j.read_target("T", 1, 1) == []
    del faults.fail["fsync"]
    writes = faults.calls["write"]
    assert j.sync() == j.appended_lsn
    assert faults.calls["write"] == writes + 1       # the un-synced bytes were written again first
    assert seqs(j.read_target("T", 1, 1)) == [1]
    j.close()


def test_roll_failure_keeps_the_current_segment(jdir):
    faults = Faults()
    j = open_journal(jdir, segment_bytes=4096, write_hook=faults)
    i = 0
    while len(list(jdir.glob("*.seg"))) == 1:
        i += 1
        j.append("S", i, 1.0, msg(i), [("T", i)])
    j.sync()
    faults.fail["fsync"] = errno.EIO
    with pytest.raises(JournalError):
        for k in range(i + 1, i + 40):
            j.append("S", k, 1.0, msg(k), [("T", k)])
    del faults.fail["fsync"]
    last = j.target_last_seq("T")
    for k in range(last + 1, last + 40):
        j.append("S", k, 1.0, msg(k), [("T", k)])
    j.close()
    j, rec = reopen(jdir, segment_bytes=4096)
    assert seqs(j.read_target("T", 1, 1000)) == list(range(1, last + 40))
    j.close()


def test_checkpoint_failure_is_reported_and_retried(jdir):
    faults = Faults()
    j = open_journal(jdir, write_hook=faults, checkpoint_records=10)
    for i in range(1, 21):
        j.append("S", i, 1.0, msg(i), [("T", i)])
    j.sync()
    assert j.checkpoint_due
    faults.fail["fsync"] = errno.EIO
    with pytest.raises(JournalError, match="checkpoint"):
        j.checkpoint()
    del faults.fail["fsync"]
    assert j.checkpoint() and not j.checkpoint_due
    crash(j)
    j, rec = reopen(jdir)
    assert rec.records == 0 and rec.target_next_seq == {"T": 21}
    j.close()


def test_unsynced_backlog_is_bounded_while_fsync_fails(jdir):
    faults = Faults()
    j = open_journal(jdir, write_hook=faults, flush_bytes=2000, max_unsynced_bytes=10_000)
    faults.fail["fsync"] = errno.EIO
    with pytest.raises(JournalError, match="refusing new records"):
        for i in range(1, 1000):
            j.append("S", i, 1.0, msg(i), [("T", i)])
    accepted = j.target_last_seq("T")
    assert 10 < accepted < 100
    with pytest.raises(JournalError):
        j.sync()
    del faults.fail["fsync"]
    assert j.sync() == j.appended_lsn                  # the backlog drains...
    j.append("S", accepted + 1, 1.0, msg(accepted + 1), [("T", accepted + 1)])   # ...and appends resume
    j.close()
    j, _ = reopen(jdir)
    assert seqs(j.read_target("T", 1, 1000)) == list(range(1, accepted + 2))
    j.close()


def test_roll_after_failed_fsync_rewrites_unsynced_bytes(jdir, monkeypatch):
    """After a failed fsync the kernel may have dropped the dirty pages; the roll's own fsync
    must not seal the segment over them without writing them again."""
    faults = Faults()
    j = open_journal(jdir, segment_bytes=8192, write_hook=faults)
    j.append("S", 1, 1.0, msg(1), [("T", 1)])
    faults.fail["fsync"] = errno.EIO
    with pytest.raises(JournalError):
        j.sync()                                     # flushed at some offset, fsync failed
    del faults.fail["fsync"]
    unsynced_at = j._retained[0][2]
    writes: list[int] = []
    real = journal_mod.write_at

    def recording(fd, data, off):
        writes.append(off)
        real(fd, data, off)

    monkeypatch.setattr(journal_mod, "write_at", recording)
    i = 1
    while len(list(jdir.glob("*.seg"))) == 1:
        i += 1
        j.append("S", i, 1.0, msg(i), [("T", i)])
    assert unsynced_at in writes                     # rewritten before the old segment was sealed
    assert j.durable_lsn >= i                        # the roll made everything before it durable
    j.close()
    j, _ = reopen(jdir, segment_bytes=8192)
    assert seqs(j.read_target("T", 1, 1000)) == list(range(1, i + 1))
    j.close()


# -- zeroed ahead -----------------------------------------------------------------------------------

def test_live_segment_is_zero_filled_ahead_and_a_crash_leaves_a_clean_end(jdir):
    j = synced(jdir, 30)
    seg = jdir / segment_name(1)
    end = data_end(seg)
    assert seg.stat().st_size >= end + journal_mod.ZERO_AHEAD_BYTES // 2   # zeros past the data
    crash(j)
    j, rec = reopen(jdir)
    assert rec.torn_bytes == 0                      # zeros are the clean end, not a torn record
    assert seqs(j.read_target("T", 1, 100)) == list(range(1, 31))
    for i in range(31, 41):                         # appends go on over the zeros
        j.append("S", i, 1.0, msg(i), [("T", i)])
    j.sync()
    crash(j)
    j, rec = reopen(jdir)
    assert rec.torn_bytes == 0 and seqs(j.read_target("T", 1, 100)) == list(range(1, 41))
    j.close()
    assert seg.stat().st_size == data_end(seg)      # a closed segment ends at its data


def test_torn_record_inside_the_zeroed_area_is_still_torn(jdir):
    j = synced(jdir, 10)
    seg = jdir / segment_name(1)
    end = data_end(seg)
    crash(j)
    with open(seg, "r+b") as f:                     # the first bytes of record 11 reached disk
        f.seek(end)
        f.write(b"\x17\x2a\x00\x01\x99")
    j, rec = reopen(jdir)
    assert rec.torn_bytes > 0 and rec.target_next_seq == {"T": 11}
    assert seg.stat().st_size == end                # cut back to the last whole record
    assert seqs(j.read_target("T", 1, 100)) == list(range(1, 11))
    j.close()
