"""FileSessionStore: sequences and sent messages survive reopen and kill -9; torn records dropped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    """A torn tail is cut; what was lost with it may have been sent (a process crash alone
    hardly tears a record), so the outbound seq continues past the margin."""
    from dcgateway.state.session_files import UNSYNCED_LIMIT
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
    assert r.recovered_torn_bytes > 0 and r.after_power_loss
    assert r.next_out == 2 + UNSYNCED_LIMIT
    assert r.get_outbound(1, 2) == [(1, b"A" * 100)]
    r.save_outbound(r.next_out, b"C")     # appends after the last good record
    r.sync()
    r.close()
    assert FileSessionStore(p).get_outbound(1, 2 + UNSYNCED_LIMIT) == [
        (1, b"A" * 100), (2 + UNSYNCED_LIMIT, b"C")]


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
    assert r.recovered_torn_bytes > 0 and r.get_outbound(1, 5) == [(1, b"x" * 50)]


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
    assert r.recovered_torn_bytes == 0 and r.next_out == 2
    assert data < r.data_size < data + 100      # + the CLOSED and OPEN records, nothing cut
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


# -- power loss: the records not fdatasync'd are gone, and no outbound seq is used twice ----------

class _Disk:
    """What the disk holds of one file: its content at its last fdatasync (wraps
    ``os.fdatasync``, with ``mp`` a MonkeyPatch). :meth:`power_loss` puts that content back,
    as a machine that stopped leaves it, and the next boot has another id."""

    def __init__(self, path, mp) -> None:
        from dcgateway.state import session_files
        self.path = path
        self.image = b""
        self.mp = mp
        self.boots = 0
        real = os.fdatasync

        def fdatasync(fd: int) -> None:
            real(fd)
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                self.image = path.read_bytes()
        mp.setattr(session_files.os, "fdatasync", fdatasync)

    def background(self, store: FileSessionStore) -> None:
        """One round of the background sync of ``store``: begun, fdatasync'd, ended."""
        ticket = store.begin_sync()
        if ticket is not None:
            os.fdatasync(ticket[0])
            os.close(ticket[0])
            store.end_sync(ticket, None, 0.0)

    def power_loss(self, floor: int = 1) -> FileSessionStore:
        from dcgateway.state import session_files
        self.path.write_bytes(self.image)
        self.boots += 1
        self.mp.setattr(session_files, "boot_id", lambda n=self.boots: b"boot-after-%d" % n)
        return FileSessionStore(self.path, floor=floor)


def test_a_process_crash_costs_no_gap_and_a_clean_stop_none_after_a_reboot(tmp_path,
                                                                            monkeypatch):
    from dcgateway.state import session_files
    p = tmp_path / "S.log"
    s = FileSessionStore(p)
    s.save_outbound(1, b"one")
    s.sync()
    del s                                   # not closed: the process died, the boot is the same
    r = FileSessionStore(p, floor=9)
    assert not r.after_power_loss and r.next_out == 2
    r.close()                               # a clean stop, then a reboot
    monkeypatch.setattr(session_files, "boot_id", lambda: b"another-boot")
    r = FileSessionStore(p, floor=9)
    assert not r.after_power_loss and r.next_out == 2
    r.close()


def test_a_file_from_before_the_boot_records_is_taken_as_clean_and_marked(tmp_path,
                                                                          monkeypatch):
    """A file written by a version that did not record the boot was fdatasync'd per batch; it
    is marked with the new magic, so that version refuses it rather than cut it short."""
    from dcgateway.state import session_files
    from dcgateway.state.session_files import _REC_OUT, MAGIC_V1, _record
    p = tmp_path / "S.log"
    p.write_bytes(MAGIC_V1 + _record(_REC_OUT, 1, b"one") + _record(_REC_OUT, 2, b"two"))
    monkeypatch.setattr(session_files, "boot_id", lambda: b"another-boot")
    r = FileSessionStore(p)
    assert not r.after_power_loss and r.next_out == 3
    assert r.get_outbound(1, 2) == [(1, b"one"), (2, b"two")]
    r.close()
    assert p.read_bytes().startswith(MAGIC) and MAGIC != MAGIC_V1


def test_after_a_power_loss_the_outbound_seq_continues_past_what_was_sent(tmp_path,
                                                                         monkeypatch):
    from dcgateway.state.session_files import UNSYNCED_LIMIT
    p = tmp_path / "S.log"
    disk = _Disk(p, monkeypatch)
    s = FileSessionStore(p)
    s.save_outbound(1, b"synced")
    s.sync()
    disk.background(s)
    for seq in range(2, 40):                # sent, never fdatasync'd
        s.save_outbound(seq, b"Heartbeat")
        s.sync()
    image = disk.image
    r = disk.power_loss()
    assert r.after_power_loss
    assert r.next_out == 2 + UNSYNCED_LIMIT  # the file alone would have reused 2..39
    disk.image = image
    with_copies = disk.power_loss(floor=500)    # a target whose copies reach 499 in the journal
    assert with_copies.next_out == 500 + UNSYNCED_LIMIT
    again = disk.power_loss()               # and a power loss right after that restart
    assert again.after_power_loss and again.next_out >= 500 + 2 * UNSYNCED_LIMIT
    again.close()


def test_a_targets_delivered_marker_is_on_the_disk_before_copies_leave(tmp_path, monkeypatch):
    """A reset after a power loss carries over what the marker says never left: the marker is
    fdatasync'd at once, at the target's Logon (unknown) and disconnect (the last seq)."""
    p = tmp_path / "T.log"
    disk = _Disk(p, monkeypatch)
    s = FileSessionStore(p)
    s.set_delivered(-1)                     # logged on
    r = disk.power_loss()
    assert r.delivered == -1
    r.set_delivered(30)                     # disconnected after seq 30 was handed out
    again = disk.power_loss()
    assert again.delivered == 30
    again.close()


def test_with_a_background_sync_the_marker_is_durable_after_its_round(tmp_path, monkeypatch):
    """In the gateway the marker is synced by a background round asked for at once (the
    target's copies wait for :attr:`marker_synced`, not the loop): a round begun before the
    marker does not cover it, the next one does, and a power loss before that finds the old
    marker (which is why the copies wait)."""
    p = tmp_path / "T.log"
    disk = _Disk(p, monkeypatch)
    s = FileSessionStore(p)
    s.set_delivered(30)                     # (no background sync yet: synced here and now)
    assert s.marker_synced and disk.image == p.read_bytes()
    asked: list[int] = []
    s.sync_soon = lambda: asked.append(1)
    early = s.begin_sync()                  # (nothing to cover yet)
    assert early is None
    s.save_outbound(1, b"Heartbeat")
    early = s.begin_sync()                  # a round under way...
    s.set_delivered(-1)                     # ...when the target logs on
    assert asked == [1] and not s.marker_synced

    def on_disk() -> int | None:           # the marker a power loss now would leave
        copy = tmp_path / "copy" / "T.log"
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(disk.image)
        r = FileSessionStore(copy, fsync=False)
        r.close()
        return r.delivered
    assert on_disk() == 30                  # not on the disk yet
    assert early is not None
    os.fdatasync(early[0])
    os.close(early[0])
    s.end_sync(early, None, 0.0)
    assert not s.marker_synced              # written after that round began
    disk.background(s)
    assert s.marker_synced and on_disk() == -1
    s.close()


def test_after_a_failed_fdatasync_the_marker_never_counts_as_synced(tmp_path):
    """Linux reports a writeback error once: a later round's success proves nothing about the
    marker, so the target's copies stay held (and its next batch fails, as before)."""
    s = FileSessionStore(tmp_path / "T.log")
    s.sync_soon = lambda: None
    s.set_delivered(-1)
    failed = s.begin_sync()
    assert failed is not None
    os.close(failed[0])
    s.end_sync(failed, OSError(5, "Input/output error"), 0.0)
    again = s.begin_sync()                  # the next round "succeeds"
    assert again is not None
    os.close(again[0])
    s.end_sync(again, None, 0.0)
    assert not s.marker_synced
    s.save_outbound(1, b"Heartbeat")
    with pytest.raises(StoreError):
        s.sync()
    s.close()


def test_copies_carried_over_a_reset_are_in_the_fresh_file_until_done(tmp_path):
    """A reset keeps the copies a target never received in the fresh file (magic DCGWSS03,
    which an older release refuses rather than cut), with the new sequence's "delivered"
    marker, until the next reset."""
    from dcgateway.state.session_files import MAGIC_V3, peek_sequences
    p = tmp_path / "T.log"
    s = FileSessionStore(p)
    s.save_outbound(1, b"old")
    carry = [("ABC123N", 7, 1_780_000_000.25, b"8=FIX.4.2\x019=5\x0135=8\x0110=000\x01"),
             ("ABD123N", 9, 1_780_000_001.5, b"raw")]
    s.reset(carry, delivered=0)
    assert s.carried == carry and p.read_bytes().startswith(MAGIC_V3) and s.delivered == 0
    s.save_outbound(1, b"Logon")
    s.close()
    r = FileSessionStore(p)
    assert r.carried == carry and r.next_out == 2 and r.delivered == 0
    assert peek_sequences(p) == (1, 2)
    r.reset(delivered=-1)                   # nothing to carry: the usual magic
    assert p.read_bytes().startswith(MAGIC) and r.carried == [] and r.delivered == -1
    r.close()
    again = FileSessionStore(p)
    assert again.carried == [] and again.delivered == -1
    again.close()


def test_a_reset_that_cannot_write_its_fresh_file_leaves_the_old_one(tmp_path, monkeypatch):
    from dcgateway.state import session_files
    p = tmp_path / "T.log"
    s = FileSessionStore(p)
    s.save_outbound(1, b"old")
    real = os.write
    monkeypatch.setattr(session_files.os, "write",
                        lambda fd, data: real(fd, data[:len(data) // 2]))   # a full disk
    with pytest.raises(StoreError, match="cannot reset"):
        s.reset([("ABC123N", 1, 0.0, b"x" * 1000)])
    monkeypatch.setattr(session_files.os, "write", real)
    assert s.next_out == 2 and not (tmp_path / "T.tmp").exists()
    s.close()
    assert FileSessionStore(p).next_out == 2


def test_a_reset_file_knows_it_was_open_at_a_power_loss(tmp_path, monkeypatch):
    p = tmp_path / "S.log"
    disk = _Disk(p, monkeypatch)
    s = FileSessionStore(p)
    s.save_outbound(1, b"old")
    s.reset()                               # a fresh file, fsync'd with its OPEN record
    disk.image = p.read_bytes()             # (the reset fsyncs a temporary file, then renames)
    s.save_outbound(1, b"Logon")
    s.sync()
    r = disk.power_loss()
    assert r.after_power_loss and r.next_out > 1


def test_a_background_sync_credits_only_what_was_written_before_it_began(tmp_path,
                                                                        monkeypatch):
    from dcgateway.state import session_files
    monkeypatch.setattr(session_files, "UNSYNCED_LIMIT", 2)
    p = tmp_path / "S.log"
    disk = _Disk(p, monkeypatch)
    s = FileSessionStore(p)
    s.save_outbound(1, b"a")
    ticket = s.begin_sync()
    assert ticket is not None and s.begin_sync() is None      # nothing new meanwhile
    s.save_outbound(2, b"b")                # written after the sync began
    os.fdatasync(ticket[0])
    before = disk.image
    os.close(ticket[0])
    s.end_sync(ticket, None, 0.0)
    s.save_outbound(3, b"c")
    s.sync()                                # 2 and 3 uncovered: the limit, so it waits
    assert disk.image != before and disk.image == p.read_bytes()
    s.close()


def test_a_background_sync_begun_before_a_reset_credits_nothing_after_it(tmp_path):
    s = FileSessionStore(tmp_path / "S.log")
    s.save_outbound(1, b"a")
    ticket = s.begin_sync()
    assert ticket is not None
    s.reset()
    for seq in range(1, 4):
        s.save_outbound(seq, b"b")
    os.close(ticket[0])
    s.end_sync(ticket, None, 0.0)
    assert s._out_records - s._synced_records == 3
    s.close()


def test_past_the_unsynced_limit_a_batch_waits_for_its_fdatasync(tmp_path, monkeypatch):
    """The bound that makes the margin safe: with the background sync stalled, the batch that
    reaches UNSYNCED_LIMIT outbound records (a jump of the seq counts as its length) is
    fdatasync'd before its messages leave."""
    from dcgateway.state import session_files
    monkeypatch.setattr(session_files, "UNSYNCED_LIMIT", 5)
    p = tmp_path / "S.log"
    disk = _Disk(p, monkeypatch)
    s = FileSessionStore(p)
    opened = disk.image
    for seq in range(1, 5):
        s.save_outbound(seq, b"x")
        s.sync()
    assert disk.image == opened             # four unsynced: nothing waited
    s.save_outbound(5, b"x")
    s.sync()
    assert disk.image == p.read_bytes()     # the fifth batch waited for the disk
    synced = disk.image
    s.set_next_out(s.next_out + 10)         # one record, ten seqs
    s.sync()
    assert disk.image != synced and disk.image == p.read_bytes()
    s.close()


def test_a_failed_background_fdatasync_is_final_for_the_file(tmp_path, monkeypatch):
    """Linux reports a writeback error once: after it, a successful fdatasync proves nothing.
    The session's next batch that sends something fails, and no clean close is recorded, so
    the next start after a reboot continues past the gap."""
    import errno

    from dcgateway.errors import StoreError
    from dcgateway.state import session_files
    p = tmp_path / "S.log"
    s = FileSessionStore(p)
    s.save_outbound(1, b"a")
    s.sync()
    ticket = s.begin_sync()
    assert ticket is not None
    os.close(ticket[0])
    s.end_sync(ticket, OSError(errno.EIO, "Input/output error"), 0.0)
    ticket = s.begin_sync()                 # retried, and "succeeds"
    assert ticket is not None
    os.close(ticket[0])
    s.end_sync(ticket, None, 0.0)
    s.save_outbound(2, b"b")
    with pytest.raises(StoreError, match="Input/output error"):
        s.sync()
    s.close()
    monkeypatch.setattr(session_files, "boot_id", lambda: b"another-boot")
    r = FileSessionStore(p)
    assert r.after_power_loss
    r.close()


def test_no_descriptor_for_a_background_sync_leaves_the_file_to_the_next_round(tmp_path,
                                                                              monkeypatch):
    import errno

    from dcgateway.state import session_files
    s = FileSessionStore(tmp_path / "S.log")
    s.save_outbound(1, b"a")

    def no_fd(fd: int) -> int:
        raise OSError(errno.EMFILE, "Too many open files")
    monkeypatch.setattr(session_files.os, "dup", no_fd)
    assert s.begin_sync() is None
    monkeypatch.undo()
    ticket = s.begin_sync()
    assert ticket is not None
    os.close(ticket[0])
    s.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["send", "send", "send", "batch", "sync", "in", "jump"]),
                max_size=60),
       st.integers(min_value=1, max_value=6))
def test_no_outbound_seq_a_peer_saw_is_used_again_after_a_power_loss(tmp_path_factory, ops,
                                                                    limit):
    """Any interleaving of sends, seq jumps, batches (sync before the bytes leave), background
    syncs and inbound seqs, then a power loss: the seq the session continues with is above
    every seq that left."""
    from dcgateway.state import session_files
    p = tmp_path_factory.mktemp("pl") / "S.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(session_files, "UNSYNCED_LIMIT", limit)
        mp.setattr(session_files, "boot_id", lambda: b"boot-1")
        disk = _Disk(p, mp)
        s = FileSessionStore(p)
        pending, sent = 0, 0
        for op in ops:
            if op == "send":
                seq = s.next_out
                s.save_outbound(seq, b"m%d" % seq)
                pending = seq
            elif op == "jump":              # e.g. a cluster node adopting the stream's seq
                s.set_next_out(s.next_out + 3)
            elif op == "batch":
                s.sync()
                sent = max(sent, pending)   # the batch's bytes leave after sync() returned
            elif op == "sync":
                disk.background(s)
            else:
                s.set_next_in(s.next_out + 2)
        r = disk.power_loss()
        assert r.next_out > sent
        r.close()


def test_the_margin_is_remembered_as_never_used_and_stored_seqs_are_found(tmp_path,
                                                                          monkeypatch):
    """A resend over the margin is one GapFill (dcgateway.fix.resend): the file remembers the
    run it skipped, across restarts, and finds the next stored seq without a scan."""
    from dcgateway.state.session_files import UNSYNCED_LIMIT
    p = tmp_path / "T.log"
    disk = _Disk(p, monkeypatch)
    s = FileSessionStore(p)
    s.save_outbound(1, b"Logon")
    s.sync()
    disk.background(s)
    r = disk.power_loss(floor=40)           # copies up to 39 in the journal
    assert r.skipped == [(40, 39 + UNSYNCED_LIMIT)]
    assert r.skipped_to(41) == 40 + UNSYNCED_LIMIT and r.skipped_to(39) == 39
    r.save_outbound(r.next_out, b"Logon again")
    r.close()
    again = FileSessionStore(p)
    assert again.skipped == [(40, 39 + UNSYNCED_LIMIT)]
    assert again.next_stored(2, 10**6) == 40 + UNSYNCED_LIMIT
    assert again.next_stored(1, 10**6) == 1 and again.next_stored(2, 100) == 101
    again.reset()
    assert again.skipped == [] and again.next_stored(1, 5) == 6
    again.close()
