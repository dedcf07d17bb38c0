"""Recovery benchmark: a target catching up on a backlog, and a gateway restarting with it.

* catch-up: a target that was offline while the source sent --backlog messages logs on and asks
  for them with ResendRequests of --request-chunk messages (2500, the venue's cap: the next
  request when the previous chunk has arrived), or with one request for everything (16=0, as
  QuickFIX does) with --request-chunk 0; the gateway answers each whole, from the journal, in
  slices that share its loop; catchup_msgs_per_s = backlog / time from the first request to the
  last copy received.
* restart: the gateway is stopped (SIGTERM) and started again with the backlog journaled;
  restart_s = from process start to the listener being up (journal recovery included);
  also after a kill -9 (restart_after_kill_s), where the journal has no clean close.

Prints one JSON line: {"bench": "recovery", "backlog": N, "catchup_msgs_per_s": ..., "restart_s": ...}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from fanout import GATEWAY, SOURCE, make_keys, target_ids, write_config  # noqa: E402

from dcgateway.auth import logon_signer  # noqa: E402
from dcgateway.fix.codec import encode  # noqa: E402
from dcgateway.fix.timefmt import utc_timestamp  # noqa: E402
from simulators.fixclient import FixClient  # noqa: E402

TARGET = target_ids(1)[0]


def execution_report(seq: int, st: bytes) -> bytes:
    """A valid FIX 4.2 ExecutionReport (a partial fill) from the source, MsgSeqNum ``seq``."""
    head = b"49=%s\x0156=%s\x0134=%d\x0150=OPS\x0152=%s\x01" % (
        SOURCE.encode(), GATEWAY.encode(), seq, st)
    body = (b"37=O%d\x0111=C%d\x0117=E%d\x0120=0\x01150=1\x0139=1\x011=ACCT01\x0155=ESZ6\x01"
            b"207=XCME\x0154=1\x0138=10\x0144=4512.25\x0132=4\x0131=4512.25\x01151=6\x01"
            b"14=4\x016=4512.25\x0160=%s\x01" % (seq, seq, seq, st))
    return encode(b"FIX.4.2", b"8", head, body)


def start(cfg: Path) -> tuple[subprocess.Popen, int, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dcgateway", "run", "--config", str(cfg),
                             "--log-level", "WARNING"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"gateway did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1]), time.perf_counter() - t0


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


async def fill_backlog(port: int, creds, n: int) -> None:
    src = FixClient("127.0.0.1", port, SOURCE, GATEWAY, begin_string="FIX.4.2", heartbeat=60,
                    signer=logon_signer(*creds[SOURCE]), sender_sub_id="OPS")
    await src.logon()
    st = utc_timestamp(time.time())
    first = src.next_seq
    data = b"".join(execution_report(s, st) for s in range(first, first + n))
    src.next_seq += n
    assert src.writer is not None
    for i in range(0, len(data), 1 << 16):
        src.writer.write(data[i:i + (1 << 16)])
        await src.writer.drain()
    src.send("1", [(112, "done")])
    await src.expect("0", skip=(), timeout=120)
    await src.logout()
    await src.close()


async def catch_up(port: int, creds, n: int, chunk: int = 2500) -> float:
    t = FixClient("127.0.0.1", port, TARGET, GATEWAY, begin_string="FIX.4.2", heartbeat=60,
                  signer=logon_signer(*creds[TARGET]), sender_sub_id="OPS")
    reply = await t.logon()
    last = int(reply.get(34)) - 1                      # copies 1..last are waiting for us
    assert last >= n, (last, n)
    assert t.reader is not None
    got = 0
    t0 = time.perf_counter()
    begin = 1
    tail = b""
    while begin <= last:
        end = min(begin + chunk - 1, last) if chunk else last
        t.send("2", [(7, begin), (16, end if chunk else 0)])
        want = end - begin + 1
        while want > 0:
            data = await asyncio.wait_for(t.reader.read(1 << 18), 60)
            if not data:
                raise ConnectionError("gateway closed during catch-up")
            buf = tail + data
            k = buf.count(b"\x0110=") - tail.count(b"\x0110=")
            tail = buf[-4:]
            want -= k
            got += k
        begin = end + 1
    elapsed = time.perf_counter() - t0
    await t.close()
    return got / elapsed


async def main_async(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="dcgw-recovery-") as tmp:
        work = Path(tmp)
        creds = json.loads(make_keys(work, 1).read_text())
        cfg = write_config(work / "run", work, 1, [])
        proc = None
        try:
            proc, port, _ = start(cfg)
            await fill_backlog(port, creds, args.backlog)
            stop(proc)
            proc, port, restart_s = start(cfg)           # clean restart with N journaled
            rate = await catch_up(port, creds, args.backlog, args.request_chunk)
            stop(proc, signal.SIGKILL)
            proc, port, restart_kill_s = start(cfg)      # restart after kill -9
            stop(proc)
        finally:
            if proc is not None and proc.poll() is None:  # never leave a gateway behind
                stop(proc, signal.SIGKILL)
    return {"bench": "recovery", "backlog": args.backlog, "request_chunk": args.request_chunk,
            "catchup_msgs_per_s": round(rate),
            "restart_s": round(restart_s, 3), "restart_after_kill_s": round(restart_kill_s, 3),
            "python": sys.version.split()[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backlog", type=int, default=100_000)
    ap.add_argument("--request-chunk", type=int, default=2500,
                    help="messages per ResendRequest (0: one request for everything, 16=0)")
    args = ap.parse_args(argv)
    print(json.dumps(uvloop.run(main_async(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
