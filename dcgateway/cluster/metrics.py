"""Per-node cluster metrics on the gateway's registry: lease state, replication lag and
publish-acknowledgement latency (the cost of durability in cluster mode), takeovers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily


class NodeView(Protocol):
    """What the metrics read of a node (:class:`~.node.ClusterNode`)."""

    takeovers: int
    takeover_failures: int
    stream_missing: int
    state: str
    journal: Any
    leases: Any

    def serving(self) -> bool: ...


class ClusterMetrics:
    """A collector read at scrape time (no metrics call on the hot path)."""

    def __init__(self, node: NodeView) -> None:
        self.node = node
        self._registries: list[Any] = []

    def attach(self, registry: Any) -> None:
        if registry not in self._registries:
            registry.register(self)
            self._registries.append(registry)

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        n = self.node
        held = GaugeMetricFamily("dcgateway_cluster_lease_held",
                                 "1 while this node holds the lease", labels=["lease"])
        held.add_metric(["primary"], 1.0 if n.serving() else 0.0)
        yield held
        serving = GaugeMetricFamily("dcgateway_cluster_serving",
                                    "1 while this node serves the sessions (lease held and "
                                    "takeover done)")
        serving.add_metric([], 1.0 if n.state == "serving" and n.serving() else 0.0)
        yield serving
        failed = CounterMetricFamily("dcgateway_cluster_takeover_failures",
                                     "takeovers this node began and could not finish (it gave "
                                     "the lease up and backed off)")
        failed.add_metric([], float(n.takeover_failures))
        yield failed
        missing = GaugeMetricFamily("dcgateway_cluster_stream_missing_records",
                                    "acknowledged journal records the stream no longer holds "
                                    "(this node refuses to serve from it while > 0)")
        missing.add_metric([], float(n.stream_missing))
        yield missing
        backoff = GaugeMetricFamily("dcgateway_cluster_takeover_backoff_seconds",
                                    "seconds before this node takes the lease again after a "
                                    "failed takeover (0: it takes it when free)")
        backoff.add_metric([], float(n.leases.holding_off("primary"))
                           if n.leases is not None else 0.0)
        yield backoff
        j = n.journal
        lag = GaugeMetricFamily("dcgateway_cluster_replication_lag_records",
                                "journal records appended, not yet acknowledged by the stream")
        lag.add_metric([], float(j.unreplicated) if j is not None else 0.0)
        yield lag
        log = j.log if j is not None else None
        lats = sorted(log.ack_latencies) if log is not None else []
        s = SummaryMetricFamily("dcgateway_cluster_publish_ack_seconds",
                                "publish to stream acknowledgement (recent 10,000)")
        s.add_metric([], count_value=len(lats), sum_value=sum(lats))
        yield s
        q = GaugeMetricFamily("dcgateway_cluster_publish_ack_quantile_seconds",
                              "publish-ack latency quantiles over the recent 10,000",
                              labels=["quantile"])
        for p in (0.5, 0.99):
            q.add_metric([str(p)], lats[min(len(lats) - 1, int(p * len(lats)))] if lats else 0.0)
        yield q
        c = CounterMetricFamily("dcgateway_cluster_takeovers", "times this node took over")
        c.add_metric([], float(n.takeovers))
        yield c
        r = CounterMetricFamily("dcgateway_cluster_resyncs",
                                "journal publishes resynchronised after a lost or refused ack")
        r.add_metric([], float(log.resyncs) if log is not None else 0.0)
        yield r
