"""Client side of the secure logon: sign a Logon with a key pair (docs/venue.md, "Secure logon").

Used by the simulators, the tests and anyone writing a client for the gateway::

    header = [(49, "ABC123N"), (56, "DCGW"), (34, 1), (52, "20260301-14:48:42.855"), ...]
    body = [(98, 0), (108, 30), (1603, "BRIO"), (1604, "8.0"), (1605, "ABC")]
    raw = signed_logon("FIX.4.2", header, body, access_key_id, secret_key)

signature = base64url without ``=`` padding of HMAC-SHA256(key = base64url-decoded secret (32
bytes), message = canonical string as ASCII). The HMAC is ``cryptography``'s; verification in
:mod:`.verify` compares in constant time.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Mapping

from cryptography.hazmat.primitives import hashes, hmac

from ..fix import tags as T
from ..fix.codec import FieldValue, encode_fields
from .canonical import canonical_bytes

#: EncryptedPasswordMethod (1400) value the venue defines.
METHOD = "CME-1-SHA-256"
SECRET_LEN = 43            # base64url without padding of 32 bytes
SIGNATURE_LEN = 43         # base64url without padding of a 32-byte HMAC-SHA256
ACCESS_KEY_ID_LEN = 20

_B64URL_43 = re.compile(r"[A-Za-z0-9_-]{43}")


def b64url_nopad(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_secret(secret_key: str | bytes) -> bytes:
    """The 32 key bytes of a Secret Key (43 base64url characters). Raises ``ValueError`` whose
    message never contains the secret."""
    text = secret_key.decode("ascii", "replace") if isinstance(secret_key, bytes) else secret_key
    if not _B64URL_43.fullmatch(text):
        raise ValueError(f"a secret key is {SECRET_LEN} base64url characters (A-Z a-z 0-9 - _)")
    try:
        raw = base64.urlsafe_b64decode(text + "=")
    except (binascii.Error, ValueError):
        raise ValueError("secret key is not valid base64url") from None
    if len(raw) != 32:          # pragma: no cover - 43 chars always decode to 32 bytes
        raise ValueError("a secret key decodes to 32 bytes")
    return raw


def signature_bytes(key: bytes, canonical: bytes) -> str:
    """Signature over ``canonical`` with already-decoded key bytes (the verifier's fast path)."""
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(canonical)
    return b64url_nopad(h.finalize())


def signature(secret_key: str | bytes, canonical: str | bytes) -> str:
    """The 1402 EncryptedPassword value: base64url-no-pad(HMAC-SHA256(secret, canonical))."""
    msg = canonical.encode("ascii") if isinstance(canonical, str) else canonical
    return signature_bytes(decode_secret(secret_key), msg)


def credential_fields(access_key_id: str, sig: str) -> list[tuple[int, str]]:
    """354/355/1400/1401/1402 in the venue's order, lengths computed from the values."""
    return [
        (T.ENCODED_TEXT_LEN, str(len(access_key_id))),
        (T.ENCODED_TEXT, access_key_id),
        (T.ENCRYPTED_PASSWORD_METHOD, METHOD),
        (T.ENCRYPTED_PASSWORD_LEN, str(len(sig))),
        (T.ENCRYPTED_PASSWORD, sig),
    ]


def sign_logon_fields(secret_key: str | bytes, access_key_id: str,
                      fields: Mapping[int, FieldValue]) -> list[tuple[int, str]]:
    """The five credential fields for a Logon whose other fields are ``fields`` (``{tag: value}``,
    header and body together; values exactly as they will be written on the wire)."""
    return credential_fields(access_key_id, signature(secret_key, canonical_bytes(fields)))


def _merge(header: Iterable[tuple[int, FieldValue]],
           body: Iterable[tuple[int, FieldValue]]) -> dict[int, FieldValue]:
    """``{tag: value}`` of header then body fields; the first occurrence wins, as in the
    gateway's lookup (:meth:`RawMessage.get`)."""
    values: dict[int, FieldValue] = {}
    for tag, value in (*header, *body):
        values.setdefault(tag, value)
    return values


def add_credentials(header: Iterable[tuple[int, FieldValue]],
                    body: Iterable[tuple[int, FieldValue]],
                    access_key_id: str, secret_key: str | bytes) -> list[tuple[int, FieldValue]]:
    """``body`` with the credential fields appended after the other Logon fields (docs/venue.md order).
    ``header`` are the header fields after 35 (49, 56, 34, 52, 50, 57, 142, 369, ...)."""
    body = list(body)
    return body + sign_logon_fields(secret_key, access_key_id, _merge(header, body))


def logon_signer(access_key_id: str, secret_key: str | bytes
                 ) -> Callable[[Iterable[tuple[int, FieldValue]], Iterable[tuple[int, FieldValue]]],
                               list[tuple[int, str]]]:
    """A ``(header_fields, body_fields) -> credential_fields`` callable bound to one key pair (the
    simulators' ``LogonSigner``): the fields to append after the Logon's other body fields. The
    secret is checked now, so a bad one fails at setup, not at the first Logon."""
    decode_secret(secret_key)

    def sign(header: Iterable[tuple[int, FieldValue]],
             body: Iterable[tuple[int, FieldValue]]) -> list[tuple[int, str]]:
        return sign_logon_fields(secret_key, access_key_id, _merge(header, body))

    return sign


def signed_logon(begin_string: bytes | str, header: Iterable[tuple[int, FieldValue]],
                 body: Iterable[tuple[int, FieldValue]], access_key_id: str,
                 secret_key: str | bytes) -> bytes:
    """A complete, signed Logon (35=A) message ready for the wire."""
    header = list(header)
    return encode_fields(begin_string, T.MsgType.LOGON, header,
                         add_credentials(header, body, access_key_id, secret_key))
