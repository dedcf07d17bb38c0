"""status.json as other processes read it: trusted while its gateway lives, whoever runs it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dcgateway.state import read_status


def _write(folder: Path, pid: int) -> None:
    (folder / "status.json").write_text(json.dumps({"pid": pid, "port": 1, "connected": {},
                                                    "sequences": {}}))


def test_a_live_gateway_of_another_user_is_alive(tmp_path: Path, monkeypatch) -> None:
    """The CLI often runs as an operator while the gateway runs as a service account: signal 0
    to its pid is then refused (EPERM), which means the process exists."""
    _write(tmp_path, 4242)

    def kill(pid: int, sig: int) -> None:
        assert (pid, sig) == (4242, 0)
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(os, "kill", kill)
    assert read_status(tmp_path)["pid"] == 4242


@pytest.mark.parametrize("error", [ProcessLookupError(3, "No such process")])
def test_a_dead_gateway_says_nothing(tmp_path: Path, monkeypatch, error: OSError) -> None:
    _write(tmp_path, 4242)

    def kill(pid: int, sig: int) -> None:
        raise error
    monkeypatch.setattr(os, "kill", kill)
    assert read_status(tmp_path) == {}
    (tmp_path / "status.json").write_text("{not json")
    assert read_status(tmp_path) == {}
