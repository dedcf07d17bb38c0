"""Fixtures shared by every test package."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Inbox:
    """What a real SMTP server (aiosmtpd) received: (recipients, parsed message) pairs."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, Inbox]]:
    """A real SMTP server on 127.0.0.1 and its inbox."""
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=free_port())
    ctl.start()
    yield ctl, inbox
    ctl.stop()


@pytest.fixture
def loop_errors() -> Iterator[list[dict[str, Any]]]:
    """Anything that reaches the event loop's exception handler (a test installs the handler
    that appends to it): the test fails on any."""
    errors: list[dict[str, Any]] = []
    yield errors
    assert errors == [], errors
