"""Shared fixtures for the auth tests: a key store in tmp_path, a key manager, and a builder of
signed Logon messages decoded into RawMessage the way the gateway receives them."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from dcgateway.auth.audit import AuditLog
from dcgateway.auth.keystore import KeyStore
from dcgateway.auth.lifecycle import KeyManager, MarketClose
from dcgateway.auth.signing import sign_logon_fields
from dcgateway.fix.codec import Decoder, RawMessage, encode_fields
from dcgateway.fix.timefmt import utc_timestamp

# The gateway clock of most tests: Monday 2026-03-02 15:00:00 UTC.
NOW_DT = datetime(2026, 3, 2, 15, 0, 0, tzinfo=timezone.utc)
NOW = NOW_DT.timestamp()


class Paths:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "var"
        self.store = self.data_dir / "keys.db"
        self.master = self.data_dir / "master.key"
        self.audit = self.data_dir / "keys-audit.jsonl"


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path)


@pytest.fixture
def store(paths: Paths) -> KeyStore:
    return KeyStore(paths.store, paths.master)


@pytest.fixture
def manager(store: KeyStore, paths: Paths) -> KeyManager:
    return KeyManager(store, MarketClose.parse("16:00", "America/Chicago"), AuditLog(paths.audit))


def decode_one(raw: bytes) -> RawMessage:
    out = Decoder().feed(raw)
    assert len(out) == 1 and isinstance(out[0], RawMessage), out
    return out[0]


def build_logon(access_key_id: str, secret_key: str, *, comp_id: str = "ABC123N",
                now: float = NOW, drop: tuple[int, ...] = (),
                cred: dict[int, str | None] | None = None,
                extra_header: list[tuple[int, str]] | None = None,
                sign_over: dict[int, str] | None = None) -> RawMessage:
    """A signed Logon as a client would send it, decoded. ``drop`` removes canonical fields (the
    signature is computed without them); ``cred`` replaces (or with None removes) credential
    fields after signing; ``sign_over`` changes values after signing (tampering)."""
    header = [(49, comp_id), (56, "DCGW"), (34, "1"), (50, "OP1"),
              (52, utc_timestamp(now).decode()), (57, "G"), (142, "US,IL"), (369, "0")]
    header += extra_header or []
    body = [(98, "0"), (108, "30"), (141, "N"), (1603, "SIM"), (1604, "1.0"), (1605, "DCGW")]
    header = [(t, v) for t, v in header if t not in drop]
    body = [(t, v) for t, v in body if t not in drop]
    creds = sign_logon_fields(secret_key, access_key_id, dict(header + body))
    if sign_over:
        header = [(t, sign_over.get(t, v)) for t, v in header]
        body = [(t, sign_over.get(t, v)) for t, v in body]
    if cred:
        creds = [(t, cred.get(t, v)) for t, v in creds]
        creds = [(t, v) for t, v in creds if v is not None]
    return decode_one(encode_fields("FIX.4.2", "A", header, body + creds))


@pytest.fixture
def logon():
    return build_logon
