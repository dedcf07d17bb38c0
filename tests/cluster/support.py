"""Helpers of the cluster tests: a gateway.yaml with a ``cluster:`` section."""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Sequence
from pathlib import Path

from dcgateway.cluster.natslocal import free_ports

SESSIONS = """
sessions:
  - {comp_id: ABC123N, role: source, entity: TRADECO, profile: ilink2, begin_string: FIX.4.2}
  - {comp_id: ABD123N, role: source, entity: TRADECO, profile: ilink2, begin_string: FIX.4.2}
  - {comp_id: CLR001N, role: target, entity: CLEARCO, profile: ilink2, begin_string: FIX.4.2}
  - {comp_id: CLRFIX44, role: target, entity: CLEARCO, profile: fix, begin_string: FIX.4.4}
"""
GROUPS = """
groups:
  - entity: CLEARCO
    name: all
    front_end: fix
    filters: {categories: [execution, acknowledgment, mass_action]}
    sources: [ABC123N, ABD123N]
    targets: [CLRFIX44]
  - entity: CLEARCO
    name: fills
    front_end: ilink2
    filters: {categories: [execution]}
    sources: [ABC123N]
    targets: [CLR001N]
"""
_names = itertools.count(1)


def unique_name(prefix: str = "t") -> str:
    """A cluster name of its own for a test sharing the NATS servers."""
    return f"{prefix}{next(_names)}"


def cluster_config(folder: Path, servers: Sequence[str], *, nodes: int = 2, lease_s: float = 2,
                   replicas: int = 3, name: str | None = None, groups: str = GROUPS) -> Path:
    """gateway.yaml + groups.yaml for ``nodes`` nodes on free ports; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "groups.yaml").write_text(groups)
    ports = free_ports(2 * nodes)
    node_lines = "\n".join(
        f"    - {{node_id: n{i + 1}, listen: {{host: 127.0.0.1, port: {ports[2 * i]}}}, "
        f"metrics: {{host: 127.0.0.1, port: {ports[2 * i + 1]}}}}}" for i in range(nodes))
    text = textwrap.dedent("""
        gateway:
          comp_id: DCGW
          listen: {host: 127.0.0.1, port: 0}
          metrics: {host: 127.0.0.1, port: 0}
          data_dir: var
          market_close: {time: "16:00", tz: America/Chicago}
          week_start: {day: sunday, time: "16:00", tz: America/Chicago}
          keystore: {path: var/keys.db, master_key_file: var/master.key}
          heartbeat_min_s: 1
        entities:
          - {name: TRADECO, administrators: [{name: tina, email: tina@tradeco.example}]}
          - {name: CLEARCO, administrators: [{name: carl, email: carl@clearco.example}]}
        groups_file: groups.yaml
    """) + SESSIONS + textwrap.dedent(f"""
        cluster:
          name: {name or unique_name()}
          nats:
            servers: [{", ".join(servers)}]
          replicas: {replicas}
          lease_s: {lease_s}
          nodes:
    """) + node_lines + "\n"
    path = folder / "gateway.yaml"
    path.write_text(text)
    return path


def wait_until(check, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``check()`` until it returns something truthy (returned), bounded by ``timeout``."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g}s")
        time.sleep(interval)


def run_cli(*args: str, config: Path, timeout: float = 60.0):
    """``dcgateway ARGS --config CONFIG`` in its own process, as an operator runs it."""
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "dcgateway", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=timeout)


async def close_nats(*conns) -> None:
    """Close NATS connections, bounded (a client's close can wait on a busy server)."""
    import asyncio
    for nc in conns:
        try:
            await asyncio.wait_for(nc.close(), 10)
        except (asyncio.TimeoutError, Exception):
            pass
