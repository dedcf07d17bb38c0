"""A full disk, as the README promises to handle it: the source that was sending is logged out
with the reason and asked again for everything not journaled once it is back; Logons during the
outage are answered (after authentication) with a Logout that says why; /healthz is 503 while
the journal cannot be written, also right after a restart on a full disk; no traceback reaches
the log; nothing is lost once space is freed.

The disk is made "full" for the gateway's data_dir only: every write that would grow a file
under it fails with ENOSPC (writes into blocks a file already has succeed, as on a real full
disk: the journal's zero-filled segment tail and the session stores' reserve)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dcgateway.errors import DcGatewayError
from simulators.fixclient import FixClient, get

from .conftest import write_config
from .test_fanout import close_all, connect_all, drain, new_order

pytestmark = pytest.mark.asyncio

GROUPS = ("groups:\n  - {entity: CLEARCO, name: all, front_end: fix, filters: {categories: "
          "[execution, acknowledgment, order]}, sources: [ABC123N], targets: [CLRFIX44]}\n")


class Disk:
    """ENOSPC for any write that would grow a file under ``root`` while ``full``."""

    def __init__(self, root: Path) -> None:
        self.root = str(root.resolve())
        self.full = False

    def _refuse(self, fd: int, offset: int, n: int) -> bool:
        if not self.full:
            return False
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return False
        return path.startswith(self.root) and offset + n > os.fstat(fd).st_size


@pytest.fixture
def disk(monkeypatch, tmp_path) -> Disk:
    d = Disk(tmp_path / "gw" / "var")
    real_pwrite, real_write = os.pwrite, os.write

    def pwrite(fd: int, data, offset: int) -> int:
        if d._refuse(fd, offset, len(data)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    def write(fd: int, data) -> int:
        if d._refuse(fd, os.lseek(fd, 0, os.SEEK_CUR) if d.full else 0, len(data)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "write", write)
    return d


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def wait_for(pred, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await pred():
            return True
        await asyncio.sleep(0.1)
    return await pred()


def folder(tmp_path: Path) -> Path:
    f = tmp_path / "gw"
    write_config(f)
    (f / "groups.yaml").write_text(GROUPS)
    return f


async def answer_resends(src: FixClient, sent: dict[int, str], until: str,
                         timeout: float = 20.0) -> None:
    """Play the source's FIX engine: resend what the gateway asks for (43=Y, 122), until the
    TestRequest ``until`` is answered."""
    src.send("1", [(112, until)])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        m = await src.recv(max(0.01, deadline - loop.time()))
        assert m is not None, "the gateway closed the source"
        if get(m, 35) == "2":
            for seq in range(int(get(m, 7)), (int(get(m, 16)) or src.next_seq - 1) + 1):
                if seq in sent:
                    src.send("D", new_order(sent[seq]), seq=seq, poss_dup=True,
                             orig_sending_time=get(m, 52))
                else:
                    src.send("4", [(123, "Y"), (36, seq + 1)], seq=seq, poss_dup=True,
                             orig_sending_time=get(m, 52))
        elif get(m, 35) == "0" and get(m, 112) == until:
            return
    raise AssertionError("no answer to the TestRequest")


async def test_a_full_disk_is_handled_as_documented(tmp_path, start_gateway, disk, caplog):
    gw = await start_gateway(folder(tmp_path))
    port = gw.gw.metrics_port
    cl = await connect_all(gw, "ABC123N", "CLRFIX44")
    src, tgt = cl["ABC123N"], cl["CLRFIX44"]
    sent: dict[int, str] = {}
    for i in range(10):
        sent[src.next_seq] = f"B{i}"
        src.send("D", new_order(f"B{i}"))
    assert len(await drain(tgt, count=10)) == 10

    disk.full = True
    logout = None
    for k in range(200):                                   # until the gateway says why
        for i in range(50):
            sent[src.next_seq] = f"F{k}-{i}"
            src.send("D", new_order(f"F{k}-{i}"))
        try:
            m = await src.recv(0.02)
        except asyncio.TimeoutError:
            continue
        while m is not None and get(m, 35) != "5":
            m = await src.recv(1)
        logout = m
        break
    assert logout is not None and "cannot store" in get(logout, 58), logout
    await src.close()

    code, body = await asyncio.to_thread(healthz, port)
    assert code == 503 and "journal is not writable" in body and "No space left" in body
    other = gw.client("ABD123N")                            # authenticated: told why
    reply = await other.logon()
    assert get(reply, 35) == "5" and "storage fault" in get(reply, 58), get(reply, 58)
    await other.close()

    disk.full = False                                       # space is freed
    assert await wait_for(lambda: asyncio.to_thread(lambda: healthz(port)[0] == 200), 15)
    again = gw.client("ABC123N")
    again.next_seq = src.next_seq                           # the engine's own sequence
    assert get(await again.logon(), 35) == "A"
    await answer_resends(again, sent, "after-the-outage")
    copies = await drain(tgt, count=len(sent))
    assert [get(m, 11) for m in copies if get(m, 35) == "D"] == \
        [sent[s] for s in sorted(sent)][10:]                # every order once, in order
    assert not [r for r in caplog.records if r.exc_info], "a traceback reached the log"
    await again.close()
    await tgt.close()


async def test_a_restart_on_a_full_disk_is_not_healthy(tmp_path, start_gateway, disk):
    f = folder(tmp_path)
    gw = await start_gateway(f)
    await gw.stop()
    disk.full = True
    gw2 = await start_gateway(f)
    code, body = await asyncio.to_thread(healthz, gw2.gw.metrics_port)
    assert code == 503 and "journal is not writable" in body
    c = gw2.client("ABC123N")
    reply = await c.logon()
    assert get(reply, 35) == "5" and "storage fault" in get(reply, 58)
    await c.close()
    disk.full = False
    assert await wait_for(
        lambda: asyncio.to_thread(lambda: healthz(gw2.gw.metrics_port)[0] == 200), 15)
    c = gw2.client("ABC123N")
    assert get(await c.logon(reset=True), 35) == "A"
    await c.close()


async def test_a_stop_on_a_full_disk_is_bounded_and_says_what_was_not_stored(
        tmp_path, start_gateway, disk, caplog, monkeypatch):
    """SIGTERM while the journal cannot be written: the stop waits for it a bounded time, then
    goes on and says how many records were not on the disk (the sources are asked for them at
    the next start); no traceback."""
    import dcgateway.gateway as gateway_module
    monkeypatch.setattr(gateway_module, "STOP_FLUSH_S", 1.0)
    gw = await start_gateway(folder(tmp_path))
    cl = await connect_all(gw, "ABC123N", "CLRFIX44")
    disk.full = True
    for i in range(20):
        cl["ABC123N"].send("D", new_order(f"S{i}"))
    assert await wait_for(lambda: asyncio.sleep(0, gw.gw.journal.appended_lsn
                                                > gw.gw.journal.durable_lsn), 10)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        await gw.stop()
    except DcGatewayError as exc:                       # the journal could not close cleanly
        assert "recovered at the next start" in str(exc)
    assert loop.time() - t0 < 12
    stopped = [r.getMessage() for r in caplog.records
               if "stopping without a durable journal" in r.getMessage()]
    assert stopped and "records not on the disk" in stopped[0], stopped
    assert not [r for r in caplog.records if r.exc_info], "a traceback reached the log"
    await close_all(cl)


@pytest.fixture(autouse=True)
def _info_logs(caplog):
    caplog.set_level(logging.INFO)
