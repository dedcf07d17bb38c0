"""Is the journal writable? The answer behind ``/healthz``, the ``dcgateway_journal_writable``
gauge and the Logons refused during a disk outage.

It turns unhealthy when a commit fails (disk full, I/O error) or when a write probe fails (at
start, so a gateway restarted on a full disk does not claim to be fine, and every ten seconds);
it turns healthy again when a commit succeeds (unless the last probe failed: writes through
files already open go on in a journal folder that was removed, which a probe alone notices),
or, with nothing waiting to be committed, when a probe succeeds. While unhealthy, an
authenticated Logon is answered with a Logout saying why (sources are asked again for anything
not journaled when they come back), and a probe runs once a second."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..journal import Journal
from ..ratelog import RateLimitedLog

log = logging.getLogger("dcgateway")

#: The reason an authenticated Logon hears while the journal cannot be written.
UNWRITABLE_TEXT = "gateway cannot store messages right now (storage fault); log on again later"
PROBE_BYTES = 4096


class JournalHealth:
    def __init__(self, journal: Journal, directory: Path,
                 on_change: Callable[[bool], None] = lambda ok: None) -> None:
        self.journal = journal
        self.probe_path = Path(directory) / ".write-probe"
        self.on_change = on_change
        self.ok = True
        self.reason = ""
        # only a probe clears it: writes through open files may go on in a folder that is gone
        self._probe_failed = False
        self._log = RateLimitedLog(log, interval=30.0)

    def check(self, listening: bool) -> tuple[bool, str]:
        """``/healthz``: (ok, why) from the FIX listener's state and the journal's."""
        if not listening:
            return False, "FIX listener is down"
        if not self.ok:
            return False, f"journal is not writable: {self.reason}"
        return True, "ok"

    def _set(self, ok: bool, reason: str = "") -> None:
        changed = ok != self.ok
        self.ok, self.reason = ok, reason
        if changed:
            if ok:
                log.warning("journal writable again")
            self.on_change(ok)

    def probe_io(self) -> str | None:
        """Write and fsync a small file next to the journal: None, or why it failed (runs in
        a worker thread: a busy disk's fsync must not stall the loop)."""
        try:
            fd = os.open(self.probe_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, bytes(PROBE_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.unlink(self.probe_path)
        except OSError as exc:
            return f"cannot write in {self.probe_path.parent}: {exc.strerror or exc}"
        return None

    def probe(self, result: str | None | bool = False) -> bool:
        """Apply a probe's outcome (run it here when not given); on the loop thread."""
        error = self.probe_io() if result is False else result
        if error is not None:
            self._probe_failed = True
            self._log.log("probe", logging.ERROR, "journal: %s (Logons refused until a write "
                          "in it succeeds; a journal folder that is gone is lost at a restart)",
                          error)
            self._set(False, str(error))
            return False
        self._probe_failed = False
        if self.journal.appended_lsn <= self.journal.durable_lsn:
            self._set(True)
        return True

    def failed(self, reason: str) -> None:
        self._log.log("journal", logging.ERROR, "journal: %s (copies are held and Logons "
                      "refused until the disk recovers)", reason)
        self._set(False, reason)

    def committed(self) -> None:
        """Records became durable. Healthy again only once nothing appended is left unwritten:
        a background sync of records written before a write failed is no sign of recovery."""
        if not self._probe_failed and self.journal.written_lsn >= self.journal.appended_lsn:
            self._set(True)

    async def watch(self, unhealthy_every: float = 1.0, healthy_every: float = 10.0) -> None:
        """Probe once a second while unhealthy, every ten seconds otherwise (a disk that fills
        while no message is being journaled is noticed too)."""
        while True:
            await asyncio.sleep(unhealthy_every if not self.ok else healthy_every)
            self.probe(await asyncio.to_thread(self.probe_io))
