"""The journal seam: what the fan-out, the target sessions and the composition root need of a
journal, so that a replicated implementation can stand beside the segment-file one without the
session, routing or outbox code changing.

A journal takes, on the event-loop thread, every source message with the target sequence numbers
assigned to it (:meth:`Journal.append`) and the sources' inbound sequence markers; it makes them
durable in the background (its :class:`Committer`: one fsync per batch for the segment files, a
quorum acknowledgement for a replicated log) and says so with ``on_durable(lsn)``, where LSNs are
the journal's own increasing record numbers; it serves a target's copies back by target sequence
number (resends, catch-up); and on start it recovers the sequence state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .recovery import Recovery


@dataclass(frozen=True, slots=True)
class Entry:
    """One journaled source message as seen by one target."""

    target_seq: int
    source: str            # source SenderCompID
    source_seq: int
    received: float        # epoch seconds when the gateway received it
    raw: bytes             # the complete original message bytes (8=...10=), verbatim
    lsn: int


class Journal(Protocol):
    """The journal as its users see it (owner thread: the event loop)."""

    #: what :attr:`durable_lsn` means: ``fsync`` (on the disk) or ``os`` (written to the OS)
    durability: str

    @property
    def appended_lsn(self) -> int: ...

    @property
    def written_lsn(self) -> int: ...

    @property
    def durable_lsn(self) -> int:
        """Up to here copies may leave: the records are as durable as the journal's
        durability mode promises (on the disk, written to the OS, or replicated)."""
        ...

    @property
    def synced_lsn(self) -> int:
        """Up to here the records are on this machine's disk (fdatasync'd)."""
        ...

    @property
    def unsynced_bytes(self) -> int:
        """Bytes written to the OS and not on the disk yet (what the journal keeps to write
        again should an fdatasync fail)."""
        ...

    def recover(self) -> Recovery: ...

    def append(self, source: str, source_seq: int, received: float, raw: bytes,
               targets: Sequence[tuple[str, int]]) -> int:
        """Journal one source message with its (target, target seq) assignments; its LSN."""
        ...

    def append_source_next_in(self, source: str, next_in: int) -> int: ...

    def flush_writes(self, upkeep: bool = True) -> int: ...

    def upkeep(self, idle: bool = False) -> None:
        """What follows a write off the copies' path (index runs, snapshots); ``idle``: no
        write for a while, so what is deferred for batching (index runs) is written now."""
        ...

    def sync(self) -> int:
        """Make everything appended durable as the mode promises, now (blocking; rare: a
        target's Logon, a source's sequence reset); the new durable LSN."""
        ...

    def sync_to_disk(self) -> int:
        """fdatasync what was written, whatever the mode (a committer's worker thread); the new
        synced LSN."""
        ...

    def read_target(self, target: str, from_seq: int, to_seq: int, *,
                    durable_only: bool = True) -> list[Entry]: ...

    def target_last_seq(self, target: str) -> int: ...

    def reset_target(self, target: str) -> None: ...

    def prune(self, before: float) -> int: ...

    @property
    def checkpoint_due(self) -> bool: ...

    def checkpoint(self) -> bool: ...

    def hand_rolls_to(self, worker: bool) -> None:
        """Leave the disk work of starting a new segment (or whatever the journal's equivalent)
        to a worker thread that calls :meth:`roll` when :attr:`roll_due`: the owner thread then
        never waits for the disk there."""
        ...

    @property
    def roll_due(self) -> bool: ...

    def roll(self) -> bool: ...

    def close(self) -> None: ...


class Committer(Protocol):
    """Makes appended records durable in the background and reports it (``on_durable``)."""

    def notify(self) -> None: ...

    def commit_now(self) -> None: ...

    def sync_state(self) -> tuple[float, int]:
        """(seconds the durability step in flight has run, records not yet durable on the
        medium): for the gauges."""
        ...

    async def run(self) -> None: ...

    async def flush(self, timeout: float | None = None) -> int: ...
