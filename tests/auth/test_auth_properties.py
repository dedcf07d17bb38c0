"""Property: whatever the Logon's field values, a Logon signed with the client helpers verifies
once (a second use is a replay), and changing any canonical value after signing makes it fail
(hypothesis)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcgateway.auth import LogonAuthenticator, open_key_manager, session_auth, signed_logon
from dcgateway.fix.codec import Decoder
from dcgateway.fix.timefmt import utc_timestamp

NOW = datetime(2026, 3, 2, 15, tzinfo=timezone.utc).timestamp()
OPTIONAL = (50, 57, 142, 369, 1603, 1604, 1605)
HEADER_TAGS = {50, 57, 142, 369}
# FIX values: printable ASCII, no SOH, never empty
VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=12)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("props")
    m = open_key_manager(root / "keys.db", root / "master.key", root / "audit.jsonl")
    key = m.create("CLRFIX44", now=datetime(2026, 3, 1, tzinfo=timezone.utc))
    return root, m, key


def _authenticator(keys):
    root, m, _ = keys
    return LogonAuthenticator(m.store, {"CLRFIX44": session_auth("CLRFIX44", "fix")},
                              state_dir=root, max_invalid_logons=10**9)


@pytest.fixture(scope="module")
def env(keys):
    return _authenticator(keys), keys[2]


def _logon(key, values: dict[int, str], tamper: tuple[int, str] | None = None):
    header = [(49, "CLRFIX44"), (56, "DCGW"), (34, "7"), (52, utc_timestamp(NOW).decode())]
    header += [(t, v) for t, v in values.items() if t in HEADER_TAGS]
    body = [(108, "30")] + [(t, v) for t, v in values.items() if t not in HEADER_TAGS]
    raw = signed_logon("FIX.4.4", header, body, key.access_key_id, key.secret_key)
    if tamper is not None:
        tag, new = tamper
        old = b"\x01%d=%s\x01" % (tag, values[tag].encode())
        raw = raw.replace(old, b"\x01%d=%s\x01" % (tag, new.encode()), 1)
        cut = raw.rfind(b"10=")
        head = raw[:cut]
        # keep BodyLength and CheckSum right so only the signature can catch the change
        start = head.index(b"\x01", head.index(b"9=")) + 1
        head = head[:head.index(b"9=") + 2] + str(len(head) - start).encode() + head[start - 1:]
        raw = head + b"10=%03d\x01" % (sum(head) % 256)
    (msg,) = Decoder().feed(raw)
    return msg


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(OPTIONAL), VALUE))
def test_signed_logon_verifies_once(keys, values):
    auth, key = _authenticator(keys), keys[2]
    logon = _logon(key, values)
    assert auth(logon, NOW).ok
    again = auth(logon, NOW + 1)
    assert not again.ok and again.reason == "replayed_logon"
    assert again.text == "authentication failed"


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(OPTIONAL), VALUE, min_size=1), st.data())
def test_changed_value_fails(env, values, data):
    auth, key = env
    tag = data.draw(st.sampled_from(sorted(values)))
    new = data.draw(VALUE.filter(lambda v: v != values[tag]))
    d = auth(_logon(key, values, (tag, new)), NOW)
    assert not d.ok and d.reason == "bad_signature"
