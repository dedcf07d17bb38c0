"""A drop copy target for load tests that keeps up with a gateway at full speed: plain bytes, no
FIX library on the read path (regexes find each copy's MsgSeqNum, PossDupFlag, ClOrdID and the
send time a test put in tag 9999); it answers TestRequests, and checks that its sequence is
gapless. Usable in-process (:class:`FastTarget`) or as its own process, so that a target
catching up on hundreds of thousands of copies does not share a CPU with what a test measures:

    python fasttarget.py HOST PORT COMP_ID ACCESS_KEY_ID SECRET EXPECTED SECONDS

reads nothing until a line arrives on stdin (a target that stopped reading), then reads until
EXPECTED copies arrived or SECONDS passed, and prints one JSON line of totals."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from pathlib import Path

_FRAME_END = re.compile(rb"\x0110=\d{3}\x01")
_SEQ = re.compile(rb"\x0134=(\d+)\x01")
_MSG_TYPE = re.compile(rb"\x0135=([^\x01]+)\x01")
_SENT_NS = re.compile(rb"\x019999=(\d+)\x01")
_TEST_REQ = re.compile(rb"\x01112=([^\x01]*)\x01")


class FastTarget(asyncio.Protocol):
    def __init__(self, client) -> None:
        self.client = client              # a simulators FixClient: builds and signs messages
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.next_seq = 0                 # next expected MsgSeqNum once logged on
        self.copies = 0
        self.gaps = 0
        self.dups = 0
        self.lags_ms: list[float] = []    # receive time - tag 9999 send time, per copy
        self.logged_on = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.client.logon_message(heartbeat=60))

    def data_received(self, data: bytes) -> None:
        now_ns = time.time_ns()
        buf = self.buf + data
        start = 0
        for m in _FRAME_END.finditer(buf):
            self._frame(buf[start:m.end()], now_ns)
            start = m.end()
        self.buf = buf[start:]

    def _frame(self, raw: bytes, now_ns: int) -> None:
        mt = _MSG_TYPE.search(raw)
        seq = _SEQ.search(raw)
        if mt is None or seq is None:
            return
        kind, n = mt.group(1), int(seq.group(1))
        if kind == b"A" and not self.logged_on.done():
            self.next_seq = n + 1
            self.logged_on.set_result(n)
            return
        if kind == b"1":
            req = _TEST_REQ.search(raw)
            assert self.transport is not None
            self.transport.write(self.client.build("0", [(112, req.group(1).decode()
                                                          if req else "")]))
        if n < self.next_seq:
            if b"\x0143=Y\x01" not in raw:
                self.dups += 1
            return
        if n > self.next_seq:
            self.gaps += 1
        self.next_seq = n + 1
        if kind == b"D":
            self.copies += 1
            sent = _SENT_NS.search(raw)
            if sent is not None:
                self.lags_ms.append((now_ns - int(sent.group(1))) / 1e6)

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def connect(client, host: str, port: int) -> FastTarget:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: FastTarget(client), host, port)
    await asyncio.wait_for(proto.logged_on, 10)
    return proto


async def _main(host: str, port: int, comp_id: str, access: str, secret: str, expected: int,
                seconds: float) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from dcgateway.auth import logon_signer
    from simulators.fixclient import FixClient
    client = FixClient(host, port, comp_id, begin_string="FIX.4.4", sender_sub_id="OPS",
                       signer=logon_signer(access, secret))
    target = await connect(client, host, port)
    assert target.transport is not None
    target.transport.pause_reading()                     # a target that stopped reading
    print("stalled", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    t0 = time.monotonic()
    target.transport.resume_reading()
    deadline = t0 + seconds
    while target.copies < expected and time.monotonic() < deadline and not target.closed.done():
        await asyncio.sleep(0.05)
    print(json.dumps({"copies": target.copies, "gaps": target.gaps, "dups": target.dups,
                      "seconds": round(time.monotonic() - t0, 3),
                      "closed": target.closed.done()}), flush=True)
    target.transport.close()


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(_main(a[0], int(a[1]), a[2], a[3], a[4], int(a[5]), float(a[6])))
