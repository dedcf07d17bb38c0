"""FileSessionStore: sequences and sent messages survive reopen and kill -9; torn records dropped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from dcgateway.errors import StoreError
from dcgateway.state.session_files import MAGIC, FileSessionStore


def test_state_survives_reopen(tmp_path):
    p = tmp_path / "S.log"
    s = FileSessionStore(p)
    s.set_next_in(5)
    s.save_outbound(1, b"one")
    s.save_outbound(2, b"two")
    s.save_outbound(4, b"four")
    s.sync()
    s.close()
    r = FileSessionStore(p)
    assert (r.next_in, r.next_out) == (5, 5)
    assert r.get_outbound(1, 10) == [(1, b"one"), (2, b"two"), (4, b"four")]
    assert r.get_outbound(2, 3) == [(2, b"two")]
    r.close()


def test_set_next_in_is_coalesced_but_ordered_with_outbound(tmp_path):
    p = tmp_path / "S.log"
    s = FileSessionStore(p)
    for i in range(2, 1000):
        s.set_next_in(i)
    s.sync()
    assert s.data_size < 200         # one record, not a thousand
    s.close()
    assert FileSessionStore(p).next_in == 999


def test_torn_last_record_is_dropped_not_fatal(tmp_path):
    p = tmp_path / "S.log"
    s = FileSessionStore(p)
    s.save_outbound(1, b"A" * 100)
    s.save_outbound(2, b"B" * 100)
    s.sync()
    full = s.data_size
    s.close()
    with open(p, "r+b") as f:
        f.truncate(full - 30)           # cut the second record in half
    r = FileSessionStore(p)
    assert r.recovered_torn_bytes > 0
    assert r.next_out == 2
    assert r.get_outbound(1, 2) == [(1, b"A" * 100)]
    r.save_outbound(2, b"C")          # appends after the last good record
    r.sync()
    r.close()
    assert FileSessionStore(p).get_outbound(1, 2) == [(1, b"A" * 100), (2, b"C")]


def test_corrupted_record_is_cut_at_crc_mismatch(tmp_path):
    p = tmp_path / "S.log"
    s = FileSessionStore(p)
    s.save_outbound(1, b"x" * 50)
    s.save_outbound(2, b"y" * 50)
    end = s.data_size
    s.close()
    data = bytearray(p.read_bytes())
    data[end - 10] ^= 0xFF                  # inside the last record
    p.write_bytes(bytes(data))
    r = FileSessionStore(p)
    assert r.next_out == 2 and r.get_outbound(1, 5) == [(1, b"x" * 50)]


def test_not_a_store_is_a_clear_error(tmp_path):
    p = tmp_path / "S.log"
    p.write_bytes(b"hello world")
    with pytest.raises(StoreError, match="not a dcgateway session store"):
        FileSessionStore(p)


def test_reset_starts_afresh(tmp_path):
    p = tmp_path / "S.log"
    s = FileSessionStore(p)
    s.set_next_in(40)
    s.save_outbound(7, b"m")
    s.reset()
    assert (s.next_in, s.next_out, s.get_outbound(1, 100)) == (1, 1, [])
    s.save_outbound(1, b"new")
    s.close()
    r = FileSessionStore(p)
    assert (r.next_in, r.next_out) == (1, 2) and p.read_bytes().startswith(MAGIC)


def test_synced_state_survives_kill_9(tmp_path):
    """A child process syncs state, reports it, and is SIGKILLed while appending more; what it
    reported as synced is all there after reopen, and the file is usable."""
    p = tmp_path / "S.log"
    child = textwrap.dedent(f"""
        import sys
        from dcgateway.state.session_files import FileSessionStore
        s = FileSessionStore({str(p)!r})
        for i in range(1, 301):
            s.save_outbound(i, b"M%d" % i * 20)
            s.set_next_in(i + 1)
            if i % 10 == 0:
                s.sync()
                print(i, flush=True)
        i = 301
        while True:                  # keep appending until killed
            s.save_outbound(i, b"Z" * 500)
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    last = 0
    for line in proc.stdout:
        last = int(line)
        if last == 300:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert last == 300
    r = FileSessionStore(p)
    assert r.next_out >= 301 and r.next_in >= 301
    got = r.get_outbound(1, 300)
    assert [s for s, _ in got] == list(range(1, 301))
    assert got[41] == (42, b"M42" * 20)
    r.close()


def test_peek_reads_sequences_without_touching_a_torn_file(tmp_path):
    from dcgateway.state.session_files import peek_sequences
    p = tmp_path / "S.log"
    assert peek_sequences(p) is None
    s = FileSessionStore(p)
    s.set_next_in(12)
    s.save_outbound(4, b"x" * 40)
    s.sync()
    with open(p, "ab") as f:
        f.write(b"\x01\x02torn")            # a record being written right now
    size = p.stat().st_size
    assert peek_sequences(p) == (12, 5)
    assert p.stat().st_size == size          # nothing truncated
    s.close()


def test_a_zero_filled_reserve_is_kept_and_read_as_the_clean_end(tmp_path):
    """Room on a full disk: the file keeps zeros past its last record (so a Logout can still be
    recorded when the disk is full); reopening reads them as the end, not as a torn record."""
    from dcgateway.state.session_files import RESERVE_BYTES
    p = tmp_path / "S.log"
    s = FileSessionStore(p)
    s.save_outbound(1, b"A" * 100)
    s.sync()
    data = s.data_size
    s.close()
    assert p.stat().st_size >= data + RESERVE_BYTES * 3 // 4
    r = FileSessionStore(p)
    assert r.recovered_torn_bytes == 0 and r.next_out == 2 and r.data_size == data
    r.close()


def test_records_fit_in_the_reserve_when_the_disk_is_full(tmp_path, monkeypatch):
    """With no room to grow (every write past the file's current size fails, as on a full
    disk), a few admin records still go into the reserve and survive a reopen."""
    import errno
    import os as _os

    from dcgateway.state import session_files
    p = tmp_path / "S.log"
    s = FileSessionStore(p)
    real = _os.pwrite

    def full_disk(fd: int, data: bytes, offset: int) -> int:
        if offset + len(data) > _os.fstat(fd).st_size:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)
    monkeypatch.setattr(session_files.os, "pwrite", full_disk)
    for seq in range(1, 6):
        s.save_outbound(seq, b"Logout " * 10)
    s.sync()
    s.close()
    monkeypatch.undo()
    assert FileSessionStore(p).get_outbound(1, 5)[-1][0] == 5


def test_a_deferred_inbound_seq_is_written_now_and_then_not_per_read(tmp_path, monkeypatch):
    """A source's store (``defer_next_in``): its inbound seq is recovered from the journal, so
    the file's copy is written at most every DEFER_NEXT_IN_S, with an fsync'd batch, and on
    close, not once per read."""
    from dcgateway.state import session_files
    from dcgateway.state.session_files import peek_sequences
    clock = [1000.0]
    monkeypatch.setattr(session_files, "_clock", lambda: clock[0])
    p = tmp_path / "SRC.log"
    s = FileSessionStore(p, defer_next_in=True)
    s.set_next_in(2)
    s.sync()                                       # the first one is written
    assert peek_sequences(p) == (2, 1)
    size = s.data_size
    for i in range(3, 50):                        # reads within the same second
        s.set_next_in(i)
        s.sync()
    assert s.data_size == size and peek_sequences(p) == (2, 1) and s.next_in == 49
    clock[0] += session_files.DEFER_NEXT_IN_S
    s.sync()
    assert peek_sequences(p) == (49, 1)
    s.set_next_in(50)
    s.save_outbound(1, b"hb")                     # an fsync'd batch carries it along
    s.sync()
    assert peek_sequences(p) == (50, 2)
    s.set_next_in(51)
    s.settle()                                    # the source disconnected
    assert peek_sequences(p) == (51, 2)
    s.set_next_in(52)
    s.close()                                     # and a clean close
    assert peek_sequences(p) == (52, 2)
    # without defer_next_in every sync writes it
    q = FileSessionStore(tmp_path / "T.log")
    q.set_next_in(7)
    q.sync()
    assert peek_sequences(tmp_path / "T.log") == (7, 1)
    q.close()
