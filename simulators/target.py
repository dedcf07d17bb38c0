"""Clearing-firm drop copy target simulator: receives copies and checks them like a FIX engine.

Why it checks rather than just counts: a drop copy target is the gateway's customer. It must see
every copy its groups promise, exactly once, in order, on a gapless sequence; anything shown to
it twice must say so (PossDupFlag 43=Y). So this simulator:

* keeps its own inbound sequence (FIX Vol. 2 "Message gap detection"): a message above the
  expected seq is held and the gap is asked for with a ResendRequest (``resend_mode`` ``"0"``:
  ``16=0`` once, as QuickFIX does, the whole gap expected in answer; ``"explicit"``: ``16=end``
  of the gap in chunks of ``resend_chunk``, as a client of a venue that caps answers does); gap fills
  (35=4 123=Y) move it forward; a stalled resend is asked for again after ``resend_timeout``;
* counts ``unflagged_duplicates``: a seq below the expected one, or a business message already
  delivered, arriving without 43=Y (on the copy, or for ilink2 on the inner original);
* decodes both front ends (docs/venue.md "Drop copy"): ``ilink2`` 35=n whose 213 carries
  ``<RTRF>original</RTRF>`` (the source is the inner 49, its seq the inner 34), ``fix`` the
  original MsgType and body under a header with 115/116/122;
* files each business message under ``(source CompID, business key)`` (ExecID/ClOrdID/...,
  :func:`simulators.orders.message_key`) and counts it per category with
  :func:`dcgateway.routing.category` on the original;
* can read slowly (``read_delay``, ``read_size``, ``rcvbuf``: backpressure on the gateway) and
  can drop its connection every ``drop_every`` deliveries and log on again continuing its
  sequence, so the gateway has to deliver what it missed.

It never sends application messages (targets are read-only); the only exception is
:meth:`TargetSimulator.send_forbidden`, for the test that the gateway answers 35=j.

Command line (one JSON line of :meth:`TargetSimulator.stats` at the end)::

    python -m simulators.target --port 9878 --comp-id CLR001N --key-file clr.csv --idle 2
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from dcgateway.fix.codec import DecodeError, Decoder, RawMessage
from dcgateway.fix.dictionary import load_dictionary, with_secure_logon
from dcgateway.fix.dropcopy import unwrap_rtrf
from dcgateway.fix.validate import Validator
from dcgateway.routing import category

from .fixclient import (
    Addresses,
    FixClient,
    LogonSigner,
    add_connection_args,
    addresses_from_args,
    command_main,
    is_redirect,
    signer_from_args,
)
from .orders import message_key

__all__ = ["TargetSimulator", "Delivery", "main"]

_MAX_NOTES = 50                     # bound on the texts kept per problem list


class Delivery(NamedTuple):
    """One unique business message as delivered (first time only)."""
    target_seq: int
    msg_type: str                   # the original's MsgType
    category: str | None
    source: str
    source_seq: int | None          # ilink2: the inner 34; fix copies do not carry it
    poss_dup: bool                  # the copy carried 43=Y (a retransmission)
    orig_sending_time: str | None   # the copy's 122
    raw: bytes | None               # keep_raw: the original (ilink2) or the copy (fix)


def _s(v: bytes | None) -> str | None:
    return None if v is None else v.decode("latin-1")


class TargetSimulator:
    """One drop copy target session. See the module docstring for what it checks."""

    def __init__(self, host: str, port: int, comp_id: str, *, signer: LogonSigner | None = None,
                 gateway: str = "DCGW", begin_string: str = "FIX.4.2", sub_id: str | None = "OPS",
                 heartbeat: int = 30, read_delay: float = 0.0, read_size: int = 65536,
                 rcvbuf: int | None = None, stream_limit: int = 1 << 16,
                 drop_every: int | None = None, max_drops: int | None = None,
                 reconnect_delay: float = 0.2, auto_reconnect: bool = True,
                 reconnect_timeout: float = 30.0, resend_mode: str = "0",
                 resend_chunk: int = 2500, resend_timeout: float = 3.0, keep_raw: bool = False,
                 expected_seq: int = 1, seq: int | None = None, reset: bool = False,
                 send_heartbeats: bool = True, sync_seq: bool = True,
                 max_queued: int = 100_000,
                 addresses: Sequence[tuple[str, int]] | None = None,
                 silence_timeout: float | None = None, dictionary: str | None = None) -> None:
        """``addresses``: every node of a cluster gateway: a refused connection tries the
        next, and a node naming the one that serves the session is followed.
        ``silence_timeout``: a gateway silent this long (no copy, no Heartbeat) is taken for
        dead and the connection dropped, so the client fails over."""
        self.silence_timeout = silence_timeout
        self._heard = 0.0
        if resend_mode not in ("0", "explicit"):
            raise ValueError("resend_mode is '0' (16=0) or 'explicit'")
        self.comp_id = comp_id
        self.gateway = gateway
        self.addresses = Addresses(addresses or [(host, port)])
        self.client = FixClient(host, port, comp_id, gateway, begin_string=begin_string,
                                heartbeat=heartbeat, signer=signer, sender_sub_id=sub_id,
                                rcvbuf=rcvbuf, read_size=read_size, stream_limit=stream_limit)
        if seq is not None:
            self.client.next_seq = seq
        self.read_delay, self.drop_every, self.max_drops = read_delay, drop_every, max_drops
        self.reconnect_delay, self.reconnect_timeout = reconnect_delay, reconnect_timeout
        self.auto_reconnect, self.sync_seq = auto_reconnect, sync_seq
        self.resend_mode, self.resend_chunk = resend_mode, resend_chunk
        self.resend_timeout, self.max_queued = resend_timeout, max_queued
        self.keep_raw, self.send_heartbeats = keep_raw, send_heartbeats
        self._reset_next = reset
        self._reset_was = False
        self._comp_b, self._gw_b = comp_id.encode(), gateway.encode()
        # sequencing
        self.expected = expected_seq
        self.highest_seen = expected_seq - 1
        self._queue: dict[int, RawMessage | None] = {}
        self._pending: tuple[int, int] | None = None
        self._progress_at = 0.0
        self._decoder = Decoder(1 << 20)
        # every message from the gateway checked against the session's data dictionary
        # (FIX.4.2, FIX.4.4, ILINK2 or an XML path): a problem is a format error
        self._validator = (Validator(with_secure_logon(load_dictionary(dictionary)))
                           if dictionary else None)
        self.state = "down"             # down | logging_on | active | logout_sent | logged_out
        self._refusal: tuple[str, str | None] | None = None
        self._stop = asyncio.Event()
        # results
        self.delivered: dict[tuple[str, str], Delivery] = {}
        self.order: list[tuple[str, str]] = []
        self.duplicates = self.unflagged_duplicates = self.gaps_requested = 0
        self.resend_requests: list[tuple[int, int]] = []
        self.counts_by_category: Counter[str] = Counter()
        self.counts_by_msg_type: Counter[str] = Counter()
        self.front_end: str | None = None
        self.counters: Counter[str] = Counter()
        self.format_errors: list[str] = []
        self.rejects: list[dict[str, str | None]] = []          # 35=3 and direct 35=j to us
        self.logout_texts: list[str] = []
        self.error: str | None = None
        self._since_connect, self._last_business = 0, 0.0
        self._t0: float | None = None
        self._t1: float | None = None
        self._admin: dict[bytes, Callable[[RawMessage], None]] = {
            b"0": lambda m: None, b"A": lambda m: None, b"1": self._on_test_request,
            b"2": self._on_resend_request, b"3": self._on_reject, b"4": self._on_gap_fill,
            b"5": self._on_logout,
        }

    # -- public ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.client.port

    @port.setter
    def port(self, value: int) -> None:
        self.client.port = value

    @property
    def last_seq(self) -> int:
        """The last MsgSeqNum processed in sequence."""
        return self.expected - 1

    def stop(self) -> None:
        self._stop.set()

    def keys_from(self, source: str) -> list[tuple[str, str]]:
        """Delivered keys of one source, in delivery order."""
        return [k for k in self.order if k[0] == source]

    def send_forbidden(self, msg_type: str = "D", fields: Sequence[tuple[int, str]] = ()) -> None:
        """Send an application message. Targets are read-only: only for the test that the
        gateway refuses it (35=j, recorded in :attr:`rejects`). The default is a valid
        NewOrderSingle (an invalid one would get a session-level Reject, 35=3, first)."""
        v44 = self.client.begin_string >= "FIX.4.4"
        default = [(11, "FORBIDDEN")] + ([] if v44 else [(21, "1")]) + [
            (55, "ESZ6"), (54, "1"), (60, "20261124-10:00:00"), (38, "1"), (40, "1")]
        self.client.send(msg_type, list(fields) or default)

    async def run(self, until: Callable[[TargetSimulator], bool] | int | float | None = None, *,
                  count: int | None = None, duration: float | None = None,
                  idle: float | None = None, timeout: float = 120.0,
                  logout: bool = True) -> dict[str, Any]:
        """Receive until ``until(self)`` is true, ``count`` unique business messages were
        delivered, ``duration`` seconds passed, or nothing new came for ``idle`` seconds with no
        gap outstanding (an int ``until`` is a count, a float a duration); ``timeout`` is a hard
        bound (:attr:`error` says so). Logs on first (or again, continuing the sequence, after a
        drop). ``logout``: Logout at the end, else stay logged on for another run. Returns
        :meth:`stats`."""
        if isinstance(until, bool):         # not a count: neither a number nor a predicate
            raise TypeError("until: expected a predicate, a count (int) or a duration (float)")
        if isinstance(until, (int, float)):
            count, duration = (until, duration) if isinstance(until, int) else (count, until)
            until = None
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        if self._t0 is None:
            self._t0 = t0
        self._last_business = t0
        self._stop.clear()

        def done() -> bool:
            now = loop.time()
            if (self._stop.is_set() or (until is not None and until(self))
                    or (count is not None and len(self.delivered) >= count)
                    or (duration is not None and now - t0 >= duration)
                    or (idle is not None and self.state == "active"
                        and now - self._last_business >= idle and self._pending is None
                        and not self._queue and self.expected > self.highest_seen)):
                return True
            if now - t0 >= timeout:
                self.error = f"timeout after {timeout}s"
                return True
            return False

        refusals = 0
        redirect_deadline = loop.time() + self.reconnect_timeout
        while not done():
            if self.state == "down" and not await self._establish(done):
                break
            outcome = await self._pump(done)
            if outcome == "done":
                break
            if outcome == "refused":
                refusals += 1
                text, nxt = self._refusal or ("", None)
                self._refusal = None
                await self._down()
                if is_redirect(text) and loop.time() < redirect_deadline:
                    # a cluster node that does not serve us kept nothing of this Logon
                    self.client.next_seq -= 1
                    self._reset_next = self._reset_was
                    if self.addresses.named(text) is None:
                        self.addresses.next()
                        await asyncio.sleep(self.reconnect_delay)
                    else:           # a fresh SendingTime: each signed Logon is accepted once
                        await asyncio.sleep(0.05)
                    self.client.host, self.client.port = self.addresses.current
                    self.counters["redirects"] += 1
                    refusals = 0
                    continue
                if nxt and nxt.isdigit() and self.sync_seq and refusals < 10:
                    self.client.next_seq = int(nxt)
                    self.counters["seq_synced_from_789"] += 1
                elif "already logged on" in text and refusals < 50:
                    await asyncio.sleep(self.reconnect_delay)
                else:
                    self.error = f"Logon refused: {text}"
                    break
                continue
            refusals = 0
            redirect_deadline = loop.time() + self.reconnect_timeout
            await self._down()
            if outcome == "drop":
                self.counters["drops"] += 1
            else:
                self.counters["disconnects"] += 1
                if not self.auto_reconnect:
                    self.error = "disconnected"
                    break
            await asyncio.sleep(self.reconnect_delay)
        if logout and self.state == "active":
            await self._logout()
        if logout:
            await self._down()
        self._t1 = loop.time()
        return self.stats()

    def stats(self) -> dict[str, Any]:
        elapsed = (self._t1 or 0) - (self._t0 or 0) if self._t0 is not None else 0.0
        return {
            "comp_id": self.comp_id, "front_end": self.front_end,
            "delivered": len(self.delivered), "duplicates": self.duplicates,
            "unflagged_duplicates": self.unflagged_duplicates,
            "gaps_requested": self.gaps_requested, "last_seq": self.last_seq,
            "counts_by_category": dict(sorted(self.counts_by_category.items())),
            "counts_by_msg_type": dict(sorted(self.counts_by_msg_type.items())),
            "format_errors": len(self.format_errors), "rejects": len(self.rejects),
            "elapsed_s": round(elapsed, 3),
            "rate_msgs_s": round(len(self.delivered) / elapsed, 1) if elapsed > 0 else None,
            "counters": dict(sorted((k, v) for k, v in self.counters.items() if v)),
            "error": self.error,
        }

    # -- connection -----------------------------------------------------------------------------

    async def _establish(self, done: Callable[[], bool]) -> bool:
        """Connect and send our Logon (the answer is handled by :meth:`_pump`). Once we have
        been logged on, a refused connection is retried for up to ``reconnect_timeout`` (the
        gateway restarting); before, it is an error at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_timeout
        c = self.client
        while True:
            try:
                await c.connect()
                break
            except (OSError, asyncio.TimeoutError) as exc:
                if done():                                   # asked to stop: not a failure
                    return False
                never_on = self.counters["logons"] == 0     # wrong address: say so at once
                single = len(self.addresses.all) == 1
                if (never_on and single) or not self.auto_reconnect \
                        or loop.time() >= deadline:
                    self.error = f"cannot connect: {type(exc).__name__}: {exc}"
                    return False
                if not single:                               # that node is down: the next
                    c.host, c.port = self.addresses.next()
                await asyncio.sleep(self.reconnect_delay)
        reset, self._reset_next = self._reset_next, False
        self._reset_was = reset
        if reset:
            self.expected = 1
            self.highest_seen = 0
        self._decoder = Decoder(1 << 20)
        self._queue.clear()
        self._pending = None
        self._since_connect = 0
        c.expected_in = self.expected
        self._heard = loop.time()
        self.state = "logging_on"
        c.send_raw(c.logon_message(reset=reset))
        return True

    async def _down(self) -> None:
        """Forget the connection (abruptly): held out-of-order messages will be asked for again."""
        self.client.abort()
        self.state = "down"
        self._queue.clear()
        self._pending = None

    async def _pump(self, done: Callable[[], bool]) -> str:
        """Read and process until done ('done'), EOF ('eof'), a refused Logon ('refused') or
        time to drop the connection ('drop')."""
        c = self.client
        while True:
            if done():
                return "done"
            data = await c.read_raw(0.2)
            if data == b"":
                return "refused" if self._refusal else "eof"
            now = asyncio.get_running_loop().time()
            if data:
                self._heard = now
                self._feed(data)
            elif (self.silence_timeout and self.state == "active"
                  and now - self._heard > self.silence_timeout):
                self.counters["silent_gateway"] += 1
                return "eof"
            if self._refusal:
                return "refused"
            self._timers()
            if (self.drop_every and self.state == "active"
                    and self._since_connect >= self.drop_every
                    and (self.max_drops is None or self.counters["drops"] < self.max_drops)):
                return "drop"
            if data and self.read_delay:
                await asyncio.sleep(self.read_delay)

    async def _logout(self, timeout: float = 3.0) -> None:
        self.state = "logout_sent"
        self.client.send("5", [(58, "target done")])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.state == "logout_sent" and loop.time() < deadline:
            data = await self.client.read_raw(0.2)
            if data == b"":
                break
            if data:
                self._feed(data)

    def _timers(self) -> None:
        if self.state != "active":
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        c = self.client
        if self.send_heartbeats and now - c.last_sent_at >= c.heartbeat:
            c.send("0")
        if self._pending is not None and now - self._progress_at >= self.resend_timeout:
            self.counters["resend_stalled"] += 1
            self._request_gap(force=True)

    # -- inbound --------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        for item in self._decoder.feed(data):
            if isinstance(item, DecodeError):
                self.counters[f"decode_error:{item.kind}"] += 1
                continue
            self._on_message(item)

    def _on_message(self, msg: RawMessage) -> None:
        mt = msg.msg_type
        if self._validator is not None:
            problem = self._validator.validate(msg)
            if problem is not None:
                self._note(f"invalid 35={_s(mt)} 34={msg.seq_num}: {problem.text} "
                           f"(373={problem.reason}, 371={problem.tag})")
        if self.state == "logging_on":
            if mt == b"5":
                self._refusal = (_s(msg.get(58)) or "", _s(msg.get(789)))
                return
            if mt != b"A":
                self._note(f"35={_s(mt)} before the Logon reply")
                return
            self.state = "active"
            self.counters["logons"] += 1
            self._progress_at = asyncio.get_running_loop().time()
        if mt == b"4" and msg.get(123) != b"Y":               # SequenceReset-Reset
            new = int(msg.get(36) or b"0")
            self.counters["sequence_resets"] += 1
            if new > self.expected:
                self._jump(new)
            return
        seq = msg.seq_num
        if seq is None:
            self._note(f"35={_s(mt)} without MsgSeqNum")
            return
        if seq > self.highest_seen:
            self.highest_seen = seq
        if seq == self.expected:
            self._process(msg)
            self._drain()
        elif seq > self.expected:
            self._hold(msg, seq)
        else:
            self._too_low(msg)

    def _hold(self, msg: RawMessage, seq: int) -> None:
        """Above the expected seq: keep it for later and ask for the gap. A TestRequest, a
        ResendRequest or a Logout is acted on at once (FIX Vol. 2: they must not wait behind
        a resend)."""
        if self._pending is None:
            self.counters["gaps_detected"] += 1
        entry: RawMessage | None = msg
        if msg.msg_type in (b"1", b"2", b"5"):
            self._admin[msg.msg_type](msg)
            entry = None
        if seq not in self._queue and len(self._queue) < self.max_queued:
            self._queue[seq] = entry
        self._request_gap()

    def _too_low(self, msg: RawMessage) -> None:
        if not msg.poss_dup:
            self.unflagged_duplicates += 1
            self.counters["seq_too_low"] += 1
            self._note(f"MsgSeqNum {msg.seq_num} (35={_s(msg.msg_type)}) below expected "
                       f"{self.expected} without PossDupFlag")
            return
        self.counters["stale_possdup"] += 1
        if msg.msg_type not in self._admin:
            found = self._identify(msg)
            if found is not None and found[0] in self.delivered:
                self.duplicates += 1

    def _process(self, msg: RawMessage) -> None:
        """The in-sequence message: consume its seq, then act on it by MsgType."""
        self.expected = (msg.seq_num or 0) + 1
        self._progress_at = asyncio.get_running_loop().time()
        handler = self._admin.get(msg.msg_type)
        if handler is not None:
            handler(msg)
        else:
            self._business(msg)

    def _drain(self) -> None:
        q = self._queue
        while q:
            if self.expected not in q:
                break
            m = q.pop(self.expected)
            if m is None:
                self.expected += 1
            else:
                self._process(m)
        self._request_gap()

    def _jump(self, new_seq: int) -> None:
        self.expected = new_seq
        self._progress_at = asyncio.get_running_loop().time()
        for s in [s for s in self._queue if s < new_seq]:
            del self._queue[s]
        self._drain()

    def _request_gap(self, force: bool = False) -> None:
        """Send a ResendRequest for the gap at the expected seq unless one is outstanding."""
        exp = self.expected
        top = min(self._queue) - 1 if self._queue else self.highest_seen
        if top < exp:
            self._pending = None
            return
        if not force and self._pending is not None and exp <= self._pending[1]:
            return
        if self.state not in ("active",) or not self.client.connected:
            return
        if self.resend_mode == "explicit":
            end = min(exp + self.resend_chunk - 1, top)
            self._pending = (exp, end)
        else:
            end = 0
            self._pending = (exp, top)         # the whole gap: asked again only if it stalls
        self.client.send("2", [(7, exp), (16, end)])
        self.gaps_requested += 1
        self.resend_requests.append((exp, end))
        self._progress_at = asyncio.get_running_loop().time()

    # -- admin messages (a table by MsgType) ------------------------------------------------------

    def _on_test_request(self, msg: RawMessage) -> None:
        self.counters["test_requests_answered"] += 1
        self.client.send("0", [(112, _s(msg.get(112)) or "")])

    def _on_resend_request(self, msg: RawMessage) -> None:
        """Everything we send is admin, so a ResendRequest is answered with one gap fill."""
        self.counters["resend_requests_served"] += 1
        begin = int(msg.get(7) or b"0")
        c = self.client
        if 1 <= begin < c.next_seq:
            c.gap_fill(begin, c.next_seq)

    def _on_reject(self, msg: RawMessage) -> None:
        self.rejects.append({"msg_type": "3", "ref_seq": _s(msg.get(45)),
                             "reason": _s(msg.get(373)), "text": _s(msg.get(58))})

    def _on_gap_fill(self, msg: RawMessage) -> None:
        new = int(msg.get(36) or b"0")
        if new > self.expected:
            self._jump(new)

    def _on_logout(self, msg: RawMessage) -> None:
        self.logout_texts.append(_s(msg.get(58)) or "")
        if self.state == "logout_sent":
            self.state = "logged_out"
            return
        self.state = "logged_out"
        if self.client.connected:
            self.client.send("5")

    # -- business messages ------------------------------------------------------------------------

    def _identify(self, msg: RawMessage
                  ) -> tuple[tuple[str, str], RawMessage, int | None, bool, str] | None:
        """(key, original, source seq, original flagged PossDup, front end) of a copy, or None
        (format problem noted)."""
        if msg.msg_type == b"n":
            try:
                items = Decoder(1 << 20).feed(unwrap_rtrf(msg))
            except ValueError as exc:
                self._note(f"ilink2 copy {msg.seq_num}: {exc}")
                return None
            if len(items) != 1 or not isinstance(items[0], RawMessage):
                self._note(f"ilink2 copy {msg.seq_num}: inner message does not decode: {items}")
                return None
            orig = items[0]
            source, source_seq, front = orig.header.get(49), orig.seq_num, "ilink2"
        else:
            orig, source, source_seq, front = msg, msg.header.get(115), None, "fix"
            if source is None:
                self._note(f"fix copy {msg.seq_num} without OnBehalfOfCompID (115)")
        mt = orig.msg_type.decode("latin-1")
        biz = message_key(mt, orig.get)
        if biz is None:
            biz = f"{mt}:seq{source_seq}" if source_seq is not None else f"{mt}:{hash(orig.body)}"
        return ((_s(source) or "?", biz), orig, source_seq, front == "ilink2" and orig.poss_dup,
                front)

    def _business(self, msg: RawMessage) -> None:
        h = msg.header
        if msg.msg_type == b"j" and 115 not in h:              # the gateway refusing us
            self.rejects.append({"msg_type": "j", "ref_seq": _s(msg.get(45)),
                                 "reason": _s(msg.get(380)), "text": _s(msg.get(58))})
            return
        if h.get(56) != self._comp_b or h.get(49) != self._gw_b:
            self._note(f"copy {msg.seq_num}: 49/56 are {h.get(49)!r}/{h.get(56)!r}")
        if (msg.poss_dup or msg.msg_type != b"n") and 122 not in h:
            self._note(f"copy {msg.seq_num}: no OrigSendingTime (122)")
        found = self._identify(msg)
        if found is None:
            return
        key, orig, source_seq, inner_dup, front = found
        self.front_end = front
        flagged = msg.poss_dup or inner_dup
        if key in self.delivered:
            if flagged:
                self.duplicates += 1
            else:
                self.unflagged_duplicates += 1
                self._note(f"copy {msg.seq_num}: {key} delivered again without PossDupFlag")
            return
        cat = category(orig)
        self.delivered[key] = Delivery(msg.seq_num or 0, orig.msg_type.decode("latin-1"), cat,
                                       key[0], source_seq, msg.poss_dup, _s(h.get(122)),
                                       (orig.raw if front == "ilink2" else msg.raw)
                                       if self.keep_raw else None)
        self.order.append(key)
        self.counts_by_category[cat or "none"] += 1
        self.counts_by_msg_type[orig.msg_type.decode("latin-1")] += 1
        if msg.poss_dup:
            self.counters["resent_received"] += 1
        self._since_connect += 1
        self._last_business = asyncio.get_running_loop().time()

    def _note(self, text: str) -> None:
        self.counters["format_errors_total"] += 1
        if len(self.format_errors) < _MAX_NOTES:
            self.format_errors.append(text)


# -- command line ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulators.target",
                                description="Drop copy target simulator: receives and checks "
                                "copies, prints one JSON line of statistics.")
    add_connection_args(p, comp_id_flag="--comp-id")
    p.add_argument("--sub-id", default="OPS", help="SenderSubID (50) on our Logon")
    p.add_argument("--count", type=int, help="stop after this many unique business messages")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--idle", type=float,
                   help="stop when nothing new arrived for this many seconds and no gap is open")
    p.add_argument("--timeout", type=float, default=None, help="hard bound, seconds")
    p.add_argument("--expected-seq", type=int, default=1,
                   help="first MsgSeqNum we expect (default 1: catch up on everything kept)")
    p.add_argument("--resend-mode", choices=("0", "explicit"), default="0")
    p.add_argument("--read-delay", type=float, default=0.0, help="seconds to sleep after a read")
    p.add_argument("--read-size", type=int, default=65536, help="bytes per read")
    p.add_argument("--rcvbuf", type=int, default=None, help="SO_RCVBUF bytes")
    p.add_argument("--drop-every", type=int, default=None,
                   help="drop the connection after this many deliveries, then log on again")
    p.add_argument("--max-drops", type=int, default=None)
    p.add_argument("--dictionary", default=None, metavar="NAME|PATH",
                   help="validate every message from the gateway against this data dictionary "
                        "(FIX.4.2, FIX.4.4, ILINK2 or a QuickFIX XML file); problems count as "
                        "format errors")
    return p


async def _amain(args: argparse.Namespace) -> dict[str, Any]:
    sim = TargetSimulator(args.host, args.port, args.comp_id, signer=signer_from_args(args),
                          gateway=args.gateway_comp_id, begin_string=args.begin_string,
                          sub_id=args.sub_id, heartbeat=args.heartbeat,
                          read_delay=args.read_delay, read_size=args.read_size,
                          rcvbuf=args.rcvbuf, drop_every=args.drop_every,
                          max_drops=args.max_drops, resend_mode=args.resend_mode,
                          dictionary=args.dictionary,
                          expected_seq=args.expected_seq, seq=args.seq, reset=args.reset,
                          addresses=addresses_from_args(args))
    timeout = args.timeout or max(args.duration or 0, 300.0)
    return await sim.run(count=args.count, duration=args.duration, idle=args.idle,
                         timeout=timeout)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    bounded = args.count is not None or args.duration is not None or args.idle is not None
    return command_main(args, _amain, None if bounded else
                        "give --count, --duration and/or --idle (the simulator stops by itself)")


if __name__ == "__main__":
    sys.exit(main())
