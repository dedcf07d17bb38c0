"""Order-entry source simulator: a FIX initiator that plays order lifecycles into the gateway.

Why it is more than a message pump: the gateway promises that nothing it accepted is lost, even
across a kill -9 (docs/architecture.md "Data flow"). After such a restart it asks the source (ResendRequest,
possibly as the first thing after the Logon reply) for every message it did not make durable. A
source that cannot answer would make that promise untestable, so this one behaves like a FIX
engine (FIX Vol. 2 "Resend Request"): it keeps what it sent, by MsgSeqNum, for the whole run
(bounded by what the run sends), re-sends application messages with PossDupFlag 43=Y and
OrigSendingTime 122 = their first SendingTime, and gap-fills its admin messages (35=4, 123=Y).
It answers TestRequests, heartbeats when idle, and can log on again continuing its sequence
after the connection drops, to the same or another port (:meth:`SourceSimulator.reconnect`).

:attr:`SourceSimulator.sent_log` lists every application message in send order as
``(seq, msg_type, key, raw)``: tests route it through :mod:`dcgateway.routing` to know exactly
what each target must receive (:func:`expected_deliveries`).

Command line (one JSON summary line at the end)::

    python -m simulators.source --port 9878 --sender ABC123N --key-file abc.csv --count 1000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import simplefix

from .fixclient import (
    Addresses,
    FixClient,
    LogonSigner,
    add_connection_args,
    addresses_from_args,
    command_main,
    get,
    is_redirect,
    sending_time,
    signer_from_args,
)
from .orders import DEFAULT_ACCOUNTS, DEFAULT_SYMBOLS, OrderEvent, OrderFlow

__all__ = ["SourceSimulator", "SentMessage", "LogonRefused", "expected_deliveries", "main"]


class SentMessage(NamedTuple):
    """One application message as first sent."""
    seq: int
    msg_type: str
    key: str                 # business key, see orders.message_key
    raw: bytes


class _Stored(NamedTuple):
    """What a retransmission needs: same 34, 35, 50 and body; 122 = the first 52."""
    msg_type: str
    fields: list[tuple[int, str]]
    sub_id: str | None
    sending_time: str


class LogonRefused(ConnectionError):
    """The gateway answered our Logon with a Logout (text in the message)."""


_ALREADY_LOGGED_ON = "already logged on"


class SourceSimulator:
    """One source session playing :class:`~simulators.orders.OrderFlow` lifecycles.

    ``count`` and/or ``duration`` bound :meth:`run` (at least one should be given; without
    either it runs until :meth:`stop`). ``rate`` is messages per second, 0 = as fast as the
    connection takes them. ``auto_reconnect``: when the connection drops, keep trying to log on
    again (to :attr:`port`, which a test may change) for up to ``reconnect_timeout`` seconds;
    otherwise :meth:`run` waits that long for someone to call :meth:`reconnect`."""

    def __init__(self, host: str, port: int, sender: str, *, signer: LogonSigner | None = None,
                 target: str = "DCGW", begin_string: str = "FIX.4.2",
                 sub_ids: Sequence[str] = ("OPS",), heartbeat: int = 30,
                 count: int | None = None, duration: float | None = None, rate: float = 0.0,
                 seed: int = 1, accounts: Sequence[str] = DEFAULT_ACCOUNTS,
                 symbols: Sequence[str] = DEFAULT_SYMBOLS, exchanges: Sequence[str] | None = None,
                 flow: Iterable[OrderEvent] | None = None, auto_reconnect: bool = False,
                 reconnect_timeout: float = 30.0, sync_at_end: bool = True,
                 logout_at_end: bool = False, reset: bool = False, seq: int | None = None,
                 sync_seq: bool = True,
                 addresses: Sequence[tuple[str, int]] | None = None,
                 silence_timeout: float | None = None, mass_actions: bool = True,
                 id_prefix: str | None = None) -> None:
        """``mass_actions``: send OrderMassActionReports (35=BZ) now and then, as an iLink 2
        session does; False for a plain FIX 4.2 session, whose dictionary has no BZ (the
        gateway rejects it there). ``addresses``: every node of a cluster gateway (``host:port`` first when not in
        it): a refused connection tries the next, and a node naming the one that serves the
        session is followed. ``silence_timeout``: a gateway that sends nothing (not even a
        Heartbeat) for this long is taken for dead and the connection dropped (FIX: a missed
        heartbeat, then a TestRequest unanswered), so the client fails over. ``id_prefix``:
        what the order IDs (ClOrdID, OrderID) start with; default ``<sender>-<seed>-``, the
        same on every run."""
        self.silence_timeout = silence_timeout
        self.sender = sender
        self.addresses = Addresses(addresses or [(host, port)])
        self.client = FixClient(host, port, sender, target, begin_string=begin_string,
                                heartbeat=heartbeat, signer=signer,
                                sender_sub_id=sub_ids[0] if sub_ids else None)
        if seq is not None:
            self.client.next_seq = seq
        self.count = count
        self.duration = duration
        self.rate = rate
        self.flow: Iterable[OrderEvent] = flow if flow is not None else OrderFlow(
            seed=seed, sender=sender, begin_string=begin_string, accounts=accounts,
            symbols=symbols, exchanges=exchanges, sub_ids=list(sub_ids) or [None],
            p_mass=OrderFlow.P_MASS if mass_actions else 0.0, id_prefix=id_prefix)
        self._events = iter(self.flow)
        self.auto_reconnect = auto_reconnect
        self.reconnect_timeout = reconnect_timeout
        self.sync_at_end = sync_at_end
        self.logout_at_end = logout_at_end
        self.sync_seq = sync_seq            # adopt the 789 of a "MsgSeqNum too low" Logout
        self._reset_next = reset
        self.sent_log: list[SentMessage] = []
        self._store: dict[int, _Stored] = {}
        self._in_expected = 1               # next MsgSeqNum expected from the gateway
        self._in_resend_pending = False
        self._connected = asyncio.Event()
        self._stop = asyncio.Event()
        self._reader_task: asyncio.Task[None] | None = None
        self._sync_waiters: dict[str, asyncio.Future[bool]] = {}   # True: answered
        self._logout_done: asyncio.Event | None = None
        self._closing = False
        self._t0: float | None = None
        self._t1: float | None = None
        self.stats: Counter[str] = Counter()
        self.rejects: list[dict[str, str | None]] = []      # 35=3 / 35=j received
        self.logout_texts: list[str] = []
        self.disconnect_reasons: list[str] = []
        self.error: str | None = None

    # -- properties ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.client.port

    @port.setter
    def port(self, value: int) -> None:
        self.client.port = value

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def next_seq(self) -> int:
        return self.client.next_seq

    # -- connection ---------------------------------------------------------------------------

    async def connect(self, attempts: int = 20) -> None:
        """Connect and log on. A Logout refusing the Logon is retried when it says the session
        is still logged on (the gateway has not seen our old connection close yet) or, with
        ``sync_seq``, when it carries 789 (our MsgSeqNum was too low: adopt the gateway's)."""
        c = self.client
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_timeout
        tries = 0
        while tries < attempts:
            tries += 1
            reset, self._reset_next = self._reset_next, False
            if reset:
                self._store.clear()
                self._in_expected = 1
            await c.connect()
            reply = await c.logon(reset=reset)
            if get(reply, 35) == "A":
                self._track_inbound(reply)
                self._closing = False
                self._connected.set()
                self._reader_task = asyncio.create_task(self._reader(c),
                                                        name=f"{self.sender}-reader")
                self.stats["logons"] += 1
                return
            text = get(reply, 58) or ""
            await c.close()
            nxt = get(reply, 789)
            if is_redirect(text) and loop.time() < deadline:
                # a cluster node that does not serve us: it kept nothing of this Logon
                c.next_seq -= 1
                self._reset_next = reset
                if self.addresses.named(text) is None:
                    self.addresses.next()
                    await asyncio.sleep(0.2)
                else:               # a fresh SendingTime: each signed Logon is accepted once
                    await asyncio.sleep(0.05)
                c.host, c.port = self.addresses.current
                self.stats["redirects"] += 1
                tries -= 1
                continue
            if nxt and nxt.isdigit() and self.sync_seq and int(nxt) > c.next_seq - 1:
                c.next_seq = int(nxt)
                self.stats["seq_synced_from_789"] += 1
            elif _ALREADY_LOGGED_ON in text:
                await asyncio.sleep(0.2)
            else:
                raise LogonRefused(f"{self.sender}: Logon refused: {text}")
        raise LogonRefused(f"{self.sender}: Logon refused {attempts} times")

    async def reconnect(self, port: int | None = None, host: str | None = None,
                        timeout: float | None = None) -> None:
        """Log on again after the connection dropped (or to another gateway instance), keeping
        our outbound sequence; the gateway asks for what it lacks and we resend it. Retries
        refused connections until ``timeout`` (default ``reconnect_timeout``)."""
        if port is not None:
            self.client.port = port
        if host is not None:
            self.client.host = host
        if port is not None or host is not None:
            self.addresses = Addresses([(self.client.host, self.client.port)])
        await self._teardown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.reconnect_timeout if timeout is None else timeout)
        while True:
            try:
                await self.connect()
                self.stats["reconnects"] += 1
                return
            except (OSError, asyncio.TimeoutError) as exc:
                if isinstance(exc, LogonRefused) or loop.time() >= deadline:
                    raise
                await self.client.close()
                if len(self.addresses.all) > 1:          # that node is down: the next one
                    self.client.host, self.client.port = self.addresses.next()
                await asyncio.sleep(0.2)

    async def _teardown(self) -> None:
        self._connected.clear()
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):       # noqa: BLE001 - already reported
                pass
        await self.client.close()

    async def close(self) -> None:
        self._closing = True
        await self._teardown()

    def stop(self) -> None:
        """Make :meth:`run` finish after the message it is sending."""
        self._stop.set()

    # -- the run ------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Send ``count`` messages / for ``duration`` seconds at ``rate``; then (``sync_at_end``)
        a TestRequest round trip, so that on return the gateway has processed everything; then
        (``logout_at_end``) Logout. Returns :meth:`summary`."""
        loop = asyncio.get_running_loop()
        if not self._connected.is_set():
            await self.connect()
        t0 = self._t0 = loop.time()
        n = 0
        batch = 64 if self.rate <= 0 else max(1, int(self.rate / 100))
        while not self._stop.is_set():
            if self.count is not None and n >= self.count:
                break
            if self.duration is not None and loop.time() - t0 >= self.duration:
                break
            if not self._connected.is_set():
                await self._await_connection()
            if self.rate > 0:
                ahead = t0 + n / self.rate - loop.time()
                if ahead > 0.001:
                    await self._drain()
                    await asyncio.sleep(ahead)
            self._send_event(next(self._events))
            n += 1
            if n % batch == 0:
                await self._drain()
        await self._drain()
        self._t1 = loop.time()
        if self.sync_at_end:
            await self.sync()
        if self.logout_at_end:
            await self.logout()
        return self.summary()

    def _send_event(self, ev: OrderEvent) -> None:
        c = self.client
        seq = c.next_seq
        when = sending_time()
        header = [(50, ev.sub_id)] if ev.sub_id else []
        raw = c.build(ev.msg_type, ev.fields, header=header, when=when)
        self._store[seq] = _Stored(ev.msg_type, ev.fields, ev.sub_id, when)
        self.sent_log.append(SentMessage(seq, ev.msg_type, ev.key, raw))
        if c.connected:
            c.send_raw(raw)
        # else: the connection died under us; the gateway will ask for it after the Logon

    async def _drain(self) -> None:
        w = self.client.writer
        if w is None:
            return
        try:
            await asyncio.wait_for(w.drain(), 30)
        except (ConnectionError, OSError):
            self._on_disconnected("write failed")
        await asyncio.sleep(0)

    async def _await_connection(self) -> None:
        if self.auto_reconnect:
            await self.reconnect()
            return
        try:
            await asyncio.wait_for(self._connected.wait(), self.reconnect_timeout)
        except asyncio.TimeoutError:
            self.error = f"disconnected and not reconnected within {self.reconnect_timeout}s"
            raise ConnectionError(f"{self.sender}: {self.error}") from None

    async def sync(self, timeout: float = 15.0) -> None:
        """TestRequest/Heartbeat round trip: once it returns, the gateway has read and processed
        (in sequence) everything we sent before. Repeated after a reconnect."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if not self._connected.is_set():
                await self._await_connection()
            self.stats["syncs"] += 1
            test_id = f"SYNC-{self.sender}-{self.stats['syncs']}"
            fut = loop.create_future()
            self._sync_waiters[test_id] = fut
            self.client.send("1", [(112, test_id)])
            try:
                if await asyncio.wait_for(fut, max(0.05, min(5.0, deadline - loop.time()))):
                    return
                # False: the connection dropped meanwhile; ask again once logged on again
            except asyncio.TimeoutError:
                if loop.time() >= deadline:
                    raise
            finally:
                self._sync_waiters.pop(test_id, None)

    async def logout(self, text: str = "simulation done", timeout: float = 3.0) -> None:
        if not self._connected.is_set():
            return
        self._closing = True
        self._logout_done = asyncio.Event()
        self.client.send("5", [(58, text)])
        try:
            await asyncio.wait_for(self._logout_done.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        await self._teardown()

    # -- inbound (one reader task per connection) ---------------------------------------------

    async def _reader(self, c: FixClient) -> None:
        loop = asyncio.get_running_loop()
        reason = "peer closed"
        heard = loop.time()
        try:
            while True:
                try:
                    msg = await c.recv(0.5)
                except asyncio.TimeoutError:
                    msg = False
                if msg is None:
                    break
                if msg is not False:
                    heard = loop.time()
                    self._on_message(msg)
                elif self.silence_timeout and loop.time() - heard > self.silence_timeout:
                    reason = "gateway silent"
                    break
                hbi = c.heartbeat
                if c.connected and loop.time() - c.last_sent_at >= hbi:
                    c.send("0")
        except (ConnectionError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        self._on_disconnected(reason)
        c.abort()                   # the peer is gone: release the socket now

    def _on_disconnected(self, reason: str) -> None:
        if not self._connected.is_set():
            return
        self._connected.clear()
        for fut in self._sync_waiters.values():        # a TestRequest lost with the connection
            if not fut.done():
                fut.set_result(False)
        if not self._closing:
            self.stats["disconnects"] += 1
            self.disconnect_reasons.append(reason)

    def _track_inbound(self, msg: simplefix.FixMessage) -> None:
        """The gateway's sequence, as an engine checks it. Nothing the gateway sends us needs
        ordering (admin only), so a gap is requested (the gateway gap-fills it) but never
        holds anything up."""
        seq_s = get(msg, 34) or ""
        if not seq_s.isdigit():
            self.stats["inbound_bad_seq"] += 1
            return
        seq = int(seq_s)
        mt = get(msg, 35)
        if mt == "4" and get(msg, 123) != "Y":          # SequenceReset-Reset
            self._in_expected = int(get(msg, 36) or seq)
            return
        if seq < self._in_expected:
            if get(msg, 43) != "Y":
                self.stats["inbound_seq_too_low"] += 1
            return
        if seq > self._in_expected:
            self.stats["inbound_gaps"] += 1
            if not self._in_resend_pending and self.client.connected:
                self._in_resend_pending = True
                self.client.send("2", [(7, self._in_expected), (16, 0)])
        self._in_expected = seq + 1
        if mt == "4":
            self._in_expected = max(self._in_expected, int(get(msg, 36) or 0))
            self._in_resend_pending = False

    def _on_message(self, msg: simplefix.FixMessage) -> None:
        self._track_inbound(msg)
        mt = get(msg, 35)
        if mt == "0":
            fut = self._sync_waiters.get(get(msg, 112) or "")
            if fut is not None and not fut.done():
                fut.set_result(True)
        elif mt == "1":
            self.stats["test_requests_answered"] += 1
            self.client.send("0", [(112, get(msg, 112) or "")])
        elif mt == "2":
            self._serve_resend(int(get(msg, 7) or 0), int(get(msg, 16) or 0))
        elif mt in ("3", "j"):
            self.rejects.append({"msg_type": mt, "ref_seq": get(msg, 45),
                                 "reason": get(msg, 373) or get(msg, 380), "text": get(msg, 58)})
        elif mt == "5":
            self.logout_texts.append(get(msg, 58) or "")
            if self._logout_done is not None:
                self._logout_done.set()
            elif self.client.connected:                 # the gateway started it: answer
                self.client.send("5")
        elif mt not in ("4", "A"):
            self.stats[f"unexpected_msg_type:{mt}"] += 1

    def _serve_resend(self, begin: int, end: int) -> None:
        """FIX Vol. 2 "Resend Request": application messages again with 43=Y and 122, runs of
        admin (or unknown) seqs as one SequenceReset-GapFill each."""
        c = self.client
        last = c.next_seq - 1
        end = last if end == 0 or end > last else end
        self.stats["resend_requests"] += 1
        if begin < 1 or begin > end:
            return
        gap_start: int | None = None
        for seq in range(begin, end + 1):
            st = self._store.get(seq)
            if st is None:
                if gap_start is None:
                    gap_start = seq
                continue
            if gap_start is not None:
                c.gap_fill(gap_start, seq)
                self.stats["gap_filled"] += seq - gap_start
                gap_start = None
            c.send(st.msg_type, st.fields, seq=seq, header=[(50, st.sub_id)] if st.sub_id else (),
                   poss_dup=True, orig_sending_time=st.sending_time)
            self.stats["resent"] += 1
        if gap_start is not None:
            c.gap_fill(gap_start, end + 1)
            self.stats["gap_filled"] += end + 1 - gap_start

    # -- results ------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Counts of what was sent: per MsgType, per drop copy category (dcgateway.routing),
        plus the session's own statistics."""
        from dcgateway.fix.codec import Decoder, RawMessage
        from dcgateway.routing import category

        by_type: Counter[str] = Counter(m.msg_type for m in self.sent_log)
        by_cat: Counter[str] = Counter()
        dec = Decoder(1 << 20)
        for item in dec.feed(b"".join(m.raw for m in self.sent_log)):
            if isinstance(item, RawMessage):
                by_cat[category(item) or "none"] += 1
        elapsed = ((self._t1 or 0) - (self._t0 or 0)) if self._t0 is not None else 0.0
        stats = {k: v for k, v in self.stats.items() if v}
        return {"sender": self.sender, "sent": len(self.sent_log),
                "by_msg_type": dict(sorted(by_type.items())),
                "by_category": dict(sorted(by_cat.items())),
                "next_seq": self.client.next_seq, "elapsed_s": round(elapsed, 3),
                "rate_msgs_s": round(len(self.sent_log) / elapsed, 1) if elapsed > 0 else None,
                "rejects": len(self.rejects), "stats": stats, "error": self.error}


def expected_deliveries(table: Any, source: str, sent: Iterable[SentMessage]
                        ) -> dict[str, list[tuple[str, str]]]:
    """target CompID -> the ``(source, key)`` it must receive, in send order, according to a
    :class:`dcgateway.routing.RoutingTable`. The keys are those a
    :class:`~simulators.target.TargetSimulator` files deliveries under."""
    from dcgateway.fix.codec import Decoder, RawMessage

    out: dict[str, list[tuple[str, str]]] = {}
    for m in sent:
        [msg] = Decoder(1 << 20).feed(m.raw)
        assert isinstance(msg, RawMessage)
        for route in table.route(source, msg):
            out.setdefault(route.target, []).append((source, m.key))
    return out


# -- command line ---------------------------------------------------------------------------------

def _csv(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulators.source",
                                description="Order-entry source simulator: plays seeded order "
                                "lifecycles into a dcgateway, prints one JSON summary line.")
    add_connection_args(p, comp_id_flag="--sender")
    p.add_argument("--sub-ids", type=_csv, default=["OPS"], help="SenderSubIDs (50), comma list")
    p.add_argument("--count", type=int, help="application messages to send")
    p.add_argument("--duration", type=float, help="seconds to send for")
    p.add_argument("--rate", type=float, default=0.0, help="messages/s (0 = as fast as possible)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--accounts", type=_csv, default=list(DEFAULT_ACCOUNTS))
    p.add_argument("--symbols", type=_csv, default=list(DEFAULT_SYMBOLS))
    p.add_argument("--exchanges", type=_csv, default=None,
                   help="SecurityExchange (207) values (default: each symbol's own)")
    p.add_argument("--reconnect", action="store_true",
                   help="log on again (continuing the sequence) when the connection drops")
    p.add_argument("--reconnect-timeout", type=float, default=30.0)
    p.add_argument("--no-mass-actions", dest="mass_actions", action="store_false",
                   help="never send 35=BZ (a plain FIX 4.2 session: BZ is iLink 2's)")
    return p


async def _amain(args: argparse.Namespace) -> dict[str, Any]:
    sim = SourceSimulator(args.host, args.port, args.comp_id, signer=signer_from_args(args),
                          target=args.gateway_comp_id, begin_string=args.begin_string,
                          sub_ids=args.sub_ids, heartbeat=args.heartbeat, count=args.count,
                          duration=args.duration, rate=args.rate, seed=args.seed,
                          accounts=args.accounts, symbols=args.symbols, exchanges=args.exchanges,
                          auto_reconnect=args.reconnect, reconnect_timeout=args.reconnect_timeout,
                          logout_at_end=True, reset=args.reset, seq=args.seq,
                          addresses=addresses_from_args(args), mass_actions=args.mass_actions)
    try:
        return await sim.run()
    except (OSError, asyncio.TimeoutError) as exc:
        sim.error = sim.error or f"{type(exc).__name__}: {exc}"
        await sim.close()
        return sim.summary()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    bounded = args.count is not None or args.duration is not None
    return command_main(args, _amain, None if bounded else
                        "give --count and/or --duration (the simulator stops by itself)")


if __name__ == "__main__":
    sys.exit(main())
