"""Collectors of our own: a histogram observed in batches (the fan-out latency: one observation
per copy, far cheaper than prometheus_client's Histogram) and the gauges of state read from the
gateway's snapshot at scrape time."""

from __future__ import annotations

import logging
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence

from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .model import PREFIX, Snapshot

log = logging.getLogger("dcgateway.metrics")

# -- a histogram observed per batch -----------------------------------------------------------

class BatchHistogram:
    """A labelled histogram that takes many observations per call (:meth:`child` then
    ``observe_many``) and is exposed as an ordinary Prometheus histogram by :meth:`collect`.
    Not thread-safe: update and collect it from one thread (the event loop)."""

    class Child:
        __slots__ = ("bounds", "counts", "total")

        def __init__(self, bounds: tuple[float, ...]) -> None:
            self.bounds = bounds
            self.counts = [0] * (len(bounds) + 1)       # per bucket, not cumulative; last: +Inf
            self.total = 0.0

        def observe_many(self, values: Iterable[float]) -> None:
            """Bucketed at C speed: the values sorted once, then one ``bisect_right`` per bound
            (the count at or below it), about a quarter of the cost of bisecting each value
            into the bounds. The fan-out hands hundreds of latencies at once, and a loop here
            would hold the event loop."""
            ordered = sorted(values)
            counts = self.counts
            below = 0
            for i, bound in enumerate(self.bounds):   # the "le" bucket: first bound >= v
                upto = bisect_right(ordered, bound, below)
                counts[i] += upto - below
                below = upto
            counts[-1] += len(ordered) - below
            self.total += sum(ordered)

        def observe(self, value: float, count: int = 1) -> None:
            """``count`` observations of ``value``."""
            self.counts[bisect_left(self.bounds, value)] += count
            self.total += value * count

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float]) -> None:
        bounds = tuple(float(b) for b in buckets)
        if list(bounds) != sorted(set(bounds)) or not bounds or bounds[-1] == float("inf"):
            raise ValueError("buckets must be strictly increasing finite bounds (+Inf is implied)")
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = bounds
        # prometheus_client leaves floatToGoString unannotated (float -> str)
        self._le = [floatToGoString(b) for b in bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        self.children: dict[tuple[str, ...], BatchHistogram.Child] = {}

    def child(self, *labelvalues: str) -> "BatchHistogram.Child":
        """The child for these label values, created at 0 if new."""
        c = self.children.get(labelvalues)
        if c is None:
            if len(labelvalues) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}")
            c = self.children[labelvalues] = BatchHistogram.Child(self.bounds)
        return c

    def remove(self, *labelvalues: str) -> None:
        self.children.pop(labelvalues, None)

    def collect(self) -> Metric:
        fam = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, c in self.children.items():
            running, buckets = 0, []
            for le, n in zip(self._le, c.counts):
                running += n
                buckets.append((le, running))
            fam.add_metric(list(labels), buckets, c.total)
        return fam

    def describe(self) -> Metric:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)


class _BatchHistogramCollector(Collector):
    def __init__(self, histograms: Sequence[BatchHistogram]) -> None:
        self._histograms = tuple(histograms)

    def collect(self) -> Iterable[Metric]:
        return [h.collect() for h in self._histograms]

    def describe(self) -> Iterable[Metric]:
        return [h.describe() for h in self._histograms]


# -- gauges read at scrape time ---------------------------------------------------------------

class SnapshotCollector(Collector):
    """Gauges of state, read from ``snapshot()`` at each scrape. Only configured sessions (and
    their roles, from configuration) become labels. A snapshot that raises is logged and counted
    (``dcgateway_metrics_snapshot_errors_total``, exposed by this collector so that a scrape
    counts its own failure); the scrape still answers with every other metric, and
    ``dcgateway_session_connected`` falls back to 0 for every session."""

    _DOCS: Mapping[str, tuple[str, tuple[str, ...]]] = {
        "session_connected": ("1 while the session is logged on, else 0.", ("session", "role")),
        "session_next_in_seq_num": ("Next expected inbound MsgSeqNum (34) of the session.",
                                    ("session",)),
        "session_next_out_seq_num": ("Next outbound MsgSeqNum (34) the gateway will send on "
                                     "the session.", ("session",)),
        "session_port_closed": ("1 while the session is locked after too many invalid Logons "
                                "(until an operator unlocks it), else 0.", ("session",)),
        "target_backlog_messages": ("Copies routed to the target session (sequence number "
                                    "assigned) and not yet written to its socket.", ("session",)),
        "target_catching_up": ("1 while the target session is served from the journal "
                               "(slow, or catching up after being offline), else 0.",
                               ("session",)),
        "key_expiry_timestamp_seconds": ("Expiry of each live key pair, epoch seconds.",
                                         ("access_key_id", "session_id")),
        "journal_writable": ("1 while the journal accepts and syncs appends, else 0.", ()),
    }

    def __init__(self, roles: Mapping[str, str], targets: Sequence[str],
                 snapshot: Callable[[], Snapshot] | None, errors: PromCounter) -> None:
        self._roles = dict(roles)
        self._targets = frozenset(targets)
        self.snapshot = snapshot
        self._errors = errors

    def _families(self) -> dict[str, GaugeMetricFamily]:
        return {key: GaugeMetricFamily(PREFIX + key, doc, labels=labels)
                for key, (doc, labels) in self._DOCS.items()}

    def describe(self) -> Iterable[Metric]:
        return [*self._families().values(), *self._errors.describe()]

    def collect(self) -> Iterable[Metric]:
        f = self._families()
        connected = dict.fromkeys(self._roles, False)
        if self.snapshot is not None:
            try:
                self._fill(f, connected, self.snapshot())
            except Exception:               # a scrape must not fail because of one bad row
                self._errors.inc()
                log.exception("metrics snapshot failed; state gauges are missing from this "
                              "scrape")
                f = self._families()
                connected = dict.fromkeys(self._roles, False)
        for comp_id, up in connected.items():
            f["session_connected"].add_metric([comp_id, self._roles[comp_id]], 1 if up else 0)
        errors = list(self._errors.collect())          # after the snapshot: counts this scrape
        for fam in errors:
            fam.samples = [s for s in fam.samples if not s.name.endswith("_created")]
        return [*f.values(), *errors]

    def _fill(self, f: dict[str, GaugeMetricFamily], connected: dict[str, bool],
              snap: Snapshot) -> None:
        """Numbers are converted here (``int()``/``float()``), so a bad row raises now rather
        than when the exposition is formatted, which would fail the whole scrape."""
        for s in snap.sessions:
            if s.comp_id in self._roles:
                connected[s.comp_id] = bool(s.connected)
                f["session_next_in_seq_num"].add_metric([s.comp_id], int(s.next_in))
                f["session_next_out_seq_num"].add_metric([s.comp_id], int(s.next_out))
                f["session_port_closed"].add_metric([s.comp_id], 1 if s.port_closed else 0)
        for t in snap.targets:
            if t.comp_id in self._targets:
                f["target_backlog_messages"].add_metric([t.comp_id], int(t.backlog))
                f["target_catching_up"].add_metric([t.comp_id], 1 if t.from_journal else 0)
        for k in snap.keys:
            f["key_expiry_timestamp_seconds"].add_metric(
                [str(k.access_key_id), str(k.session_id)], float(k.expires))
        f["journal_writable"].add_metric([], 1 if snap.journal_writable else 0)


