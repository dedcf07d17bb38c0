"""The metrics pump: the hot path counts in plain ints (the fan-out's per-source and per-group
counters, each outbox's copies by category, each slot's bytes); once a second, and before every
scrape, the differences since the last push go to Prometheus. Nothing on the per-message path
calls into prometheus_client."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

from ..fanout import Fanout, Outbox
from ..metrics import GatewayMetrics
from ..net.connection import SessionSlot


class MetricsPump:
    def __init__(self, metrics: GatewayMetrics, fanout: Fanout, outboxes: Mapping[str, Outbox],
                 slots: Mapping[str, SessionSlot]) -> None:
        self.metrics = metrics
        self.fanout = fanout
        self.outboxes = outboxes
        self.slots = slots
        self._pushed: dict[object, int] = {}
        for name, o in outboxes.items():
            o.observe_latencies = partial(metrics.observe_fanout_latencies, name)
        #: (seconds the fsync in flight has run, records not on the disk), once the committer
        #: runs (the composition root sets it)
        self.journal_state: Callable[[], tuple[float, int]] | None = None

    def _delta(self, key: object, total: int) -> int:
        d = total - self._pushed.get(key, 0)
        self._pushed[key] = total
        return d

    def push(self) -> None:
        m, f = self.metrics, self.fanout
        if self.journal_state is not None:
            m.journal_sync_state(*self.journal_state())
        for (source, cat), n in list(f.in_counts.items()):
            d = self._delta(("in", source, cat), n)
            if d:
                m.messages_in(source, cat, d)
        for group, n in list(f.group_counts.items()):
            d = self._delta(("group", group), n)
            if d:
                m.group_copy(group, d)
        records = self._delta("records", f.messages_in)
        nbytes = self._delta("bytes", f.journal_bytes)
        if records:
            m.journal_append(records, nbytes)
        for name, o in self.outboxes.items():
            if o.adapter is not None:
                d1 = self._delta(("untr", name), o.adapter.untranslatable)
                d2 = self._delta(("drop", name), o.adapter.fields_dropped)
                if d1 or d2:
                    m.untranslatable(name, d1, d2)
            o.flush_latencies()
            for cat, n in list(o.out_counts.items()):
                d = self._delta(("out", name, cat), n)
                if d and cat is not None:
                    m.messages_out(name, cat, d)
        for name, slot in self.slots.items():
            d = self._delta(("bin", name), slot.bytes_in)
            if d:
                m.bytes_in(name, d)
            d = self._delta(("bout", name), slot.bytes_out)
            if d:
                m.bytes_out(name, d)
