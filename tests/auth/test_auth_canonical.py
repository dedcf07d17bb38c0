"""Canonical Logon string and signature (ILINK.md, "Secure logon")."""

from __future__ import annotations

import pytest

from dcgateway.auth.canonical import (
    CANONICAL_TAGS,
    ILINK2_REQUIRED_TAGS,
    canonical_bytes,
    canonical_string,
    key_scope,
    required_tags,
)
from dcgateway.auth.signing import (
    METHOD,
    add_credentials,
    decode_secret,
    sign_logon_fields,
    signature,
    signed_logon,
)
from dcgateway.fix.codec import Decoder, encode_fields

SECRET = "2HlZ7exg8jTKltXnURjKvm3GS5iF5n4ClzHiEm_ocv4"
CANONICAL = "1\nB08004N\nMSG\n20170623-14:48:42.855\n92\n60\nUS,NY\n0\nBRIO\n8.0\nABC"
SIGNATURE = "oHZ2Dx1ihFAp7kHOFcJPkijm27xfApJFp-ZhsSCxr3s"
ACCESS_KEY_ID = "oNDxM33uE81ohWuVRtWT"
VECTOR_FIELDS = {34: "1", 49: "B08004N", 50: "MSG", 52: "20170623-14:48:42.855", 57: "92",
                 108: "60", 142: "US,NY", 369: "0", 1603: "BRIO", 1604: "8.0", 1605: "ABC"}


def test_ilink_test_vector():
    assert signature(SECRET, CANONICAL) == SIGNATURE
    assert signature(SECRET.encode(), CANONICAL.encode()) == SIGNATURE


def test_canonical_string_from_fields_matches_vector():
    assert canonical_string(VECTOR_FIELDS) == CANONICAL
    assert canonical_bytes({t: v.encode() for t, v in VECTOR_FIELDS.items()}) == CANONICAL.encode()


def test_canonical_string_from_decoded_message():
    header = [(49, "B08004N"), (56, "CME"), (34, 1), (50, "MSG"), (52, "20170623-14:48:42.855"),
              (57, "92"), (142, "US,NY"), (369, 0)]
    body = [(108, 60), (1603, "BRIO"), (1604, "8.0"), (1605, "ABC")]
    raw = signed_logon("FIX.4.2", header, body, ACCESS_KEY_ID, SECRET)
    (msg,) = Decoder().feed(raw)
    assert canonical_string(msg) == CANONICAL
    assert msg.get(1402) == SIGNATURE.encode()
    assert msg.get(355) == ACCESS_KEY_ID.encode()
    assert msg.get(354) == b"20" and msg.get(1401) == b"43"
    assert msg.get(1400) == METHOD.encode()


def test_absent_tags_give_empty_values_and_keep_separators():
    fields = dict(VECTOR_FIELDS)
    del fields[50], fields[142], fields[1605]
    assert canonical_string(fields) == ("1\nB08004N\n\n20170623-14:48:42.855\n92\n60\n\n0\n"
                                        "BRIO\n8.0\n")
    assert canonical_string({}) == "\n" * (len(CANONICAL_TAGS) - 1)


def test_values_exactly_as_on_the_wire():
    fields = {**VECTOR_FIELDS, 52: "20170623-14:48:42.855123"}
    assert "20170623-14:48:42.855123" in canonical_string(fields)
    assert signature(SECRET, canonical_string(fields)) != SIGNATURE


def test_credential_fields_order_and_lengths():
    creds = sign_logon_fields(SECRET, ACCESS_KEY_ID, VECTOR_FIELDS)
    assert creds == [(354, "20"), (355, ACCESS_KEY_ID), (1400, "CME-1-SHA-256"), (1401, "43"),
                     (1402, SIGNATURE)]


def test_add_credentials_appends_after_other_fields():
    header = [(49, "B08004N"), (34, "1"), (50, "MSG"), (52, "20170623-14:48:42.855"), (57, "92"),
              (142, "US,NY"), (369, "0")]
    body = [(108, "60"), (1603, "BRIO"), (1604, "8.0"), (1605, "ABC")]
    out = add_credentials(header, body, ACCESS_KEY_ID, SECRET)
    assert out[:4] == body
    assert [t for t, _ in out[4:]] == [354, 355, 1400, 1401, 1402]
    assert out[-1] == (1402, SIGNATURE)
    raw = encode_fields("FIX.4.2", "A", header, out)
    assert b"1402=" + SIGNATURE.encode() in raw


@pytest.mark.parametrize("bad", ["", "short", SECRET + "A", SECRET[:-1] + "=", SECRET[:-1] + "+"])
def test_bad_secret_rejected_without_echoing_it(bad):
    with pytest.raises(ValueError) as e:
        decode_secret(bad)
    if bad:
        assert bad not in str(e.value)


def test_decode_secret_is_32_bytes():
    assert len(decode_secret(SECRET)) == 32


def test_key_scope_and_required_tags_by_profile():
    assert key_scope("ABC123N", "ilink2") == "ABC"
    assert key_scope("CLRFIX44", "fix") == "CLRFIX44"
    assert required_tags("ilink2") == ILINK2_REQUIRED_TAGS == frozenset(CANONICAL_TAGS)
    assert 1603 not in required_tags("fix") and 52 in required_tags("fix")


def test_logon_signer_for_simulators():
    from dcgateway.auth.signing import logon_signer
    header = [(49, "B08004N"), (34, 1), (50, b"MSG"), (52, "20170623-14:48:42.855"), (57, "92"),
              (142, "US,NY"), (369, 0)]
    body = [(108, 60), (1603, "BRIO"), (1604, "8.0"), (1605, "ABC")]
    sign = logon_signer(ACCESS_KEY_ID, SECRET)
    assert sign(header, body)[-1] == (1402, SIGNATURE)
    with pytest.raises(ValueError):
        logon_signer(ACCESS_KEY_ID, "not-a-secret")
