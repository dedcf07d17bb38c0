"""``dcgateway run --node ID``: the configuration one node of the cluster runs with."""

from __future__ import annotations

import dataclasses

from ..config import GatewayConfig, HostPort
from ..errors import ConfigError


def for_node(config: GatewayConfig, node_id: str) -> GatewayConfig:
    """The configuration node ``node_id`` runs with: its ``listen`` and ``metrics`` from its
    ``cluster.nodes[]`` entry and its local files (session state, status, logs) under
    ``data_dir/<node_id>``, so several nodes can share one machine and one configuration. Key
    pairs live in the cluster, encrypted under the shared master key file, which stays where
    ``gateway.keystore`` says (every node needs the same one, like any other secret)."""
    cluster = config.cluster
    if cluster is None:
        raise ConfigError(f"{config.path}: --node {node_id} given but the file has no cluster: "
                          "section; expected a cluster: section listing the nodes")
    node = cluster.node(node_id)
    if node is None:
        known = ", ".join(n.node_id for n in cluster.nodes)
        raise ConfigError(f"{config.path}: cluster.nodes: no node {node_id!r}; expected one of "
                          f"{known}")
    g = dataclasses.replace(config.gateway,
                            listen=HostPort(node.listen.host, node.listen.port),
                            metrics=HostPort(node.metrics.host, node.metrics.port),
                            data_dir=config.gateway.data_dir / node_id)
    return dataclasses.replace(config, gateway=g,
                               cluster=dataclasses.replace(cluster, node_id=node_id))
