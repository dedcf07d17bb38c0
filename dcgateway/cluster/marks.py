"""What the cluster knows was acknowledged: a high-water mark of the journal stream, so that no
node ever serves from a stream that holds less.

Why: JetStream acknowledges a record once a quorum of the stream's replicas has it, but a
quorum lost at once (two servers of three SIGKILLed, a power cut in two failure domains) can
come back with a stream leader that holds fewer records than were acknowledged (the Jepsen
analysis of NATS, 2025, found such losses; the project's own audit reproduced one). A node that
took over from that stream would give the lost records' target sequence numbers to new copies
(a target then holds two different messages under one sequence number) and never resend what
was lost. So every record the serving node saw acknowledged moves a mark, kept in two places:

* a file beside the node's local journal (``data_dir/<node>/journal-acked.json``), written
  every half second while it serves and when it stops (never by the stream: a lost quorum
  cannot take it back);
* the key ``journal.acked`` of the cluster's ``marks`` bucket, so that a node that never
  served (or served long ago) knows it too; only ever raised (compare-and-set).

A mark is the stream sequence of the last record acknowledged and that record's message id.
Before a takeover reads the stream, :func:`stream_problem` compares it with both marks: the
stream must reach the mark's sequence and hold, at that sequence, the record with the mark's
id (the stream was not rewritten after a loss). Otherwise the node refuses to serve
(:class:`StreamBehind`), keeps its local copy (the records the stream lost are there) and says
what the operator can do. A mark is a lower bound (it lags by up to half a second), never an
overstatement, so a healthy stream always passes.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from ..errors import DcGatewayError

log = logging.getLogger("dcgateway.cluster")

MARK_FILE_NAME = "journal-acked.json"
MARK_KEY = "journal.acked"
MSG_ID = "Nats-Msg-Id"


@dataclass(frozen=True, slots=True)
class Mark:
    """The last record of ``stream`` seen acknowledged: its sequence and message id."""

    stream: str
    seq: int
    msg_id: str = ""

    def to_json(self) -> bytes:
        return json.dumps({"stream": self.stream, "seq": self.seq,
                           "msg_id": self.msg_id}).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Mark:
        doc = json.loads(data)
        return cls(str(doc["stream"]), int(doc["seq"]), str(doc.get("msg_id") or ""))


class StreamBehind(DcGatewayError):
    """The journal stream holds less than was acknowledged: this node refuses to serve."""

    def __init__(self, text: str, missing: int) -> None:
        super().__init__(text)
        self.missing = missing


class MarkFile:
    """The node's own mark (module docstring), one small JSON file replaced atomically."""

    def __init__(self, path: Path, stream: str) -> None:
        self.path = path
        self.stream = stream
        self.written: Mark | None = None

    def read(self) -> Mark | None:
        try:
            mark = Mark.from_json(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # a file cut short by a crash: what it said is unknown; the shared mark remains
            log.error("the journal mark %s is unreadable (%s); it is ignored", self.path, exc)
            return None
        return mark if mark.stream == self.stream else None

    def write(self, mark: Mark) -> None:
        """Raise the mark to ``mark`` (never lowered); no fsync: a mark lost in a power cut
        leaves an older, lower one, which is still true."""
        have = self.written or self.read()
        if have is not None and have.seq >= mark.seq:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(mark.to_json())
        os.replace(tmp, self.path)
        self.written = mark


async def shared_mark(kv: Any, stream: str) -> Mark | None:
    """The cluster's mark (None: none yet)."""
    try:
        e = await kv.get(MARK_KEY)
    except (KeyNotFoundError, NotFoundError):
        return None
    if not e.value:
        return None
    try:
        mark = Mark.from_json(e.value)
    except (ValueError, KeyError, TypeError):
        return None
    return mark if mark.stream == stream else None


async def raise_shared_mark(kv: Any, mark: Mark, attempts: int = 5) -> None:
    """Raise the cluster's mark to ``mark`` unless it is already as high (compare-and-set:
    two nodes raising it never lower each other's)."""
    for _ in range(attempts):
        try:
            e = await kv.get(MARK_KEY)
            rev, have = e.revision, (Mark.from_json(e.value) if e.value else None)
        except (KeyNotFoundError, NotFoundError):
            rev, have = None, None
        if have is not None and have.stream == mark.stream and have.seq >= mark.seq:
            return
        try:
            if rev is None:
                await kv.create(MARK_KEY, mark.to_json())
            else:
                await kv.update(MARK_KEY, mark.to_json(), last=rev)
            return
        except KeyWrongLastSequenceError:
            continue


async def stream_problem(js: Any, stream: str, first: int, last: int,
                         mark: Mark) -> tuple[str, int] | None:
    """Why the stream (records ``first``..``last``) cannot be served from, given ``mark``
    (and how many acknowledged records it lacks, at least 1); None when it holds the mark."""
    if last < mark.seq:
        return (f"the journal stream {stream} ends at record {last}, but record {mark.seq} "
                f"was acknowledged", mark.seq - last)
    if not mark.msg_id or mark.seq < max(first, 1):
        return None                       # gone by retention: its sequence still counts
    try:
        msg = await js.get_msg(stream, mark.seq)
        got = (msg.headers or {}).get(MSG_ID, "")
    except NotFoundError:
        got = "(none: deleted)"
    if got != mark.msg_id:
        return (f"record {mark.seq} of the journal stream {stream} is not the record that was "
                f"acknowledged there (message id {got!r}, expected {mark.msg_id!r}): the "
                f"stream lost records and was written again", 1)
    return None
