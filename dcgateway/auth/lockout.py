"""Port closure state: sessions locked after too many invalid Logons (docs/venue.md, "Logon rules":
the 5th invalid Logon within 60 s locks the session until an operator unlocks it).

The set of locked sessions is a small JSON file in the gateway's data dir, so a lock survives a
restart, and so ``dcgateway sessions unlock COMP_ID`` (another process) can lift it while the
gateway runs: the gateway re-reads the file when its stat signature changes (one ``stat`` per
Logon). Every write is a read-modify-write under an exclusive ``flock``, written atomically::

    {"version": 1,
     "locked": {"ABC123N": {"since": "2026-03-01T15:00:00Z", "reason": "bad_signature"}}}
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..fsutil import atomic_write, exclusive_lock, stat_signature

log = logging.getLogger("dcgateway.auth.lockout")

#: Default file name inside the gateway's data_dir.
STATE_FILE_NAME = "port-closures.json"
#: 58 Text of the Logout for the locking attempt and every attempt while locked (docs/venue.md).
PORT_CLOSURE_TEXT = ("(1000) Administered Port Closure Due to Invalid Number of Login Attempts "
                     "Being Exceeded")

_UNSET = object()


class PortClosures:
    """The persistent set of locked sessions (by SenderCompID)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._sig: Any = _UNSET
        self._locked: dict[str, dict[str, Any]] = {}
        self._invalid: dict[str, list[float]] = {}      # recent invalid Logons, per session

    def __repr__(self) -> str:
        return f"PortClosures({str(self.path)!r})"

    def _read(self) -> dict[str, dict[str, Any]]:
        """The file's content; raises :class:`StoreError` when it cannot be used."""
        try:
            with open(self.path, "rb") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise StoreError(f"port closure state {self.path} is unreadable: {e}") from None
        locked = doc.get("locked") if isinstance(doc, dict) else None
        if not isinstance(locked, dict):
            raise StoreError(f"port closure state {self.path}: expected an object with 'locked'")
        return {str(k): v if isinstance(v, dict) else {} for k, v in locked.items()}

    def _write(self, locked: dict[str, dict[str, Any]]) -> None:
        doc = {"version": 1, "locked": locked}
        atomic_write(self.path, json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n", 0o600)

    def refresh(self) -> None:
        """Re-read the file if another process changed it. Never raises (the gateway path): an
        unreadable file is logged and the last good state kept."""
        sig = stat_signature(self.path)
        if sig == self._sig:
            return
        try:
            self._locked = self._read()
        except StoreError as e:
            log.error("%s; keeping the %d lock(s) known before", e, len(self._locked))
        self._sig = sig

    def is_locked(self, comp_id: str) -> bool:
        self.refresh()
        return comp_id in self._locked

    def locked(self) -> dict[str, dict[str, Any]]:
        """``{comp_id: {"since": ISO8601, "reason": str}}`` for every locked session."""
        self.refresh()
        return {k: dict(v) for k, v in self._locked.items()}

    def lock(self, comp_id: str, *, now: float, reason: str) -> None:
        """Lock ``comp_id`` and persist it. Never raises: if the file cannot be written the lock
        still holds in memory (and the failure is logged)."""
        since = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        entry = {"since": since, "reason": reason}
        self._locked[comp_id] = entry
        try:
            with exclusive_lock(self.path):
                try:
                    locked = self._read()
                except StoreError as e:
                    log.error("%s; rewriting it from the locks known in memory", e)
                    locked = dict(self._locked)
                locked[comp_id] = entry
                self._write(locked)
                self._locked = locked
                self._sig = stat_signature(self.path)
        except OSError as e:
            log.error("could not persist the port closure of %s to %s: %s (the lock holds until "
                      "this process stops)", comp_id, self.path, e)

    def count_invalid(self, comp_id: str, now: float, window_s: float) -> int:
        """This invalid Logon of ``comp_id`` and the others within ``window_s`` seconds. In
        memory: one process serves the sessions of this file (the cluster's store counts
        them across its nodes)."""
        window = [t for t in self._invalid.get(comp_id, ()) if now - t <= window_s] + [now]
        self._invalid[comp_id] = window
        return len(window)

    def clear_invalid(self, comp_id: str, now: float) -> None:
        """A Logon accepted or the port closed: the count starts again."""
        self._invalid.pop(comp_id, None)

    def unlock(self, comp_id: str) -> bool:
        """Lift the lock of ``comp_id`` (``dcgateway sessions unlock``). True if it was locked.
        Raises :class:`StoreError` if the state file cannot be read or written."""
        self._invalid.pop(comp_id, None)
        with exclusive_lock(self.path):
            locked = self._read()
            was = locked.pop(comp_id, None) is not None or comp_id in self._locked
            self._locked.pop(comp_id, None)
            if was:
                try:
                    self._write(locked)
                except OSError as e:
                    raise StoreError(f"cannot write port closure state {self.path}: "
                                     f"{e.strerror}") from None
            self._locked = locked
            self._sig = stat_signature(self.path)
        if was:
            log.warning("port closure of %s lifted", comp_id)
        return was


def state_path(data_dir: str | os.PathLike[str]) -> Path:
    """Where the port closure state lives inside the gateway's ``data_dir``."""
    return Path(data_dir) / STATE_FILE_NAME


def locked_sessions(data_dir: str | os.PathLike[str]) -> list[str]:
    """SenderCompIDs currently locked (``dcgateway sessions list``), sorted."""
    return sorted(PortClosures(state_path(data_dir)).locked())


def unlock_session(data_dir: str | os.PathLike[str], comp_id: str, *, who: str = "unknown",
                   audit: Any = None) -> bool:
    """``dcgateway sessions unlock COMP_ID``: one call. The running gateway sees it at the next
    Logon of that session. ``audit`` (an :class:`~dcgateway.auth.audit.AuditLog`) records who."""
    was = PortClosures(state_path(data_dir)).unlock(comp_id)
    if audit is not None:
        audit.record("unlock", who=who, access_key_id=None, session_id=None, comp_id=comp_id,
                     was_locked=was)
    return was
