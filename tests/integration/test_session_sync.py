"""Where the sessions' own files are synced: never on the event loop once the gateway serves.
In ``fsync`` durability a background task fdatasyncs them in a worker thread (a slow disk stalls
no session: the sequence margin after a power loss is in tests/state/test_session_files.py); in
``os`` durability, which promises what survives the gateway's process and not the machine,
they are never fdatasync'd at all."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path

import pytest

from simulators.fixclient import get

from .conftest import REPO, write_config
from .test_fanout import close_all, connect_all, fill

pytestmark = pytest.mark.asyncio


def _session_file(fd: int) -> str | None:
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return os.path.basename(path) if os.sep + "sessions" + os.sep in path else None


async def _ping(src, text: str) -> None:
    """A TestRequest, answered by a Heartbeat: an outbound record in the source's file."""
    src.send("1", [(112, text)])
    while True:
        m = await src.recv(10)
        assert m is not None
        if get(m, 35) == "0" and get(m, 112) == text:
            return


async def _fsync_gateway(folder, start_gateway):
    """A gateway in ``fsync`` durability with the shipped groups (write_config empties them)."""
    write_config(folder, extra="journal_durability: fsync")
    shutil.copy(REPO / "config" / "groups.yaml", folder / "groups.yaml")
    return await start_gateway(folder)


def _continuing(rg, client):
    """A client of the restarted gateway ``rg`` that goes on with ``client``'s sequences."""
    again = rg.client(client.sender)
    again.next_seq, again.expected_in = client.next_seq, client.expected_in
    return again


async def _disconnected(rg, *names: str) -> None:
    for _ in range(200):
        if all(rg.gw.slots[n].connection is None for n in names):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{names}: still connected")


class _Hang:
    """``os.fdatasync`` of the files ``which(path)`` picks hangs outside the loop's thread
    until :meth:`release` (a dying disk); bounded, the test releases it long before."""

    def __init__(self, monkeypatch, which, armed: bool = True, limit: float = 30.0) -> None:
        self.armed = armed
        self.stuck = threading.Event()
        self._release = threading.Event()
        real = os.fdatasync
        loop_thread = threading.get_ident()

        def fdatasync(fd: int) -> None:
            try:
                path = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                path = ""
            if self.armed and which(path) and threading.get_ident() != loop_thread:
                self.stuck.set()
                self._release.wait(limit)
            real(fd)
        monkeypatch.setattr(os, "fdatasync", fdatasync)

    async def hanging(self) -> None:
        for _ in range(200):
            if self.stuck.is_set():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("no fdatasync hangs")

    def release(self) -> None:
        self._release.set()


async def _offline_copy_in_a_hung_journal(rg, hang: _Hang, exec_id: str):
    """A source's fill for CLRFIX44, which is offline, journaled while the journal's
    fdatasync hangs (not durable); the source's client."""
    src = (await connect_all(rg, "ABC123N"))["ABC123N"]
    src.send("8", fill(exec_id=exec_id))
    await hang.hanging()
    return src


async def _no_copy(tgt, seconds: float) -> None:
    """Nothing but session messages reaches ``tgt`` for ``seconds``."""
    try:
        while True:
            m = await tgt.recv(seconds)
            assert m is not None and get(m, 35) in ("0", "1"), m
    except asyncio.TimeoutError:
        pass


class _SessionDisk:
    """What the disk holds of the session files: each one's content at its last fdatasync,
    until ``frozen`` (the power is off); :meth:`power_loss` puts those contents back."""

    def __init__(self, monkeypatch) -> None:
        self.images: dict[str, bytes] = {}
        self.frozen = False
        real = os.fdatasync

        def fdatasync(fd: int) -> None:
            real(fd)
            if _session_file(fd) is not None and not self.frozen:
                path = os.readlink(f"/proc/self/fd/{fd}")
                self.images[path] = Path(path).read_bytes()
        monkeypatch.setattr(os, "fdatasync", fdatasync)

    async def synced(self, path) -> None:
        """Until everything written to ``path`` is on the disk (the background sync)."""
        for _ in range(100):
            if self.images.get(str(path)) == Path(path).read_bytes():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{path} was not synced")

    def power_loss(self) -> None:
        for p, data in self.images.items():
            Path(p).write_bytes(data)


@pytest.mark.parametrize("durability", ["os", "fsync"])
async def test_session_files_are_never_synced_on_the_loop(start_gateway, monkeypatch,
                                                          durability) -> None:
    on_loop: list[str] = []
    off_loop: list[str] = []
    real = os.fdatasync
    loop_thread = threading.get_ident()

    def fdatasync(fd: int) -> None:
        name = _session_file(fd)
        if name is not None:
            (on_loop if threading.get_ident() == loop_thread else off_loop).append(name)
        real(fd)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    rg = await start_gateway(extra=f"journal_durability: {durability}")
    on_loop.clear()                  # the start's own (before anything was sent) are allowed
    clients = await connect_all(rg, "ABC123N", "CLRFIX44")     # a target's Logon too
    await _ping(clients["ABC123N"], "PING")
    if durability == "fsync":        # the Heartbeat's record reaches the disk in the background
        for _ in range(100):         # (the round is counted once all its files are synced)
            if "ABC123N.log" in off_loop and \
                    rg.metric("dcgateway_session_files_fsync_duration_seconds_count") >= 1:
                break
            await asyncio.sleep(0.05)
        assert "ABC123N.log" in off_loop
        assert rg.metric("dcgateway_session_files_fsync_duration_seconds_count") >= 1
    else:
        await asyncio.sleep(3 * rg.gw.session_sync.interval)
        assert off_loop == []
        assert rg.metric("dcgateway_session_files_fsync_duration_seconds_count") == 0
    await close_all(clients)
    await _disconnected(rg, "ABC123N", "CLRFIX44")            # and its disconnect
    assert on_loop == []


async def test_a_target_logs_on_and_off_while_its_file_sync_hangs(folder, start_gateway,
                                                                  monkeypatch) -> None:
    """``fsync`` durability, the session files' fdatasync hangs: a target's Logon and its
    disconnect stall no session (their "delivered" notes are synced in the background), and no
    copy reaches the target before the note of its Logon is on the disk, which a reset after a
    power loss trusts."""
    hang = _Hang(monkeypatch, lambda p: os.sep + "sessions" + os.sep in p)
    rg = await _fsync_gateway(folder, start_gateway)
    try:
        src = (await connect_all(rg, "ABC123N"))["ABC123N"]
        await _ping(src, "P1")
        await hang.hanging()
        tgt = (await connect_all(rg, "CLRFIX44"))["CLRFIX44"]    # its Logon reply comes
        src.send("8", fill(exec_id="HELD1"))
        await _ping(src, "P2")                                  # the loop goes on
        assert rg.gw.outboxes["CLRFIX44"].held_at >= 0
        await _no_copy(tgt, 0.5)                                # the copy waits for the note
        hang.release()
        assert get(await tgt.expect("8", 10), 17) == "HELD1"
        assert rg.gw.outboxes["CLRFIX44"].held_at == -1
    finally:
        hang.release()
    await close_all({"s": src, "t": tgt})


async def test_a_target_logs_on_while_the_journal_sync_hangs(folder, start_gateway,
                                                            monkeypatch) -> None:
    """``fsync`` durability, the journal's fdatasync hangs with a copy for an offline target in
    it: the target's Logon stalls no session, and its ResendRequest is answered with the copy
    (PossDup) once the copy is durable, never with a GapFill in its place."""
    hang = _Hang(monkeypatch, lambda p: os.sep + "journal" + os.sep in p)
    rg = await _fsync_gateway(folder, start_gateway)
    try:
        src = await _offline_copy_in_a_hung_journal(rg, hang, "OFF1")
        tgt = rg.client("CLRFIX44")
        reply = await tgt.logon()
        assert get(reply, 35) == "A" and int(get(reply, 34)) == 2      # the copy took 1
        tgt.send("2", [(7, 1), (16, 0)])
        await _ping(src, "P1")                                  # the loop goes on
        await _no_copy(tgt, 0.3)                                # the answer waits...
        hang.release()
        copy = await tgt.expect("8", 10)                        # ...for the copy to be durable
        assert (get(copy, 17), get(copy, 34), get(copy, 43)) == ("OFF1", "1", "Y")
        gap = await tgt.expect("4", 10)                         # the Logon reply's seq
        assert (get(gap, 34), get(gap, 36)) == ("2", "3")
    finally:
        hang.release()
    await close_all({"s": src, "t": tgt})


async def test_a_stalled_session_file_fsync_stalls_no_session(folder, start_gateway,
                                                             monkeypatch) -> None:
    """``fsync`` durability: while the session files' fdatasync hangs (a dying disk), the
    sessions go on: a source's TestRequest is answered and its fill reaches the target (logged
    on before: the note of its Logon is on the disk)."""
    hang = _Hang(monkeypatch, lambda p: os.sep + "sessions" + os.sep in p, armed=False)
    rg = await _fsync_gateway(folder, start_gateway)
    clients = await connect_all(rg, "ABC123N", "CLRFIX44")
    try:
        src, tgt = clients["ABC123N"], clients["CLRFIX44"]
        for _ in range(200):
            if rg.gw.slots["CLRFIX44"].store.file.marker_synced:
                break
            await asyncio.sleep(0.01)
        hang.armed = True
        await _ping(src, "P1")
        await hang.hanging()         # a background fdatasync of a session file hangs now
        await _ping(src, "P2")
        src.send("8", fill(exec_id="STUCK1"))
        assert get(await tgt.expect("8", 10), 17) == "STUCK1"
    finally:
        hang.release()
    await close_all(clients)


async def test_after_a_power_loss_a_peer_sees_a_gap_never_a_number_twice(folder, start_gateway,
                                                                         monkeypatch) -> None:
    """``fsync`` durability, a modelled power loss: the session files put back as they were at
    their last fdatasync, and another boot id. The source saw Heartbeats whose records were
    lost; the restarted gateway's Logon reply is numbered past them, and the source's
    ResendRequest for the gap is answered by a GapFill."""
    from dcgateway.state import session_files
    disk = _SessionDisk(monkeypatch)
    write_config(folder, extra="journal_durability: fsync")
    rg = await start_gateway(folder)
    src = rg.client("ABC123N")
    assert get(await src.logon(), 35) == "A"
    await disk.synced(rg.gw.slots["ABC123N"].store.path)    # the Logon reply's record
    disk.frozen = True               # from here on nothing reaches the disk: the power is off
    for i in range(5):
        await _ping(src, f"P{i}")
    seen = src.expected_in - 1
    await src.close()
    await rg.stop()
    disk.power_loss()
    path = rg.gw.slots["ABC123N"].store.path
    assert (session_files.peek_sequences(path) or (0, 0))[1] <= seen   # the file alone reuses
    monkeypatch.setattr(session_files, "boot_id", lambda: b"after-the-power-loss")

    rg2 = await start_gateway(folder)
    again = _continuing(rg2, src)
    reply = await again.logon()
    assert get(reply, 35) == "A" and int(get(reply, 34)) > seen
    again.send("2", [(7, seen + 1), (16, 0)])
    expect, fills = seen + 1, 0      # GapFills from seen+1 past the Logon reply: the gap in
    while expect <= int(get(reply, 34)):         # one, the Logon reply (admin) in another
        fill_gap = await again.expect("4")
        assert get(fill_gap, 123) == "Y" and int(get(fill_gap, 34)) == expect
        expect = int(get(fill_gap, 36))
        assert expect > int(get(fill_gap, 34))
        fills += 1
    assert fills <= 2
    await again.close()


async def test_a_round_cancelled_at_the_stop_leaves_its_files_to_the_close(tmp_path,
                                                                           monkeypatch,
                                                                           caplog) -> None:
    """The gateway stops while a round's fdatasync hangs: the round is given up quietly (no
    error logged), and its files count as not synced, so the close fdatasyncs them."""
    import logging

    from dcgateway.runtime.session_sync import SessionFileSync
    from dcgateway.state.session_files import FileSessionStore
    store = FileSessionStore(tmp_path / "sessions" / "A.log")
    store.save_outbound(1, b"Heartbeat")
    real = os.fdatasync
    release = threading.Event()
    entered = threading.Event()

    def fdatasync(fd: int) -> None:
        if threading.current_thread() is not threading.main_thread():
            entered.set()
            release.wait(30)
        real(fd)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    sync = SessionFileSync([store])
    task = asyncio.create_task(sync.sync_once())
    for _ in range(200):
        if entered.is_set():
            break
        await asyncio.sleep(0.01)
    assert entered.is_set() and store.begin_sync() is None     # in flight
    with caplog.at_level(logging.WARNING):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    release.set()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    ticket = store.begin_sync()                                 # not synced: taken again
    assert ticket is not None
    os.close(ticket[0])
    store.close()


async def test_after_a_power_loss_a_target_continues_past_its_copies_and_heartbeats(
        folder, start_gateway, monkeypatch) -> None:
    """A target's seqs are shared by its copies (in the journal, fsynced before they leave) and
    its Heartbeats (in its session file): after a power loss that took the Heartbeats' records,
    the Logon reply is numbered past both, not at the journal's next seq, which it saw."""
    from dcgateway.state import session_files
    disk = _SessionDisk(monkeypatch)
    rg = await _fsync_gateway(folder, start_gateway)
    clients = await connect_all(rg, "ABC123N", "CLRFIX44")
    src, tgt = clients["ABC123N"], clients["CLRFIX44"]
    await disk.synced(rg.gw.slots["CLRFIX44"].store.file.path)
    disk.frozen = True
    await _ping(tgt, "T1")           # a Heartbeat: its record is lost
    src.send("8", fill(exec_id="PL1"))
    assert get(await tgt.expect("8"), 17) == "PL1"        # a copy: in the journal
    await _ping(tgt, "T2")           # the seq right after the copy, lost too
    seen = tgt.expected_in - 1
    await close_all(clients)
    await rg.stop()
    disk.power_loss()
    monkeypatch.setattr(session_files, "boot_id", lambda: b"after-the-power-loss")

    rg2 = await start_gateway(folder)
    again = _continuing(rg2, tgt)
    reply = await again.logon()
    assert get(reply, 35) == "A" and int(get(reply, 34)) > seen
    asked = await again.expect("2")  # its TestRequests' inbound seqs were lost too: asked again
    again.gap_fill(int(get(asked, 7)), again.next_seq)
    src2 = _continuing(rg2, src)
    assert get(await src2.logon(), 35) == "A"
    src2.send("8", fill(exec_id="PL2"))           # a copy journaled past the margin
    assert get(await again.expect("8"), 17) == "PL2"
    last = again.expected_in - 1
    again.send("2", [(7, seen - 2), (16, 0)])    # from the lost Heartbeat T1 on
    got: list = []

    def reached(m) -> int:           # the last seq a GapFill or a message answers
        return int(get(m, 36)) - 1 if get(m, 35) == "4" else int(get(m, 34))
    while not got or reached(got[-1]) < last:
        m = await again.recv(10)
        assert m is not None
        if get(m, 35) in ("4", "8"):
            got.append(m)
    # the Heartbeat gap-filled, the copy again (PossDup), the margin in one GapFill, the Logon
    # reply's, the new copy again: not one GapFill per 200 seqs of the margin
    assert [get(m, 35) for m in got] == ["4", "8", "4", "4", "8"]
    assert [get(m, 17) for m in got if get(m, 35) == "8"] == ["PL1", "PL2"]
    assert all(get(m, 43) == "Y" for m in got)
    await close_all({"t": again, "s": src2})


async def test_a_target_resets_at_its_logon_while_the_journal_sync_hangs(folder, start_gateway,
                                                                        monkeypatch) -> None:
    """``fsync`` durability: a target logs on with 141=Y while the copy routed to it is not
    durable yet: the copy is carried over into the new sequence (after the Logon reply, seq 1)
    and arrives once durable, not dropped for want of a durable record to carry. (The reset's
    own journal record is made durable on the loop, so the slow fdatasync lasts 1 s here.)"""
    hang = _Hang(monkeypatch, lambda p: os.sep + "journal" + os.sep in p, limit=1.0)
    rg = await _fsync_gateway(folder, start_gateway)
    try:
        src = await _offline_copy_in_a_hung_journal(rg, hang, "RST1")
        tgt = rg.client("CLRFIX44")
        reply = await tgt.logon(reset=True)
        assert (get(reply, 35), get(reply, 34), get(reply, 141)) == ("A", "1", "Y")
        copy = await tgt.expect("8", 10)
        assert (get(copy, 17), get(copy, 34), get(copy, 43)) == ("RST1", "2", None)
    finally:
        hang.release()
    await close_all({"s": src, "t": tgt})


async def test_a_source_resets_at_its_logon_while_the_journal_sync_hangs(folder, start_gateway,
                                                                        monkeypatch) -> None:
    """``fsync`` durability: a source logs on with 141=Y while the journal's fdatasync hangs.
    Its Logon reply waits until the journal's marker (next inbound seq 1) is durable, and only
    its reply: another source's TestRequest is answered meanwhile."""
    hang = _Hang(monkeypatch, lambda p: os.sep + "journal" + os.sep in p, armed=False)
    rg = await _fsync_gateway(folder, start_gateway)
    try:
        other = (await connect_all(rg, "ABD123N"))["ABD123N"]
        hang.armed = True
        src = rg.client("ABC123N")
        await src.connect()
        src.send_raw(src.logon_message(reset=True))
        await hang.hanging()
        await _ping(other, "P1")                                # the loop goes on
        with pytest.raises(asyncio.TimeoutError):
            await src.recv(0.3)                                 # the reply waits...
        j = rg.gw.journal
        assert j.durable_lsn < j.appended_lsn
        hang.release()
        reply = await src.recv(10)                              # ...for the marker
        assert reply is not None and (get(reply, 35), get(reply, 141)) == ("A", "Y")
        assert j._source_next["ABC123N"] == 2 and j.durable_lsn == j.appended_lsn
    finally:
        hang.release()
    await close_all({"s": src, "o": other})


async def test_a_round_syncs_the_files_copies_wait_for_first(tmp_path, monkeypatch) -> None:
    """A target's copies wait for its Logon's marker: its file is fdatasync'd in a pass of its
    own, and the held copies are let go (``after_round``) before every other session's file."""
    from dcgateway.runtime.session_sync import SessionFileSync
    from dcgateway.state.session_files import FileSessionStore
    busy = [FileSessionStore(tmp_path / "sessions" / f"S{i}.log") for i in range(3)]
    target = FileSessionStore(tmp_path / "sessions" / "T.log")
    events: list[str] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        events.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)
    sync = SessionFileSync(busy + [target], after_round=lambda: events.append("released"))
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    for i, f in enumerate(busy):
        f.save_outbound(1, b"Heartbeat %d" % i)
    target.set_delivered(-1)                 # the target logs on
    assert not target.marker_synced
    await sync.sync_once()
    assert events[:2] == ["T.log", "released"]
    assert sorted(events[2:-1]) == ["S0.log", "S1.log", "S2.log"] and events[-1] == "released"
    assert target.marker_synced
    for f in busy + [target]:
        f.close()
