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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..state import STATUS_FILE_NAME

log = logging.getLogger("dcgateway")


class StatusFile:
    def __init__(self, data_dir: Path, clock: Callable[[], float],
                 sequences: Callable[[], Mapping[str, tuple[int, int]]]) -> None:
        self.path = Path(data_dir) / STATUS_FILE_NAME
        self.clock = clock
        self.sequences = sequences
        self.port: int | None = None
        self.since: dict[str, float] = {}
        self._written: Any = None

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
               "sequences": {k: list(v) for k, v in sorted(seqs.items())}}
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
        except OSError as exc:
            log.warning("could not write %s: %s", self.path, exc)

    def remove(self) -> None:
        try:
            self.path.unlink()
        except OSError:
            pass
