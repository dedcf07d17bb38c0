"""Every Prometheus metric of the gateway, on an injected registry (never the default one).

* :mod:`.gateway_metrics`  :class:`GatewayMetrics`: every family, children created up front
* :mod:`.collectors`       :class:`BatchHistogram`, :class:`SnapshotCollector`
* :mod:`.model`            names, buckets, refusal reasons, the scrape-time :class:`Snapshot`
"""

from .collectors import BatchHistogram, SnapshotCollector
from .gateway_metrics import GatewayMetrics
from .model import (
                    BATCH_BUCKETS,
                    FSYNC_BUCKETS,
                    LATENCY_BUCKETS,
                    OTHER_CATEGORY,
                    PREFIX,
                    REFUSAL_REASONS,
                    KeyStatus,
                    SessionStatus,
                    Snapshot,
                    TargetStatus,
)

__all__ = [
    "BATCH_BUCKETS", "BatchHistogram", "FSYNC_BUCKETS", "GatewayMetrics", "KeyStatus",
    "LATENCY_BUCKETS", "OTHER_CATEGORY", "PREFIX", "REFUSAL_REASONS", "SessionStatus",
    "Snapshot", "SnapshotCollector", "TargetStatus",
]
