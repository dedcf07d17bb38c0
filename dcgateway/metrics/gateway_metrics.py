"""Every Prometheus metric of the gateway, built once on an injected registry (docs/architecture.md rule 4).

:class:`GatewayMetrics` is made by the composition root (``gateway.py``) with the process's own
:class:`~prometheus_client.CollectorRegistry` (never the library's default registry, so two
gateways in one process, or in one test, never share a series). It imports nothing from the
gateway: what it needs of the running gateway comes through a ``snapshot`` callable read at scrape
time (see :class:`Snapshot`).

Naming (docs/architecture.md rule 6, and the Prometheus naming guide): every name starts with
``dcgateway_``, counters end in ``_total``, durations are in seconds and sizes in bytes. Label
values come only from configuration: configured session CompIDs (``session``), drop copy groups
(``group``, ``ENTITY/name``), the key store's Access Key IDs and key scopes, and fixed tuples
defined in code (categories, logon refusal reasons, connection refusal reasons). An update naming
a label value outside those sets is dropped (and logged once): a wiring bug must never turn into
unbounded cardinality, nor into an exception on the hot path.

Every labelled child is created at construction, so each series exists at 0 from the first scrape
(``rate()`` and ``increase()`` then see the first event, and alerts on absent series are not
needed).

Cost on the hot path: the gateway calls these methods once per socket read or per write batch,
never once per message (docs/architecture.md "What keeps Python fast"): children are looked up in a dict
keyed by label values (no ``.labels()`` call), a counter ``inc(n)`` is one lock (~0.25 µs). The
fan-out latency histogram sees one observation per copy, so it does not use
:class:`prometheus_client.Histogram` (~0.5 µs per ``observe``, a lock per bucket) but
:class:`BatchHistogram`: one ``bisect`` and one list increment per value (~0.07 µs), exposed by
its own collector as an ordinary histogram. That relies on every update and every scrape
running on the event-loop thread, which is how the gateway uses it (the HTTP server generates the
exposition in the loop, see :mod:`dcgateway.net.http`).

Gauges that are state rather than events (connected, sequence numbers, backlog, key expiry,
journal writable) are not kept up to date on the hot path: :class:`SnapshotCollector` reads them
from the snapshot at scrape time.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from .. import __version__
from ..auth.verify import REASONS
from ..vocab import CATEGORIES
from .collectors import BatchHistogram, SnapshotCollector, _BatchHistogramCollector
from .model import (
    BATCH_BUCKETS,
    FSYNC_BUCKETS,
    LATENCY_BUCKETS,
    OTHER_CATEGORY,
    PREFIX,
    REFUSAL_REASONS,
    Snapshot,
)

log = logging.getLogger("dcgateway.metrics")

# -- the gateway's metrics --------------------------------------------------------------------

def _group_name(group: Any) -> str:
    """``ENTITY/name`` of a GroupDef (as :func:`dcgateway.routing.group_key`), or a string."""
    return group if isinstance(group, str) else f"{group.entity}/{group.name}"


_W = TypeVar("_W", bound=MetricWrapperBase)


class _Add(Protocol):
    """:meth:`_WithoutCreated.add`: takes a metric, returns it (its own type)."""

    def __call__(self, metric: _W, /) -> _W: ...


class _WithoutCreated(Collector):
    """prometheus_client metrics made without a registry, exposed without their ``_created``
    samples: in the text format each would be one more gauge series per child (doubling the
    counters' series) that no dashboard or alert here uses. Local to this registry, unlike
    ``prometheus_client.disable_created_metrics()``, which is process-wide state."""

    def __init__(self) -> None:
        self.metrics: list[MetricWrapperBase] = []

    def add(self, metric: _W) -> _W:
        self.metrics.append(metric)
        return metric

    def collect(self) -> Iterable[Metric]:
        out = []
        for metric in self.metrics:
            for fam in metric.collect():
                fam.samples = [s for s in fam.samples if not s.name.endswith("_created")]
                out.append(fam)
        return out

    def describe(self) -> Iterable[Metric]:
        return [fam for metric in self.metrics for fam in metric.describe()]


class GatewayMetrics:
    """All of the gateway's metrics on ``registry``. ``sessions`` are the configured sessions
    (objects with ``comp_id`` and ``role``, optionally ``entity`` and ``profile``: the config's
    ``SessionDef``); ``groups`` the drop copy groups (``GroupDef`` or ``"ENTITY/name"``);
    ``snapshot`` the scrape-time state (:class:`Snapshot`; settable later as
    ``metrics.snapshot``). Methods are cheap and never raise on an unknown label value.

    Each metric object is an attribute named like the metric without ``dcgateway_`` (and without
    ``_total``): ``metrics.messages_received``, ``metrics.fanout_latency_seconds``, ... Building
    two on one registry is refused (duplicate names): one registry per gateway."""

    def __init__(self, registry: CollectorRegistry, *, sessions: Iterable[Any],
                 groups: Iterable[Any] = (), snapshot: Callable[[], Snapshot] | None = None,
                 version: str = __version__, reasons: Sequence[str] = REASONS,
                 categories: Sequence[str] = CATEGORIES, process_metrics: bool = True) -> None:
        if registry is None:
            raise ValueError("GatewayMetrics needs an explicit CollectorRegistry")
        self.registry = registry
        sessions = list(sessions)
        self.roles: dict[str, str] = {s.comp_id: s.role for s in sessions}
        self.session_ids: tuple[str, ...] = tuple(self.roles)
        self.target_ids: tuple[str, ...] = tuple(c for c, r in self.roles.items() if r == "target")
        #: a Logon naming no configured session has no session label: connections_refused
        self.reasons = tuple(r for r in reasons if r != "unknown_session")
        self.categories = tuple(categories)
        self._warned: set[tuple[str, tuple[Any, ...]]] = set()
        own = _WithoutCreated()
        self._build_counters(own.add)
        self._build_gauges(own.add, sessions, version)
        self._build_histograms(own.add)
        self.fanout_latency_seconds = BatchHistogram(
            PREFIX + "fanout_latency_seconds",
            "Receipt of a source message to the write of its copy to the target session.",
            ("session",), LATENCY_BUCKETS)
        self.journal_commit_wait_seconds = BatchHistogram(
            PREFIX + "journal_commit_wait_seconds",
            "journal_durability fsync: per commit (one source read), how long its records waited "
            "between their write to the OS and the event loop learning they were on the disk "
            "(their fdatasync, any fdatasync in flight before it, the hand-offs to and from the "
            "sync thread). Empty in os mode.",
            (), FSYNC_BUCKETS)
        self._commit_wait = self.journal_commit_wait_seconds.child()
        self.metrics_snapshot_errors = Counter(
            PREFIX + "metrics_snapshot_errors", "Scrapes whose state snapshot raised.",
            registry=None)
        self._snapshot = SnapshotCollector(self.roles, self.target_ids, snapshot,
                                           self.metrics_snapshot_errors)
        registry.register(own)
        registry.register(_BatchHistogramCollector([self.fanout_latency_seconds,
                                                    self.journal_commit_wait_seconds]))
        registry.register(self._snapshot)
        if process_metrics:
            ProcessCollector(namespace="dcgateway", registry=registry)
        self._precreate(groups)

    # -- construction ---------------------------------------------------------------------------

    def _build_counters(self, add: _Add) -> None:
        s, sc = ("session",), ("session", "category")

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return add(Counter(PREFIX + name, doc, labels, registry=None))

        self.messages_received = counter(
            "messages_received", "Application messages received, by session and drop copy "
            "category (other: not copyable).", sc)
        self.messages_sent = counter(
            "messages_sent", "Drop copies written to target sessions, by category.", sc)
        self.received_bytes = counter("received_bytes", "Bytes read from the session's socket.",
                                      s)
        self.sent_bytes = counter("sent_bytes", "Bytes written to the session's socket.", s)
        self.group_copies = counter("group_copies",
                                    "Copies routed on behalf of each drop copy group.", ("group",))
        self.logons_accepted = counter("logons_accepted", "Logons accepted.", s)
        self.logons_rejected = counter("logons_rejected",
                                       "Logons refused, by reason (dcgateway.auth.verify).",
                                       ("session", "reason"))
        self.connections_refused = counter(
            "connections_refused",
            "Connections turned away before a configured session was identified.", ("reason",))
        self.port_closures = counter("port_closures",
                                     "Sessions locked after too many invalid Logons.", s)
        self.resend_requests_served = counter("resend_requests_served",
                                              "ResendRequests (35=2) received and answered.", s)
        self.messages_resent = counter("messages_resent",
                                       "Messages retransmitted (43=Y) answering ResendRequests.",
                                       s)
        self.messages_gap_filled = counter(
            "messages_gap_filled", "Sequence numbers covered by SequenceReset-GapFill "
            "answering ResendRequests.", s)
        self.resend_requests_sent = counter("resend_requests_sent",
                                            "ResendRequests (35=2) sent to the session.", s)
        self.session_rejects_sent = counter("session_rejects_sent",
                                            "Session-level Rejects (35=3) sent.", s)
        self.copies_rejected_by_target = counter(
            "copies_rejected_by_target", "Copies a target session answered with a Reject (35=3) "
            "or a BusinessMessageReject (35=j).", s)
        self.copies_untranslatable = counter(
            "copies_untranslatable", "Copies that could not be made valid in the target's data "
            "dictionary (their sequence numbers were gap-filled).", s)
        self.copy_fields_dropped = counter(
            "copy_fields_dropped", "Fields left out of translated copies because the target's "
            "data dictionary does not define them.", s)
        self.session_protocol_errors = counter(
            "session_protocol_errors", "Session protocol faults (logged with their kind).", s)
        self.journal_appended_records = counter("journal_appended_records",
                                                "Records appended to the journal.")
        self.journal_appended_bytes = counter("journal_appended_bytes",
                                              "Bytes appended to the journal.")
        self.journal_errors = counter("journal_errors",
                                      "Failed journal writes or syncs (retried).")
        self.config_reloads = counter("config_reloads", "Groups reloads attempted.")
        self.config_reload_failures = counter("config_reload_failures",
                                              "Groups reloads refused (the old table stayed).")

    def _build_gauges(self, add: _Add, sessions: list[Any],
                      version: str) -> None:
        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return add(Gauge(PREFIX + name, doc, labels, registry=None))

        self.build_info = gauge("build_info", "Version of the running gateway (value 1).",
                                ("version", "python"))
        self.build_info.labels(version, platform.python_version()).set(1)
        self.session_info = gauge("session_info", "Configured sessions (value 1) with their "
                                  "role, entity and profile.",
                                  ("session", "role", "entity", "profile"))
        for sd in sessions:
            self.session_info.labels(sd.comp_id, sd.role, str(getattr(sd, "entity", "")),
                                     str(getattr(sd, "profile", ""))).set(1)
        self.config_last_reload_successful = gauge(
            "config_last_reload_successful",
            "1 if the last groups reload succeeded (or none was tried), else 0.")
        self.config_last_reload_successful.set(1)
        self.config_last_reload_success_timestamp_seconds = gauge(
            "config_last_reload_success_timestamp_seconds",
            "When the groups last loaded successfully (start or reload), epoch seconds.")
        self.config_last_reload_success_timestamp_seconds.set_to_current_time()
        self.journal_recovery_duration_seconds = gauge(
            "journal_recovery_duration_seconds", "How long the journal recovery scan took at "
            "start.")
        self.journal_fsync_running_seconds = gauge(
            "journal_fsync_running_seconds", "How long the journal fsync in flight has been "
            "running (0: none): a stalled disk shows here before the fsync ends.")
        self.journal_unsynced_records = gauge(
            "journal_unsynced_records", "Journal records accepted but not yet on the disk "
            "(fdatasync'd); durability os: copies of them may already have left.")

    def _build_histograms(self, add: _Add) -> None:
        self.journal_fsync_duration_seconds = add(Histogram(
            PREFIX + "journal_fsync_duration_seconds",
            "Duration of one journal fdatasync (group commit).", buckets=FSYNC_BUCKETS,
            registry=None))
        self.journal_fsync_batch_records = add(Histogram(
            PREFIX + "journal_fsync_batch_records", "Journal records made durable by one fsync.",
            buckets=BATCH_BUCKETS, registry=None))
        self.session_files_fsync_duration_seconds = add(Histogram(
            PREFIX + "session_files_fsync_duration_seconds",
            "durability fsync: one background round of fdatasyncs of the session files written "
            "meanwhile (no session waits for it).", buckets=FSYNC_BUCKETS, registry=None))

    def _precreate(self, groups: Iterable[Any]) -> None:
        cats_in = self.categories + (OTHER_CATEGORY,)
        self._received = {(s, c): self.messages_received.labels(s, c)
                          for s in self.session_ids for c in cats_in}
        self._sent = {(t, c): self.messages_sent.labels(t, c)
                      for t in self.target_ids for c in self.categories}
        self._received_bytes = {s: self.received_bytes.labels(s) for s in self.session_ids}
        self._sent_bytes = {s: self.sent_bytes.labels(s) for s in self.session_ids}
        self._latency = {t: self.fanout_latency_seconds.child(t) for t in self.target_ids}
        self._rejected = {(s, r): self.logons_rejected.labels(s, r)
                          for s in self.session_ids for r in self.reasons}
        self._refused = {r: self.connections_refused.labels(r) for r in REFUSAL_REASONS}
        per_session = ("logons_accepted", "port_closures", "resend_requests_served",
                       "messages_resent", "messages_gap_filled", "resend_requests_sent",
                       "session_rejects_sent", "session_protocol_errors",
                       "copies_rejected_by_target", "copies_untranslatable",
                       "copy_fields_dropped")
        self._by_session: dict[str, dict[str, Any]] = {
            name: {s: getattr(self, name).labels(s) for s in self.session_ids}
            for name in per_session}
        self._groups: dict[str, Any] = {}
        self.set_groups(groups)

    @classmethod
    def from_config(cls, registry: CollectorRegistry, config: Any, **kwargs: Any
                    ) -> "GatewayMetrics":
        """From a :class:`dcgateway.config.GatewayConfig` (its sessions and groups)."""
        return cls(registry, sessions=config.sessions, groups=config.groups, **kwargs)

    # -- wiring ---------------------------------------------------------------------------------

    @property
    def snapshot(self) -> Callable[[], Snapshot] | None:
        return self._snapshot.snapshot

    @snapshot.setter
    def snapshot(self, fn: Callable[[], Snapshot] | None) -> None:
        self._snapshot.snapshot = fn

    def set_groups(self, groups: Iterable[Any]) -> None:
        """The configured drop copy groups (at start and after each reload): children for new
        groups at 0; removed groups' series are dropped."""
        names = [_group_name(g) for g in groups]
        for gone in set(self._groups) - set(names):
            self.group_copies.remove(gone)
            del self._groups[gone]
        for name in names:
            if name not in self._groups:
                self._groups[name] = self.group_copies.labels(name)

    def _drop(self, metric: str, labels: tuple[Any, ...]) -> None:
        key = (metric, labels)
        if key not in self._warned and len(self._warned) < 256:
            self._warned.add(key)
            log.warning("metrics: %s update with unconfigured label values %r dropped",
                        metric, labels)

    def _inc(self, children: Mapping[Any, Any], key: Any, metric: str, n: float = 1) -> None:
        c = children.get(key)
        if c is None:
            self._drop(metric, key if isinstance(key, tuple) else (key,))
        elif n:
            c.inc(n)

    def _session_counter(self, name: str, session: str, n: float = 1) -> None:
        self._inc(self._by_session[name], session, name, n)

    # -- hot path (once per read / write batch) ------------------------------------------------

    def messages_in(self, session: str, category: str | None, n: int = 1) -> None:
        """``n`` application messages of ``category`` (None: not copyable) read from
        ``session``."""
        self._inc(self._received, (session, category or OTHER_CATEGORY), "messages_received", n)

    def messages_in_counts(self, session: str, counts: Mapping[str | None, int]) -> None:
        """One read's application messages: ``{category: n}``."""
        for category, n in counts.items():
            self.messages_in(session, category, n)

    def messages_out(self, session: str, category: str, n: int = 1) -> None:
        """``n`` copies of ``category`` written to target ``session``."""
        self._inc(self._sent, (session, category), "messages_sent", n)

    copies_out = messages_out

    def bytes_in(self, session: str, n: int) -> None:
        self._inc(self._received_bytes, session, "received_bytes", n)

    def bytes_out(self, session: str, n: int) -> None:
        self._inc(self._sent_bytes, session, "sent_bytes", n)

    def group_copy(self, group: str, n: int = 1) -> None:
        """``n`` copies routed for drop copy group ``ENTITY/name``."""
        self._inc(self._groups, group, "group_copies", n)

    def observe_fanout_latencies(self, session: str, seconds: Iterable[float]) -> None:
        """Receipt -> write of each copy just written to target ``session``, in seconds (e.g.
        ``TargetState.latencies``, drained by the caller)."""
        c = self._latency.get(session)
        if c is None:
            self._drop("fanout_latency_seconds", (session,))
        else:
            c.observe_many(seconds)

    def journal_append(self, records: int, nbytes: int) -> None:
        self.journal_appended_records.inc(records)
        self.journal_appended_bytes.inc(nbytes)

    def fsync(self, seconds: float, records: int) -> None:
        """One completed group-commit sync: fits ``GroupCommitter(on_fsync=...)``."""
        self.journal_fsync_duration_seconds.observe(seconds)
        self.journal_fsync_batch_records.observe(records)

    def session_files_fsync(self, seconds: float) -> None:
        """One background round of the session files' fdatasyncs (``SessionFileSync``)."""
        self.session_files_fsync_duration_seconds.observe(seconds)

    def commit_wait(self, seconds: float, commits: int = 1) -> None:
        """The wait for durability of ``commits`` commits: fits ``GroupCommitter(on_wait=...)``."""
        self._commit_wait.observe(seconds, commits)

    # -- events ---------------------------------------------------------------------------------

    def journal_sync_state(self, running_seconds: float, unsynced_records: int) -> None:
        """The committer's state, pushed once a second and before each scrape."""
        self.journal_fsync_running_seconds.set(running_seconds)
        self.journal_unsynced_records.set(unsynced_records)

    def logon_accepted(self, session: str) -> None:
        self._session_counter("logons_accepted", session)

    def logon_rejected(self, session: str | None, reason: str) -> None:
        """A refused Logon. With no configured session (``unknown_session``, or ``session``
        None/unconfigured) it counts as a refused connection instead: an unconfigured CompID is
        never a label."""
        if session not in self.roles:
            self.connection_refused("unknown_session")
        else:
            self._inc(self._rejected, (session, reason), "logons_rejected")

    def connection_refused(self, reason: str) -> None:
        self._refused.get(reason, self._refused["other"]).inc()

    def port_closure(self, session: str) -> None:
        self._session_counter("port_closures", session)

    def resend_served(self, session: str, resent: int, gap_filled: int) -> None:
        self._session_counter("resend_requests_served", session)
        self._session_counter("messages_resent", session, resent)
        self._session_counter("messages_gap_filled", session, gap_filled)

    def resend_requested(self, session: str) -> None:
        self._session_counter("resend_requests_sent", session)

    def reject_sent(self, session: str) -> None:
        self._session_counter("session_rejects_sent", session)

    def protocol_error(self, session: str) -> None:
        self._session_counter("session_protocol_errors", session)

    def copy_rejected(self, session: str) -> None:
        self._session_counter("copies_rejected_by_target", session)

    def untranslatable(self, session: str, copies: int, fields_dropped: int) -> None:
        """Copies for target ``session`` that could not be made valid, and fields left out."""
        self._session_counter("copies_untranslatable", session, copies)
        self._session_counter("copy_fields_dropped", session, fields_dropped)

    def journal_error(self) -> None:
        self.journal_errors.inc()

    def reload(self, ok: bool) -> None:
        """A groups reload was attempted (SIGHUP or the file changed)."""
        self.config_reloads.inc()
        if ok:
            self.config_last_reload_successful.set(1)
            self.config_last_reload_success_timestamp_seconds.set_to_current_time()
        else:
            self.config_reload_failures.inc()
            self.config_last_reload_successful.set(0)

    def recovered(self, seconds: float) -> None:
        self.journal_recovery_duration_seconds.set(seconds)

    # -- introspection --------------------------------------------------------------------------

    def metric_names(self) -> frozenset[str]:
        """Every family name on the registry (as exposed: counters with ``_total``), and the
        sample names a query can use (``_bucket``, ``_sum``, ``_count``)."""
        names: set[str] = set()
        for fam in self.registry.collect():
            base = fam.name + "_total" if fam.type == "counter" else fam.name
            names.add(base)
            if fam.type == "histogram":
                names.update(fam.name + s for s in ("_bucket", "_sum", "_count"))
        return frozenset(names)


