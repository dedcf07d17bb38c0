"""Where the sessions' own files are synced: in ``fsync`` durability their records (the
sequence numbers and admin messages sent) are fdatasync'd before the messages leave, on the
event loop; in ``os`` durability, which promises what survives the gateway's process and not
the machine, never (an fdatasync on the loop would stall every session on a slow disk)."""

from __future__ import annotations

import os
import threading

import pytest

from simulators.fixclient import get

from .test_fanout import close_all, connect_all

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("durability", ["os", "fsync"])
async def test_session_files_are_synced_on_the_loop_only_in_fsync_mode(
        start_gateway, monkeypatch, durability) -> None:
    synced: list[str] = []
    real = os.fdatasync
    loop_thread = threading.get_ident()

    def fdatasync(fd: int) -> None:
        if threading.get_ident() == loop_thread:
            path = os.readlink(f"/proc/self/fd/{fd}")
            if os.sep + "sessions" + os.sep in path:
                synced.append(os.path.basename(path))
        real(fd)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    rg = await start_gateway(extra=f"journal_durability: {durability}")
    clients = await connect_all(rg, "ABC123N", "CLRFIX44")
    src = clients["ABC123N"]
    src.send("1", [(112, "PING")])               # answered by a Heartbeat: an outbound record
    while True:
        m = await src.recv(10)
        assert m is not None
        if get(m, 35) == "0" and get(m, 112) == "PING":
            break
    await close_all(clients)
    if durability == "os":
        assert synced == []
    else:
        assert "ABC123N.log" in synced
