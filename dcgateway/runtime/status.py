"""``data_dir/status.json``: what the running gateway tells other processes (``sessions list``,
the portal) about its sessions: which are connected and their sequence numbers. Rewritten
atomically when a session logs on or off, and at most once a second while sequence numbers move
(:meth:`StatusFile.tick`); removed at a clean stop. Readers trust it only while its pid lives
(:func:`dcgateway.state.read_status`).

Atomic but not fsynced: after a crash the pid is dead and the file is ignored, so durability
buys nothing. Written by a thread of its own, never on the event loop: even without an fsync, a
rename over the old file can wait seconds on a slow disk (ext4's ``auto_da_alloc`` flushes the
replaced file's data first), and every session would wait with it. The loop only builds the
document; the thread writes the latest one (a burst of changes costs one write)."""

from __future__ import annotations

import json
import logging
import os
import threading
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
        self._cond = threading.Condition()
        self._pending: bytes | None = None    # the latest document not written yet
        self._busy = False                    # the writer thread is writing one
        self._stopping = False
        self._worker: threading.Thread | None = None

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
        """The current document handed to the writer thread (returns at once)."""
        seqs = dict(self.sequences())
        doc = {"pid": os.getpid(), "port": self.port,
               "connected": dict(sorted(self.since.items())),
               "sequences": {k: list(v) for k, v in sorted(seqs.items())},
               "sessions": self.sessions, "groups": self.groups}
        self._written = seqs
        with self._cond:
            if self._stopping:
                return
            self._pending = json.dumps(doc).encode()
            self._cond.notify()
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._run, name="status-file", daemon=True)
            self._worker.start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the last document handed over is written (the start, tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._busy,
                                       timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._stopping)
                data, self._pending = self._pending, None
                self._busy = data is not None
            if data is None:                      # stopping: the file goes, by this thread,
                self._unlink()                    # after any write it had under way
                return
            try:
                self._store(data)
            except Exception:                     # never silently: a frozen file misleads
                log.exception("could not write %s", self.path)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _store(self, data: bytes) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, 0o600)          # exactly 0600, whatever the umask
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:            # e.g. a full disk: once per 30 s, the rest counted
            self._written = None          # written again at the next tick
            self._log.log("write", logging.WARNING, "could not write %s: %s", self.path, exc)

    def remove(self, timeout: float = 2.0) -> None:
        """At a clean stop: no more writes, and the file is removed, by the writer thread once
        a write under way has finished (waited for up to ``timeout``: on a stalled disk the
        thread removes it later, never to be replaced again)."""
        with self._cond:
            self._stopping = True
            self._pending = None
            self._cond.notify_all()
            worker = self._worker
        if worker is None or not worker.is_alive():
            self._unlink()
            return
        worker.join(timeout)

    def _unlink(self) -> None:
        for path in (self.path, self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")):
            try:
                path.unlink()
            except OSError:
                pass
