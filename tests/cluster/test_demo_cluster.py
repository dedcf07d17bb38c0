"""``dcgateway demo --cluster`` as a user runs it: three NATS servers, two nodes, the
simulators; the serving node is killed, the other takes the sessions over, and at the end every
target has everything (lost 0, unflagged duplicates 0); nothing is left running."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import needs_nats
from .nodes import REPO


@needs_nats
def test_demo_cluster_kills_a_node_and_loses_nothing(tmp_path: Path) -> None:
    for name in ("gateway.yaml", "groups.yaml"):
        shutil.copy(REPO / "config" / name, tmp_path / name)
    r = subprocess.run([sys.executable, "-m", "dcgateway", "demo", "--cluster", "--config",
                        str(tmp_path / "gateway.yaml"), "--duration", "14", "--kill-after", "4",
                        "--rate", "150"], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout
    assert "*** SIGKILL n" in out and "restarted (it stands by)" in out
    lines = out.splitlines()
    kill = next(i for i, line in enumerate(lines) if "*** SIGKILL" in line)
    victim = lines[kill].split("SIGKILL ")[1].split(",")[0]
    other = "n2" if victim == "n1" else "n1"
    assert any(f"{other} SERVING" in line for line in lines[kill:]), out
    finals = [line for line in lines if "expected" in line and "lost" in line]
    assert len(finals) == 2 and all("lost 0, unflagged duplicates 0" in f for f in finals), out
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert left.stdout.strip() == "", "processes left running"
