"""``data_dir/status.json``: what the running gateway tells other processes (``sessions list``,
the portal) about its sessions: which are connected and their sequence numbers. Rewritten
atomically when a session logs on or off, and at most once a second while sequence numbers move
(:meth:`StatusFile.tick`); removed at a clean stop. Readers trust it only while its pid lives
(:func:`dcgateway.state.read_status`).

Atomic but not fsynced: after a crash the pid is dead and the file is ignored, so durability
buys nothing, while the two fsyncs of a durable replace (the file, then its directory) would
stall the event loop, and every copy in flight with it, for a few milliseconds once a second."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..ratelog import RateLimitedLog
from ..state import STATUS_FILE_NAME

log = logging.getLogger("dcgateway")


class StatusFile:
    """``sessions``: the comp_ids this gateway serves (read from gateway.yaml when it started:
    a group naming another is refused by its reload). ``groups``: the routing table's version in
    use and the outcome of the last reload (:meth:`groups_reloaded`), so that a command that
    changed the groups can tell whether the gateway follows them."""

    def __init__(self, data_dir: Path, clock: Callable[[], float],
                 sequences: Callable[[], Mapping[str, tuple[int, int]]],
                 sessions: Sequence[str] = (), groups_version: str = "") -> None:
        self.path = Path(data_dir) / STATUS_FILE_NAME
        self.clock = clock
        self.sequences = sequences
        self.sessions = sorted(sessions)
        self.groups: dict[str, Any] = {"version": groups_version, "refused": None, "reloads": 0}
        self.port: int | None = None
        self.since: dict[str, float] = {}
        self._written: Any = None
        self._log = RateLimitedLog(log, interval=30.0)

    def groups_reloaded(self, version: str, refused: str | None) -> None:
        """A reload of the groups ran: ``version`` is the table in use now; ``refused`` why the
        groups read were refused (None: they are in use)."""
        self.groups = {"version": version, "refused": refused,
                       "reloads": self.groups["reloads"] + 1}
        self.write()

    def connected(self, name: str) -> None:
        self.since[name] = self.clock()
        self.write()

    def disconnected(self, name: str) -> None:
        if self.since.pop(name, None) is not None:
            self.write()

    def tick(self) -> None:
        """Once a second: rewrite if a sequence number moved."""
        if dict(self.sequences()) != self._written:
            self.write()

    def write(self) -> None:
        seqs = dict(self.sequences())
        doc = {"pid": os.getpid(), "port": self.port,
               "connected": dict(sorted(self.since.items())),
               "sequences": {k: list(v) for k, v in sorted(seqs.items())},
               "sessions": self.sessions, "groups": self.groups}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, 0o600)          # exactly 0600, whatever the umask
                os.write(fd, json.dumps(doc).encode())
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            self._written = seqs
        except OSError as exc:            # e.g. a full disk: once per 30 s, the rest counted
            self._log.log("write", logging.WARNING, "could not write %s: %s", self.path, exc)

    def remove(self) -> None:
        try:
            self.path.unlink()
        except OSError:
            pass
