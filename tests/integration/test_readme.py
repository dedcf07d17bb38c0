"""The README's client example must work as printed: it is executed against a running gateway."""

from __future__ import annotations

import asyncio
import re

import pytest

from .conftest import REPO

pytestmark = pytest.mark.asyncio


def readme_python_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


async def test_readme_signing_example_logs_on(start_gateway):
    [example] = readme_python_blocks()
    gw = await start_gateway()
    akid, secret = gw.creds["ABC123N"]
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    sock, reply = await asyncio.to_thread(namespace["log_on"], "127.0.0.1", gw.port, "ABC123N", akid, secret)
    sock.close()
    assert b"\x0135=A\x01" in reply, reply
    sock, reply = await asyncio.to_thread(namespace["log_on"], "127.0.0.1", gw.port, "ABC123N", akid, "A" * 43)
    sock.close()
    assert b"\x0135=5\x01" in reply and b"58=authentication failed\x01" in reply
