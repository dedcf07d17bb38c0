"""What waiting for the disk costs a copy, and how much of it the hand-off mechanism decides.

A server process echoes each 64-byte request back over TCP (uvloop, TCP_NODELAY); a client
process sends --rate requests a second for --seconds and measures each round trip. Between the
read and the echo the server waits, in one of these ways (each run in a process of its own,
alternated round by round, --rounds times):

  * ``none``: no wait (the floor: two loopback hops and two wake-ups).
  * ``spin``: a busy wait of --wait-us on the loop (the CPU stays awake).
  * ``sleep``: ``time.sleep`` of --wait-us on the loop (the CPU may go idle, as it does while the
    disk works).
  * ``inline``: ``pwrite`` of the request to a preallocated file, then ``os.fdatasync`` on the
    loop: no hand-off at all (what the gateway must not do: a slow disk would stall its loop).
  * ``thread``: the gateway's mechanism (``dcgateway.journal.commit``): ``pwrite`` on the loop,
    a ``threading.Lock`` released to wake a sync thread, which fdatasyncs and answers with one
    ``call_soon_threadsafe``; one fdatasync in flight, the next covers what came meanwhile.
  * ``aio``: Linux native AIO (``io_submit`` of IOCB_CMD_FDSYNC, completion signalled on an
    eventfd the loop watches): the fdatasync runs in a kernel worker and needs no Python thread
    and no GIL (Linux x86-64 only; left out elsewhere, or where the kernel refuses it).

An echo leaves only once a sync that began after its write has completed. ``--build-us`` adds
CPU work per request that holds the GIL, as building a read's copies does: after the wait in
every mode above, and in ``thread-early`` and ``aio-early`` (asked for by --modes) right after
the sync is started, so that it overlaps the fdatasync; at completion those only write.
``thread-started`` is ``thread-early`` with a handshake: the loop blocks (up to 1 ms) until the
sync thread, about to call fdatasync, says so, and only then builds.

Per mode, the medians over the rounds of each round's p50, p90 and p99 round trip (µs), and for
the modes that sync, the server's fdatasync p50 (for ``aio``: submission to completion as the
loop sees it, so it includes the kernel's hand-off). ``wait_cost_us`` is p50 minus the p50 of
``none`` (which holds the build) minus the wait (--wait-us, or the mode's fdatasync p50): what
the wait costs beyond its own length: the wake-ups, the cold caches, the hand-offs, less any
build it hid.

Prints one JSON line:
  {"bench": "syncwait", "rate": 2000, "seconds": 3, "rounds": 3, "wait_us": 140,
   "build_us": 0, "modes": {MODE: {"p50_us", "p90_us", "p99_us", "fsync_p50_us",
   "wait_cost_us"}}}

  .venv/bin/python benchmarks/syncwait.py [--rate 2000] [--seconds 3] [--rounds 3]
      [--build-us 60 --modes none,inline,thread,thread-early,aio,aio-early]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import multiprocessing
import os
import platform
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections import deque
from typing import Any, Callable, cast

import uvloop

MODES = ("none", "spin", "sleep", "inline", "thread", "aio", "thread-early", "aio-early",
         "thread-started")
#: run unless --modes says otherwise (the -early modes matter only with --build-us)
DEFAULT_MODES = MODES[:6]
REQ = 64
_NR = {"x86_64": (206, 208, 209)}        # io_setup, io_getevents, io_submit
IOCB_CMD_FDSYNC = 3
IOCB_FLAG_RESFD = 1


class _Iocb(ctypes.Structure):
    _fields_ = [("aio_data", ctypes.c_uint64), ("aio_key", ctypes.c_uint32),
                ("aio_rw_flags", ctypes.c_int32), ("aio_lio_opcode", ctypes.c_uint16),
                ("aio_reqprio", ctypes.c_int16), ("aio_fildes", ctypes.c_uint32),
                ("aio_buf", ctypes.c_uint64), ("aio_nbytes", ctypes.c_uint64),
                ("aio_offset", ctypes.c_int64), ("aio_reserved2", ctypes.c_uint64),
                ("aio_flags", ctypes.c_uint32), ("aio_resfd", ctypes.c_uint32)]


class _IoEvent(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64), ("obj", ctypes.c_uint64),
                ("res", ctypes.c_int64), ("res2", ctypes.c_int64)]


def _aio_syncer(fd: int, on_done: Callable[[], None],
                loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Submit one IOCB_CMD_FDSYNC of ``fd``; ``on_done`` runs on the loop when it completed."""
    setup, getevents, submit = _NR[platform.machine()]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ctx = ctypes.c_ulong(0)
    if libc.syscall(setup, 8, ctypes.byref(ctx)) != 0:
        raise OSError(ctypes.get_errno(), "io_setup")
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    cb = _Iocb(aio_lio_opcode=IOCB_CMD_FDSYNC, aio_fildes=fd, aio_flags=IOCB_FLAG_RESFD,
               aio_resfd=efd)
    cbs = (ctypes.POINTER(_Iocb) * 1)(ctypes.pointer(cb))
    events = (_IoEvent * 8)()
    no_wait = (ctypes.c_long * 2)(0, 0)

    def completed() -> None:
        os.eventfd_read(efd)
        n = libc.syscall(getevents, ctx, 0, 8, events, no_wait)
        if n < 1 or any(events[i].res < 0 for i in range(n)):
            raise OSError(ctypes.get_errno(), "aio fdatasync failed")
        on_done()

    loop.add_reader(efd, completed)

    def start() -> None:
        if libc.syscall(submit, ctx, 1, cbs) != 1:
            raise OSError(ctypes.get_errno(), "io_submit")
    return start


def _work(seconds: float) -> None:
    """CPU work holding the GIL, as building copies does."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def _serve(mode: str, wait_s: float, build_s: float, folder: str,
                 port_out: Any) -> None:
    loop = asyncio.get_running_loop()
    fd = os.open(os.path.join(folder, "journal"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.posix_fallocate(fd, 0, 64 << 20)
    os.fsync(fd)
    at = 0
    # (write number, transport, request): written to the OS, not yet known synced; an echo
    # leaves only once a sync that began after its write has completed
    waiting: deque[tuple[int, asyncio.Transport, bytes]] = deque()
    syncs: list[float] = []
    state: dict[str, Any] = {"writes": 0, "synced": 0, "in_flight": False, "posted": False,
                             "t0": 0.0, "covers": 0}

    def release() -> None:
        synced = state["synced"]
        while waiting and waiting[0][0] <= synced:
            _, tr, data = waiting.popleft()
            if build_s and not early:
                _work(build_s)
            tr.write(data)

    wake = threading.Lock()
    wake.acquire()

    def drained() -> None:
        state["posted"] = False
        release()

    started = threading.Lock()
    started.acquire()

    def sync_thread() -> None:
        while True:
            wake.acquire()
            covers = state["writes"]          # every write before the sync starts
            if handshake and started.locked():
                started.release()             # the loop may build now: the GIL is not needed
            t0 = time.perf_counter()
            os.fdatasync(fd)
            syncs.append(time.perf_counter() - t0)
            state["synced"] = max(state["synced"], covers)
            if not state["posted"]:
                state["posted"] = True
                loop.call_soon_threadsafe(drained)

    def aio_done() -> None:
        syncs.append(time.perf_counter() - state["t0"])
        state["in_flight"] = False
        state["synced"] = state["covers"]
        release()
        if waiting:
            aio_start()

    def aio_start() -> None:
        state["in_flight"], state["covers"] = True, state["writes"]
        state["t0"] = time.perf_counter()
        submit()

    handshake = mode == "thread-started"
    early = mode.endswith("-early") or handshake
    base = mode.removesuffix("-early").removesuffix("-started")
    if base == "thread":
        threading.Thread(target=sync_thread, daemon=True).start()
    if base == "aio":
        submit = _aio_syncer(fd, aio_done, loop)

    done: asyncio.Future[None] = loop.create_future()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.tr = cast(asyncio.Transport, transport)   # uvloop's is not a subclass
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP,
                                                          socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            nonlocal at
            if mode in ("none", "spin", "sleep"):
                if mode == "spin":
                    _work(wait_s)
                elif mode == "sleep":
                    time.sleep(wait_s)
                if build_s:
                    _work(build_s)
                self.tr.write(data)
                return
            os.pwrite(fd, data, at)
            at += len(data)
            state["writes"] = n = state["writes"] + 1
            waiting.append((n, self.tr, data))
            if mode == "inline":
                t0 = time.perf_counter()
                os.fdatasync(fd)
                syncs.append(time.perf_counter() - t0)
                state["synced"] = n
                release()
            elif base == "thread":
                if wake.locked():
                    wake.release()
                    if handshake:             # until the sync thread is past its Python
                        started.acquire(timeout=0.001)
            elif not state["in_flight"]:
                aio_start()                   # else: the completion starts the next
            if early and build_s:
                _work(build_s)                # while the disk works

        def connection_lost(self, exc: Exception | None) -> None:
            if not done.done():
                done.set_result(None)

    server = await loop.create_server(Echo, "127.0.0.1", 0)
    port_out.send(server.sockets[0].getsockname()[1])
    await done
    server.close()
    port_out.send(statistics.median(syncs) * 1e6 if syncs else None)


def _server(mode: str, wait_s: float, build_s: float, port_out: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="dcgw-syncwait-") as folder:
        uvloop.run(_serve(mode, wait_s, build_s, folder, port_out))


async def _load(port: int, rate: int, count: int) -> list[float]:
    loop = asyncio.get_running_loop()
    rtts: list[float] = []
    got = 0
    finished: asyncio.Future[None] = loop.create_future()

    class Client(asyncio.Protocol):
        def __init__(self) -> None:
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            nonlocal got
            now = time.perf_counter()
            self.buf += data
            while len(self.buf) >= REQ:
                (sent,) = struct.unpack_from("d", self.buf)
                rtts.append(now - sent)
                self.buf = self.buf[REQ:]
                got += 1
            if got >= count and not finished.done():
                finished.set_result(None)

    transport, _ = await loop.create_connection(Client, "127.0.0.1", port)
    transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    start = time.perf_counter()
    for i in range(count):
        ahead = start + i / rate - time.perf_counter()
        if ahead > 0:
            await asyncio.sleep(ahead)
        transport.write(struct.pack("d", time.perf_counter()).ljust(REQ, b"x"))
    try:
        await asyncio.wait_for(finished, 10)
    except TimeoutError:
        raise RuntimeError(f"{got} of {count} requests echoed within 10 s") from None
    finally:
        transport.close()
    return rtts


def _run(mode: str, args: argparse.Namespace) -> tuple[dict[str, float], float | None]:
    """One run of ``mode``: its p50/p90/p99 round trip (µs) and the server's fdatasync p50."""
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    proc = ctx.Process(target=_server, args=(mode, args.wait_us / 1e6, args.build_us / 1e6, theirs), daemon=True)
    proc.start()
    try:
        if not mine.poll(20):
            raise RuntimeError(f"{mode}: the server did not start")
        port = mine.recv()
        rtts = sorted(uvloop.run(_load(port, args.rate, int(args.rate * args.seconds))))
        fsync = mine.recv() if mine.poll(10) else None
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
    def pick(q: float) -> float:
        return round(rtts[min(len(rtts) - 1, int(len(rtts) * q))] * 1e6, 1)
    return {"p50_us": pick(0.5), "p90_us": pick(0.9), "p99_us": pick(0.99)}, fsync


def _aio_works() -> bool:
    if sys.platform != "linux" or platform.machine() not in _NR:
        return False
    fd, path = tempfile.mkstemp(prefix="dcgw-syncwait-")
    try:
        loop = asyncio.new_event_loop()
        try:
            _aio_syncer(fd, lambda: None, loop)()
            return True
        finally:
            loop.close()
    except OSError:
        return False
    finally:
        os.close(fd)
        os.unlink(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=2000, help="requests a second")
    ap.add_argument("--seconds", type=float, default=3.0, help="per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--wait-us", type=float, default=140.0,
                    help="the spin and sleep modes' wait (about an fdatasync here)")
    ap.add_argument("--build-us", type=float, default=0.0,
                    help="CPU work per request holding the GIL (building the copies): after the "
                         "wait, or with the -early modes during the fdatasync")
    ap.add_argument("--modes", default=",".join(DEFAULT_MODES),
                    help="comma-separated, of: " + ", ".join(MODES))
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        ap.error(f"unknown mode(s) {', '.join(bad)}; known: {', '.join(MODES)}")
    if any(m.startswith("aio") for m in modes) and not _aio_works():
        print("syncwait: native AIO fdatasync is not available here; aio left out",
              file=sys.stderr)
        modes = [m for m in modes if not m.startswith("aio")]
    runs: dict[str, list[tuple[dict[str, float], float | None]]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode in modes:
            try:
                runs[mode].append(_run(mode, args))
            except (OSError, RuntimeError) as exc:
                print(f"syncwait: {mode}: {exc}", file=sys.stderr)
                return 1
            print(f"round {r + 1} {mode}: {runs[mode][-1]}", file=sys.stderr)
    out: dict[str, dict[str, float | None]] = {}
    floor = statistics.median(f["p50_us"] for f, _ in runs["none"]) if "none" in runs else None
    for mode, rs in runs.items():
        fig: dict[str, float | None] = {
            k: round(statistics.median(f[k] for f, _ in rs), 1)
            for k in ("p50_us", "p90_us", "p99_us")}
        syncs = [s for _, s in rs if s is not None]
        fsync = round(statistics.median(syncs), 1) if syncs else None
        fig["fsync_p50_us"] = fsync
        if floor is not None:
            wait = fsync if fsync is not None else \
                (args.wait_us if mode in ("spin", "sleep") else 0.0)
            fig["wait_cost_us"] = round(statistics.median(f["p50_us"] for f, _ in rs)
                                        - floor - wait, 1)
        out[mode] = fig
    print(json.dumps({"bench": "syncwait", "rate": args.rate, "seconds": args.seconds,
                      "rounds": args.rounds, "wait_us": args.wait_us, "build_us": args.build_us,
                      "modes": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
