"""What the gateway does on a schedule or on request, off the hot path: follow the groups in the
state store (a new routing table built aside and swapped in whole), drop journal segments past
retention, and reset every sequence at the start of the week."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from ..config import GatewayConfig
from ..errors import ConfigError, DcGatewayError
from ..fanout import Fanout
from ..journal import Committer, Journal
from ..metrics import GatewayMetrics
from ..net.acceptor import Acceptor
from ..net.connection import SessionSlot
from ..routing import RoutingTable
from ..state import GroupStore
from ..vocab import Role

log = logging.getLogger("dcgateway")

#: A changed groups file is read once it has stayed the same this long (seconds).
SETTLE_S = 0.2
#: Journal retention: at least this long, and through the current week (venue: 48 hours).
RETENTION_S = 48 * 3600


def week_start_before(config: GatewayConfig, now: float) -> float:
    """Epoch seconds of the most recent configured start of week at or before ``now``."""
    ws = config.gateway.week_start
    local = datetime.fromtimestamp(now, ws.tz)
    day = local.date() - timedelta(days=(local.weekday() - ws.day) % 7)
    start = datetime.combine(day, ws.time, ws.tz)
    if start.timestamp() > now:
        start = datetime.combine(day - timedelta(days=7), ws.time, ws.tz)
    return start.timestamp()


class Maintenance:
    def __init__(self, config: GatewayConfig, groups: GroupStore, fanout: Fanout,
                 journal: Journal, metrics: GatewayMetrics, acceptor: Acceptor,
                 slots: Mapping[str, SessionSlot], clock: Callable[[], float]) -> None:
        self.config = config
        self.groups = groups
        self.fanout = fanout
        self.journal = journal
        self.metrics = metrics
        self.acceptor = acceptor
        self.slots = slots
        self.clock = clock
        self.committer: Committer | None = None
        #: told of each reload: (the version in use, why the groups read were refused or None)
        self.on_reload: Callable[[str, str | None], None] | None = None

    # -- groups ---------------------------------------------------------------------------------

    def reload_groups(self) -> bool:
        """Re-read the groups and swap the routing table whole (SIGHUP, or the store changed).
        A bad set is refused with every problem logged; the old table stays."""
        table = self.fanout.table
        try:
            groups = self.groups.current()
            self._check_not_emptied(groups)
            new = RoutingTable.build(groups, {sd.comp_id: sd for sd in self.config.sessions})
        except (ConfigError, DcGatewayError, OSError) as exc:
            self.metrics.reload(False)
            log.error("groups reload refused, keeping version %s: %s", table.version, exc)
            if self.on_reload is not None:
                self.on_reload(table.version, str(exc))
            return False
        if new.version != table.version:
            self.config = self.config.with_groups(groups)
            self.fanout.swap_table(new)
            self.metrics.set_groups(groups)
            log.info("groups reloaded: version %s (%d groups)", new.version, len(groups))
        self.metrics.reload(True)
        if self.on_reload is not None:
            self.on_reload(new.version, None)
        return True

    def _check_not_emptied(self, groups: tuple[object, ...]) -> None:
        """Every group gone at once is what a file caught between an editor's truncation and
        its writing looks like (an empty file, comments only): refused unless the file says
        ``groups: []`` (a store that cannot say so, the cluster's, is written whole)."""
        if groups or not self.config.groups:
            return
        says = getattr(self.groups, "declares_no_groups", None)
        if says is not None and not says():
            raise ConfigError(f"{self.config.groups_file}: no groups list (an empty file, or "
                              f"a file still being written?), while {len(self.config.groups)} "
                              "groups are in use; expected `groups: []` to remove every group")

    async def watch_groups(self, interval: float = 1.0, settle: float = SETTLE_S) -> None:
        """Reload when the groups change. The CLI and the portal replace the file whole; an
        editor may write it in place, so a change is read only once the file has stayed the
        same for ``settle`` seconds (a file caught between its truncation and its last write
        would route by a part of the groups, or by none, until the next look)."""
        seen = self.groups.signature()
        while True:
            await asyncio.sleep(interval)
            sig = self.groups.signature()
            if sig == seen:
                continue
            await asyncio.sleep(settle)
            if self.groups.signature() != sig:
                continue                   # still being written: look again next time
            seen = sig
            self.reload_groups()

    # -- journal retention ----------------------------------------------------------------------

    async def retention(self, interval: float = 3600.0) -> None:
        """Drop journal segments older than 48 hours and than the start of the week."""
        while True:
            await asyncio.sleep(interval)
            now = self.clock()
            before = min(now - RETENTION_S, week_start_before(self.config, now))
            try:
                removed = self.journal.prune(before)
            except DcGatewayError as exc:
                log.error("journal retention failed: %s", exc)
                continue
            if removed:
                log.info("journal retention: removed %d old segments", removed)

    # -- weekly sequence reset ------------------------------------------------------------------

    async def weekly_reset(self) -> None:
        """Sequences reset weekly at gateway.week_start (the beginning of the week is 34=1)."""
        while True:
            now = self.clock()
            nxt = week_start_before(self.config, now) + 7 * 86400
            await asyncio.sleep(max(1.0, nxt - now))
            if self.clock() >= nxt - 1:
                await self.reset_sequences("weekly sequence reset")

    async def reset_sequences(self, reason: str) -> None:
        """Log every session out, then reset every session's sequences to 1 (both directions);
        the journal keeps the old week's messages until retention drops them, and copies a target
        never received are carried over to its new sequence."""
        log.warning("%s: logging out every session and resetting sequences", reason)
        self.acceptor.refusals["reset"] = f"{reason} in progress; log on again in a minute"
        try:
            await self._reset_all(reason)
        finally:
            self.acceptor.refusals.pop("reset", None)

    async def _reset_all(self, reason: str) -> None:
        assert self.committer is not None
        now = self.clock()
        for slot in self.slots.values():
            conn = slot.connection
            if conn is not None and conn.session is not None and not conn.session.closed:
                conn.session.logout(reason, now)
                conn.pump(now)
        for _ in range(50):                  # bounded wait for the Logout handshakes
            if all(sl.connection is None for sl in self.slots.values()):
                break
            await asyncio.sleep(0.1)
        for slot in self.slots.values():
            if slot.connection is not None:
                slot.connection.close(reason, abort=True)
        await asyncio.sleep(0)                # let connection_lost run for the aborted ones
        await self.committer.flush(timeout=30)
        for slot in self.slots.values():
            try:
                slot.store.reset()
                if slot.role == Role.SOURCE:
                    self.journal.append_source_next_in(slot.comp_id, 1)
            except Exception as exc:
                log.error("sequence reset of %s failed: %s", slot.comp_id, exc)
        self.committer.notify()
        await self.committer.flush(timeout=30)
