"""Cluster mode: several gateway nodes on NATS JetStream (see docs/cluster.md)."""
