"""The canonical Logon string that the iLink 2 style signature covers (docs/venue.md, "Secure logon").

The string is the *values* (not the tags) of 34, 49, 50, 52, 57, 108, 142, 369, 1603, 1604, 1605,
in that order, joined by a single ``\\n`` with no trailing newline. Values are taken exactly as they
appear on the wire (52 keeps its precision). An absent tag contributes an empty value and keeps its
separator; whether an absent tag is acceptable is a separate, per-profile check
(:data:`ILINK2_REQUIRED_TAGS`, :data:`FIX_REQUIRED_TAGS`) made by the authenticator.

Also here: the key scope of a session (the "Session ID" keys are issued for), which the venue
derives from the first three characters of SenderCompID (49) and the plain FIX profile takes as the
whole SenderCompID (docs/venue.md, "Logon rules", ours).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Union

from ..fix import tags as T
from ..fix.codec import RawMessage

#: Tags whose values make up the canonical string, in order (docs/venue.md).
CANONICAL_TAGS: tuple[int, ...] = (
    T.MSG_SEQ_NUM,                   # 34
    T.SENDER_COMP_ID,                # 49
    T.SENDER_SUB_ID,                 # 50
    T.SENDING_TIME,                  # 52
    T.TARGET_SUB_ID,                 # 57
    T.HEART_BT_INT,                  # 108
    T.SENDER_LOCATION_ID,            # 142
    T.LAST_MSG_SEQ_NUM_PROCESSED,    # 369
    T.APPLICATION_SYSTEM_NAME,       # 1603
    T.TRADING_SYSTEM_VERSION,        # 1604
    T.APPLICATION_SYSTEM_VENDOR,     # 1605
)

#: iLink 2 requires every canonical field on the Logon.
ILINK2_REQUIRED_TAGS: frozenset[int] = frozenset(CANONICAL_TAGS)
#: A plain FIX session needs only what any FIX Logon carries; the rest may be empty.
FIX_REQUIRED_TAGS: frozenset[int] = frozenset(
    {T.MSG_SEQ_NUM, T.SENDER_COMP_ID, T.SENDING_TIME, T.HEART_BT_INT})

PROFILE_ILINK2 = "ilink2"
PROFILE_FIX = "fix"

FieldSource = Union[RawMessage, Mapping[int, Union[bytes, str, int]]]


def _as_bytes(value: bytes | str | int | None) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, int):
        return b"%d" % value
    return value.encode("ascii")


def canonical_values(source: FieldSource) -> list[bytes]:
    """The eleven canonical values (``b""`` for an absent tag), from a decoded
    :class:`~dcgateway.fix.codec.RawMessage` or a ``{tag: value}`` mapping (values bytes, str or
    int; a client building its Logon has them as such). May raise
    :class:`~dcgateway.fix.codec.FieldError` for a message whose body cannot be parsed."""
    get = source.get
    return [_as_bytes(get(tag)) for tag in CANONICAL_TAGS]


def canonical_bytes(source: FieldSource) -> bytes:
    """The canonical string as ASCII bytes: what the HMAC is computed over."""
    return b"\n".join(canonical_values(source))


def canonical_string(source: FieldSource) -> str:
    """The canonical string as text (ASCII; other bytes are escaped, never silently dropped)."""
    return canonical_bytes(source).decode("ascii", "backslashreplace")


def key_scope(comp_id: str, profile: str) -> str:
    """The Session ID that keys of ``comp_id`` are issued for: the first 3 characters of the
    SenderCompID for the ``ilink2`` profile (Session ID + Firm ID + fault-tolerance letter), the
    whole SenderCompID for any other profile."""
    return comp_id[:3] if profile == PROFILE_ILINK2 else comp_id


def required_tags(profile: str) -> frozenset[int]:
    """The canonical tags a Logon of ``profile`` must carry (non-empty)."""
    return ILINK2_REQUIRED_TAGS if profile == PROFILE_ILINK2 else FIX_REQUIRED_TAGS
