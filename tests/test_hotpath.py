"""The compiled hot path (mypyc, built by setup.py) and its pure-Python fallback."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from dcgateway import hotpath

ROOT = Path(__file__).resolve().parents[1]


def test_compiled_when_the_machine_can_compile() -> None:
    """scripts/test installs with a C compiler present, so a mypyc failure (a source mypyc
    refuses, a build error) shows here instead of as a quietly slower gateway."""
    if hotpath.pure_requested():
        assert hotpath.describe() == f"hot path pure Python ({hotpath.PURE_ENV} set)"
    elif shutil.which("cc") or shutil.which("gcc"):
        assert hotpath.describe() == "hot path compiled (mypyc)"    # and none of it stale
        for name in hotpath.COMPILED_MODULES:
            assert not importlib.import_module(name).__file__.endswith(".py"), name
    else:
        assert hotpath.describe() == "hot path pure Python (not compiled at install)"


def test_every_compiled_module_exists_as_python_source() -> None:
    for name in hotpath.COMPILED_MODULES:
        assert (ROOT / Path(*name.split("."))).with_suffix(".py").is_file(), name


def run_pure(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **{hotpath.PURE_ENV: "1"})
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_pure_switch_loads_the_sources_and_they_work() -> None:
    """DCGATEWAY_PURE=1 makes a process import every hot-path module from its .py file, and
    that code frames, checks and decodes a message like the compiled one."""
    proc = run_pure(
        "from dcgateway import hotpath\n"
        "from dcgateway.fix import codec\n"
        "print(hotpath.describe())\n"
        "print(codec.__file__)\n"
        "raw = codec.encode_fields('FIX.4.2', '8', [(49, 'A'), (56, 'B'), (34, 7)], "
        "[(17, 'E1')])\n"
        "d = codec.Decoder()\n"
        "msgs = d.feed(raw + raw[:10])\n"
        "print(len(msgs), msgs[0].seq_num, msgs[0].get(17))\n")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"hot path pure Python ({hotpath.PURE_ENV} set)"
    assert lines[1].endswith("codec.py")
    assert lines[2] == "1 7 b'E1'"


def test_version_says_how_the_hot_path_runs() -> None:
    proc = run_pure("import sys; from dcgateway.cli import main; sys.argv = ['dcgateway', "
                    "'--version']; main()")
    assert f"({hotpath.PURE_ENV} set)" in proc.stdout


def test_a_source_newer_than_its_compiled_module_is_reported(tmp_path) -> None:
    """An in-place build goes stale when a hot-path source is edited after it: the start-up log
    line and --version say so instead of running old code quietly."""
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "mod.py").write_text("X = 1\n")
    code = (f"import os, sys, types\n"
            f"from dcgateway import hotpath\n"
            f"so = {str(folder / 'mod.cpython-311-x86_64-linux-gnu.so')!r}\n"
            f"open(so, 'wb').close()\n"
            f"os.utime(so, (1000, 1000))\n"
            f"m = types.ModuleType('dcgateway.fix.codec'); m.__file__ = so\n"
            f"sys.modules['dcgateway.fix.codec'] = m\n"
            f"print(hotpath.stale_modules())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"          # mod.py is not codec.py: nothing to compare
    (folder / "codec.py").write_text("X = 1\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.stdout.strip() == "['dcgateway.fix.codec']", proc.stderr
