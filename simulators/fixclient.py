"""A small FIX initiator on asyncio streams, built on simplefix.

Used by the simulators and the integration tests. It is deliberately an independent
implementation (simplefix builds and parses; nothing from ``dcgateway.fix`` is used), so tests
that drive the gateway with it check the gateway's codec and session from the outside, the way a
counterparty's FIX engine would.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import simplefix

Field = tuple[int, "str | bytes | int"]
#: (header fields, body fields) of a Logon -> credential fields to append (see dcgateway.auth).
LogonSigner = Callable[[list[Field], list[Field]], list[Field]]


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
                 ssl: Any = None) -> None:
        """``target_sub_id`` (57), ``location_id`` (142) and ``app_system`` (1603/1604/1605) go on
        the Logon the way an iLink 2 client sends them (they are part of the signed canonical
        string); pass None to leave one out."""
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
        self.next_seq = 1
        self.expected_in = 1
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._parser = simplefix.FixParser()
        self.received: list[simplefix.FixMessage] = []

    # -- connection -------------------------------------------------------------------------

    async def connect(self, timeout: float = 5.0) -> None:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self.ssl,
                                    server_hostname=self.host if self.ssl else None), timeout)
        self._parser = simplefix.FixParser()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 2.0)
            except (ConnectionError, asyncio.TimeoutError):
                pass
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
        return m.encode()

    def send_raw(self, data: bytes) -> None:
        assert self.writer is not None, "not connected"
        self.writer.write(data)

    def send(self, msg_type: str, body: Iterable[Field] = (), **kw) -> bytes:
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
        return m.encode()

    async def logon(self, timeout: float = 5.0, **kw) -> simplefix.FixMessage:
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
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except ConnectionError:
                return None
            if not data:
                return None
            self._parser.append_buffer(data)

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
        got = []
        while True:
            msg = await self.recv(timeout)
            if msg is None:
                return got
            got.append(msg)
