"""A small FIX initiator on asyncio streams, built on simplefix.

Used by the simulators and the integration tests. It is deliberately an independent
implementation (simplefix builds and parses; nothing from ``dcgateway.fix`` is used), so tests
that drive the gateway with it check the gateway's codec and session from the outside, the way a
counterparty's FIX engine would.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as _dt
import os
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import simplefix

Field = tuple[int, "str | bytes | int"]
#: (header fields, body fields) of a Logon -> credential fields to append (see dcgateway.auth).
LogonSigner = Callable[[list[Field], list[Field]], Sequence[Field]]


def sending_time(now: float | None = None) -> str:
    t = _dt.datetime.now(_dt.timezone.utc) if now is None else _dt.datetime.fromtimestamp(now, _dt.timezone.utc)
    return t.strftime("%Y%m%d-%H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def _s(v: str | bytes | int) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def get(msg: simplefix.FixMessage, tag: int) -> str | None:
    v = msg.get(tag)
    return None if v is None else v.decode("latin-1")


class FixClient:
    """Connects to ``host:port`` as ``sender`` talking to ``target``."""

    def __init__(self, host: str, port: int, sender: str, target: str = "DCGW", *,
                 begin_string: str = "FIX.4.2", heartbeat: int = 30,
                 signer: LogonSigner | None = None, sender_sub_id: str | None = None,
                 target_sub_id: str | None = "G", location_id: str | None = "US,IL",
                 app_system: tuple[str, str, str] | None = ("dcgw-sim", "1.0", "DCGW"),
                 ssl: Any = None, rcvbuf: int | None = None, read_size: int = 65536,
                 stream_limit: int = 1 << 16) -> None:
        """``target_sub_id`` (57), ``location_id`` (142) and ``app_system`` (1603/1604/1605) go on
        the Logon the way an iLink 2 client sends them (they are part of the signed canonical
        string); pass None to leave one out.

        ``rcvbuf`` (SO_RCVBUF, set before connecting so the TCP window honours it),
        ``read_size`` (bytes per read) and ``stream_limit`` (the StreamReader's buffer bound)
        let a simulator read slowly enough that the gateway really sees backpressure: with the
        defaults the kernel and asyncio buffer megabytes before the sender notices."""
        self.host = host
        self.port = port
        self.sender = sender
        self.target = target
        self.begin_string = begin_string
        self.heartbeat = heartbeat
        self.signer = signer
        self.sender_sub_id = sender_sub_id
        self.target_sub_id = target_sub_id
        self.location_id = location_id
        self.app_system = app_system
        self.ssl = ssl                        # an ssl.SSLContext for a TLS listener
        self.rcvbuf = rcvbuf
        self.read_size = read_size
        self.stream_limit = stream_limit
        self.last_sent_at = 0.0               # loop time of the last write (heartbeat timers)
        self.next_seq = 1
        self.expected_in = 1
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._parser = simplefix.FixParser()
        self.received: list[simplefix.FixMessage] = []

    # -- connection -------------------------------------------------------------------------

    async def connect(self, timeout: float = 5.0) -> None:
        hostname = self.host if self.ssl else None
        if self.rcvbuf is None:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self.ssl,
                                        server_hostname=hostname, limit=self.stream_limit),
                timeout)
        else:
            self.reader, self.writer = await asyncio.wait_for(self._open_small(hostname), timeout)
        self._parser = simplefix.FixParser()

    async def _open_small(self, hostname: str | None
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect a socket whose receive buffer was shrunk before connect (after it, Linux
        keeps the window it already advertised)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        family, type_, proto, _, addr = infos[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf or 0)
            sock.setblocking(False)
            await loop.sock_connect(sock, addr)
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock, ssl=self.ssl, server_hostname=hostname,
                                             limit=self.stream_limit)

    @property
    def connected(self) -> bool:
        """A connection is open and not known to be closing."""
        return self.writer is not None and not self.writer.transport.is_closing()

    def abort(self) -> None:
        """Drop the connection at once (no Logout, no FIN handshake wait): a crash or a cable
        pull as the peer sees it."""
        if self.writer is not None:
            self.writer.transport.abort()
            self.writer = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 2.0)
            except (ConnectionError, asyncio.TimeoutError):
                # what we sent was never read (a peer that stopped reading): drop it
                self.writer.transport.abort()
            self.writer = None

    # -- building and sending ---------------------------------------------------------------

    def build(self, msg_type: str, body: Iterable[Field] = (), *, seq: int | None = None,
              header: Sequence[Field] = (), poss_dup: bool = False,
              orig_sending_time: str | None = None, when: str | None = None,
              sender: str | None = None, target: str | None = None,
              begin_string: str | None = None) -> bytes:
        """Encode one message; consumes a sequence number unless ``seq`` is given."""
        if seq is None:
            seq = self.next_seq
            self.next_seq += 1
        m = simplefix.FixMessage()
        m.append_pair(8, begin_string or self.begin_string)
        m.append_pair(35, msg_type)
        m.append_pair(49, sender or self.sender)
        m.append_pair(56, target or self.target)
        m.append_pair(34, seq)
        if self.sender_sub_id and not any(t == 50 for t, _ in header):
            m.append_pair(50, self.sender_sub_id)
        for t, v in header:
            m.append_pair(t, _s(v))
        if poss_dup:
            m.append_pair(43, "Y")
        m.append_pair(52, when or sending_time())
        if orig_sending_time is not None:
            m.append_pair(122, orig_sending_time)
        for t, v in body:
            m.append_pair(t, _s(v))
        raw: bytes = m.encode()
        return raw

    def send_raw(self, data: bytes) -> None:
        assert self.writer is not None, "not connected"
        self.writer.write(data)
        self.last_sent_at = asyncio.get_running_loop().time()

    def gap_fill(self, seq: int, new_seq: int) -> bytes:
        """SequenceReset-GapFill (35=4, 123=Y, 36=new_seq) sent as seq ``seq`` with 43=Y and
        122 (FIX Vol. 2 "Resend Request": admin messages are not re-sent but gap-filled)."""
        now = sending_time()
        return self.send("4", [(123, "Y"), (36, new_seq)], seq=seq, poss_dup=True,
                         orig_sending_time=now, when=now)

    def send(self, msg_type: str, body: Iterable[Field] = (), **kw: Any) -> bytes:
        data = self.build(msg_type, body, **kw)
        self.send_raw(data)
        return data

    def logon_message(self, *, reset: bool = False, seq: int | None = None,
                      extra_header: Sequence[Field] = (), extra_body: Sequence[Field] = (),
                      heartbeat: int | None = None, when: str | None = None) -> bytes:
        if reset:
            self.next_seq = 1
            self.expected_in = 1
        if seq is None:
            seq = self.next_seq
        self.next_seq = seq + 1
        hb = self.heartbeat if heartbeat is None else heartbeat
        header: list[Field] = [(34, seq)]
        if self.sender_sub_id:
            header.append((50, self.sender_sub_id))
        if self.location_id:
            header.append((142, self.location_id))
        if self.target_sub_id:
            header.append((57, self.target_sub_id))
        header += list(extra_header)
        when = when or sending_time()
        header.append((52, when))
        header.append((369, self.expected_in - 1))
        body: list[Field] = [(98, 0), (108, hb)]
        if reset:
            body.append((141, "Y"))
        if self.app_system:
            body += [(1603, self.app_system[0]), (1604, self.app_system[1]),
                     (1605, self.app_system[2])]
        body += list(extra_body)
        if self.signer is not None:
            body += self.signer([(49, self.sender), (56, self.target)] + header, body)
        m = simplefix.FixMessage()
        m.append_pair(8, self.begin_string)
        m.append_pair(35, "A")
        m.append_pair(49, self.sender)
        m.append_pair(56, self.target)
        for t, v in header:
            m.append_pair(t, _s(v))
        for t, v in body:
            m.append_pair(t, _s(v))
        raw: bytes = m.encode()
        return raw

    async def logon(self, timeout: float = 5.0, **kw: Any) -> simplefix.FixMessage:
        """Send a Logon and return the gateway's first answer (a Logon, or a Logout)."""
        if self.writer is None:
            await self.connect()
        self.send_raw(self.logon_message(**kw))
        reply = await self.recv(timeout)
        if reply is None:
            raise ConnectionError("gateway closed the connection without answering the Logon")
        return reply

    async def logout(self, text: str = "bye", timeout: float = 5.0) -> simplefix.FixMessage | None:
        self.send("5", [(58, text)])
        return await self.expect("5", timeout)

    # -- receiving --------------------------------------------------------------------------

    async def recv(self, timeout: float = 5.0) -> simplefix.FixMessage | None:
        """Next message, or None at EOF. Raises asyncio.TimeoutError when nothing comes."""
        assert self.reader is not None, "not connected"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg = self._parser.get_message()
            if msg is not None:
                self.received.append(msg)
                seq = get(msg, 34)
                if seq is not None and seq.isdigit():
                    self.expected_in = max(self.expected_in, int(seq) + 1)
                return msg
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError(f"{self.sender}: nothing received within {timeout}s")
            try:
                data = await asyncio.wait_for(self.reader.read(self.read_size), left)
            except ConnectionError:
                return None
            if not data:
                return None
            self._parser.append_buffer(data)

    async def read_raw(self, timeout: float) -> bytes | None:
        """Up to ``read_size`` bytes as they come (for callers doing their own framing): b"" at
        EOF or on a connection error, None when nothing arrived within ``timeout``."""
        if self.reader is None:
            return b""
        try:
            return await asyncio.wait_for(self.reader.read(self.read_size), timeout)
        except asyncio.TimeoutError:
            return None
        except (ConnectionError, OSError):
            return b""

    async def expect(self, msg_type: str, timeout: float = 5.0,
                     skip: Iterable[str] = ("0",)) -> simplefix.FixMessage:
        """Next message of ``msg_type``, skipping heartbeats (and ``skip`` types)."""
        skip = set(skip)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg = await self.recv(max(0.01, deadline - loop.time()))
            if msg is None:
                raise ConnectionError(f"{self.sender}: connection closed while waiting for 35={msg_type}")
            mt = get(msg, 35)
            if mt == msg_type:
                return msg
            if mt == "1":                       # answer TestRequests like a real engine
                self.send("0", [(112, get(msg, 112) or "")])
                continue
            if mt not in skip:
                raise AssertionError(f"{self.sender}: expected 35={msg_type}, got {msg}")

    async def wait_closed(self, timeout: float = 5.0) -> list[simplefix.FixMessage]:
        """Read until the gateway closes the connection; returns what arrived meanwhile."""
        got: list[simplefix.FixMessage] = []
        while True:
            msg = await self.recv(timeout)
            if msg is None:
                return got
            got.append(msg)


# -- cluster failover ---------------------------------------------------------------------------

_SERVED_AT = re.compile(r" at (\S+):(\d+); log on there")
#: What a cluster node says while no node serves the session yet (a takeover in progress).
NO_NODE_TEXT = "no node serves session"


class Addresses:
    """The gateway's addresses in the order configured (a cluster's nodes), for a client that
    fails over by itself: :meth:`next` after a connection is refused or dropped, :meth:`named`
    when a node's Logout says which node serves the session (``... at HOST:PORT; log on
    there``)."""

    def __init__(self, addresses: Sequence[tuple[str, int]]) -> None:
        if not addresses:
            raise ValueError("at least one address")
        self.all = [(str(h), int(p)) for h, p in addresses]
        self.i = 0

    @property
    def current(self) -> tuple[str, int]:
        return self.all[self.i]

    def next(self) -> tuple[str, int]:
        self.i = (self.i + 1) % len(self.all)
        return self.current

    def named(self, text: str) -> tuple[str, int] | None:
        """The address a redirecting Logout names (made current), or None."""
        m = _SERVED_AT.search(text)
        if m is None:
            return None
        addr = (m[1].strip("[]"), int(m[2]))
        if addr not in self.all:
            self.all.append(addr)
        self.i = self.all.index(addr)
        return addr


def is_redirect(text: str) -> bool:
    """A cluster node's answer to a Logon it does not serve (log on elsewhere or again)."""
    return _SERVED_AT.search(text) is not None or NO_NODE_TEXT in text


# -- credentials for the command-line simulators -----------------------------------------------

def load_key_file(path: str | os.PathLike[str], comp_id: str | None = None) -> tuple[str, str]:
    """(Access Key ID, Secret Key) from a key file as ``dcgateway keys download`` writes it (CSV:
    Session ID, Access ID, Secret Key, Creation Date, Expiration Date, Environment). With several
    rows, the one whose Session ID ``comp_id`` starts with (iLink: the first 3 characters;
    plain FIX: the whole CompID), else the first. Errors never include the secret."""
    with open(Path(path), newline="", encoding="ascii") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("Access ID") and r.get("Secret Key")]
    if not rows:
        raise ValueError(f"{path}: no key pair (expected CSV columns 'Access ID', 'Secret Key')")
    if comp_id is not None:
        for r in rows:
            sid = (r.get("Session ID") or "").strip()
            if sid and comp_id.startswith(sid):
                return r["Access ID"].strip(), r["Secret Key"].strip()
    return rows[0]["Access ID"].strip(), rows[0]["Secret Key"].strip()


def add_connection_args(parser: Any, *, comp_id_flag: str) -> None:
    """The options every simulator command shares: where to connect and how to sign."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--failover", metavar="HOST:PORT,...", default="",
                        help="the other nodes of a cluster, tried in order when a node is "
                             "down or names the node serving the session")
    parser.add_argument(comp_id_flag, dest="comp_id", required=True,
                        help="our SenderCompID (a session configured on the gateway)")
    parser.add_argument("--gateway-comp-id", default="DCGW", help="the gateway's CompID (56)")
    parser.add_argument("--begin-string", default="FIX.4.2", choices=("FIX.4.2", "FIX.4.4"))
    parser.add_argument("--heartbeat", type=int, default=30, help="HeartBtInt (108), seconds")
    parser.add_argument("--key-file", help="key file CSV from `dcgateway keys download`")
    parser.add_argument("--access-key-id")
    parser.add_argument("--secret", help="the Secret Key (prefer --key-file or $DCGW_SECRET: "
                        "a command line is visible to other users)")
    parser.add_argument("--seq", type=int, default=None,
                        help="MsgSeqNum of our Logon (default 1, or the gateway's 789 on refusal)")
    parser.add_argument("--reset", action="store_true",
                        help="Logon with 141=Y: both sequences start again at 1")


def signer_from_args(args: Any) -> LogonSigner:
    """The Logon signer for ``--key-file`` or ``--access-key-id`` + ``--secret``/$DCGW_SECRET.
    Raises ValueError naming what is missing (never echoing a secret)."""
    from dcgateway.auth import logon_signer  # the gateway's client-side signing helper

    key_id: str | None
    secret: str | None
    if args.key_file:
        key_id, secret = load_key_file(args.key_file, args.comp_id)
    else:
        key_id, secret = args.access_key_id, args.secret or os.environ.get("DCGW_SECRET")
        if not key_id or not secret:
            raise ValueError("give --key-file, or --access-key-id with --secret (or $DCGW_SECRET)")
    return logon_signer(key_id, secret)


def run_main(coro: Any) -> Any:
    """Run a simulator's top-level coroutine, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:                        # pragma: no cover - uvloop is a dependency
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def command_main(args: Any, amain: Callable[[Any], Any], unbounded: str | None) -> int:
    """A simulator command's body: refuse an unbounded run (``unbounded`` is the error text, or
    None when the arguments bound it), run ``amain(args)``, print its summary as one JSON line.
    Exit 0, 1 when the summary reports an error, 2 for a usage error."""
    import json
    import sys
    if unbounded is not None:
        print(f"error: {unbounded}", file=sys.stderr)
        return 2
    try:
        summary = run_main(amain(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0 if summary.get("error") is None else 1


def addresses_from_args(args: Any) -> list[tuple[str, int]]:
    """--host/--port first, then --failover's HOST:PORT list."""
    out = [(args.host, args.port)]
    for item in filter(None, (getattr(args, "failover", "") or "").split(",")):
        host, _, port = item.strip().rpartition(":")
        out.append((host or "127.0.0.1", int(port)))
    return out
