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


def _hung_rename(monkeypatch):
    """``os.replace`` hangs (a slow disk) until the first event is set; the second says it was
    entered."""
    import threading
    real = os.replace
    release, entered = threading.Event(), threading.Event()

    def slow_replace(src, dst):
        entered.set()
        release.wait(30)
        real(src, dst)
    monkeypatch.setattr(os, "replace", slow_replace)
    return release, entered


def test_the_status_file_is_written_off_the_caller_and_a_stalled_write_holds_nothing(
        tmp_path, monkeypatch):
    """A rename that hangs on a slow disk (ext4 flushes the replaced file first) holds the
    writer thread only: write() returns at once, the latest document wins, a clean stop waits
    a bounded time."""
    import time

    from dcgateway.runtime import StatusFile
    seqs = {"A": (1, 1)}
    status = StatusFile(tmp_path, lambda: 1.0, lambda: dict(seqs), sessions=["A"])
    release, entered = _hung_rename(monkeypatch)
    status.write()
    assert entered.wait(10)                   # the writer hangs in its rename
    t0 = time.monotonic()
    for n in range(2, 50):
        seqs["A"] = (n, n)
        status.write()                        # returns at once, each time
    assert time.monotonic() - t0 < 5
    assert not status.flush(timeout=0.05)
    release.set()
    assert status.flush()
    assert json.loads((tmp_path / "status.json").read_text())["sequences"] == {"A": [49, 49]}
    status.remove()
    assert not (tmp_path / "status.json").exists()
    status.write()                            # after the stop: nothing comes back
    assert status.flush() and not (tmp_path / "status.json").exists()


def test_a_stop_during_a_stalled_write_leaves_no_status_file_behind(tmp_path, monkeypatch):
    """The stop does not wait for a stalled rename past its bound, and the rename that ends
    later does not bring back a file naming a gateway that is gone."""
    from dcgateway.runtime import StatusFile
    status = StatusFile(tmp_path, lambda: 1.0, lambda: {"A": (1, 1)}, sessions=["A"])
    release, entered = _hung_rename(monkeypatch)
    status.write()
    assert entered.wait(10)
    status.remove(timeout=0.1)                # returns while the rename still hangs
    release.set()
    assert status._worker is not None
    status._worker.join(10)
    assert not (tmp_path / "status.json").exists()
    assert list(tmp_path.iterdir()) == []     # nor its temporary file


def test_the_status_writer_survives_an_unexpected_error(tmp_path, monkeypatch, caplog):
    from dcgateway.runtime import StatusFile
    status = StatusFile(tmp_path, lambda: 1.0, lambda: {"A": (1, 1)}, sessions=["A"])
    real = os.fchmod
    calls = []

    def broken_once(fd, mode):
        calls.append(fd)
        if len(calls) == 1:
            raise ValueError("a bug")
        real(fd, mode)
    monkeypatch.setattr(os, "fchmod", broken_once)
    status.write()
    assert status.flush()
    assert "could not write" in caplog.text and not (tmp_path / "status.json").exists()
    status.write()
    assert status.flush() and (tmp_path / "status.json").exists()
    status.remove()
