"""Cluster fixtures: a real three-server NATS cluster with JetStream on 127.0.0.1 (Debian's
``nats-server``), started once for the module's tests that only need it running, or per test for
the tests that kill servers. Every server a fixture starts is stopped by it. Without
``nats-server`` the cluster tests skip, saying how to install it (CI installs it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dcgateway.cluster.natslocal import LocalNatsCluster, nats_server_binary

needs_nats = pytest.mark.skipif(nats_server_binary() is None,
                                reason="nats-server is not installed (apt-get install "
                                       "nats-server; .ci/run installs it)")


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNatsCluster]:
    """Three JetStream servers shared by a module's tests (each test uses its own cluster
    name, so its streams and buckets are its own)."""
    if nats_server_binary() is None:
        pytest.skip("nats-server is not installed (apt-get install nats-server)")
    cluster = LocalNatsCluster(tmp_path_factory.mktemp("nats"))
    try:
        cluster.start(timeout=60)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_nats_cluster(tmp_path: Path) -> Iterator[LocalNatsCluster]:
    """Three JetStream servers for one test (it may kill and restart them)."""
    if nats_server_binary() is None:
        pytest.skip("nats-server is not installed (apt-get install nats-server)")
    cluster = LocalNatsCluster(tmp_path / "nats")
    try:
        cluster.start(timeout=60)
        yield cluster
    finally:
        cluster.stop()
