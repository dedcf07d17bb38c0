"""FIX tag numbers and MsgType values used by the gateway.

Numbers are from the FIX 4.2 and FIX 4.4 specifications (Volume 1 "Standard Message Header" and
"Standard Message Trailer"; Volume 2 session messages), plus the CME iLink 2 secure-logon tags
(354/355, 1400-1402, 1603-1605) documented in docs/venue.md. Values are ``int`` tags and
``bytes`` MsgTypes because the codec works on raw bytes.
"""

from __future__ import annotations

from typing import Final

# --- standard header / trailer (FIX 4.2 & 4.4, Vol. 1) ---
BEGIN_STRING: Final = 8
BODY_LENGTH: Final = 9
MSG_TYPE: Final = 35
SENDER_COMP_ID: Final = 49
TARGET_COMP_ID: Final = 56
ON_BEHALF_OF_COMP_ID: Final = 115
DELIVER_TO_COMP_ID: Final = 128
SECURE_DATA_LEN: Final = 90
SECURE_DATA: Final = 91
MSG_SEQ_NUM: Final = 34
SENDER_SUB_ID: Final = 50
SENDER_LOCATION_ID: Final = 142
TARGET_SUB_ID: Final = 57
TARGET_LOCATION_ID: Final = 143
ON_BEHALF_OF_SUB_ID: Final = 116
ON_BEHALF_OF_LOCATION_ID: Final = 144
DELIVER_TO_SUB_ID: Final = 129
DELIVER_TO_LOCATION_ID: Final = 145
POSS_DUP_FLAG: Final = 43
POSS_RESEND: Final = 97
SENDING_TIME: Final = 52
ORIG_SENDING_TIME: Final = 122
XML_DATA_LEN: Final = 212
XML_DATA: Final = 213
MESSAGE_ENCODING: Final = 347
LAST_MSG_SEQ_NUM_PROCESSED: Final = 369
ON_BEHALF_OF_SENDING_TIME: Final = 370
NO_HOPS: Final = 627
HOP_COMP_ID: Final = 628
HOP_SENDING_TIME: Final = 629
HOP_REF_ID: Final = 630
CHECKSUM: Final = 10

#: Tags that belong to the standard header (FIX 4.2 + 4.4). A header tag after the first body tag
#: is "tag specified out of required order" (SessionRejectReason 14).
HEADER_TAGS: Final[frozenset[int]] = frozenset({
    BEGIN_STRING, BODY_LENGTH, MSG_TYPE, SENDER_COMP_ID, TARGET_COMP_ID, ON_BEHALF_OF_COMP_ID,
    DELIVER_TO_COMP_ID, SECURE_DATA_LEN, SECURE_DATA, MSG_SEQ_NUM, SENDER_SUB_ID,
    SENDER_LOCATION_ID, TARGET_SUB_ID, TARGET_LOCATION_ID, ON_BEHALF_OF_SUB_ID,
    ON_BEHALF_OF_LOCATION_ID, DELIVER_TO_SUB_ID, DELIVER_TO_LOCATION_ID, POSS_DUP_FLAG,
    POSS_RESEND, SENDING_TIME, ORIG_SENDING_TIME, XML_DATA_LEN, XML_DATA, MESSAGE_ENCODING,
    LAST_MSG_SEQ_NUM_PROCESSED, ON_BEHALF_OF_SENDING_TIME, NO_HOPS, HOP_COMP_ID,
    HOP_SENDING_TIME, HOP_REF_ID,
})

# --- session-level body tags (Vol. 2) ---
BEGIN_SEQ_NO: Final = 7
END_SEQ_NO: Final = 16
NEW_SEQ_NO: Final = 36

#: The largest sequence number accepted in 34, 7, 16 and 36 (18 digits, leading zeros aside: far
#: below what the session store keeps, a u64); a larger one is a malformed value (373=6), never
#: a number the gateway tries to keep.
MAX_SEQ_DIGITS: Final = 18
MAX_SEQ_NUM: Final = 10 ** MAX_SEQ_DIGITS - 1
#: Digits of a length or a NumInGroup count, leading zeros aside.
MAX_COUNT_DIGITS: Final = 9
#: The largest tag number (FIX's int); a longer one is an invalid tag number (373=0).
MAX_TAG: Final = (1 << 31) - 1
MAX_TAG_DIGITS: Final = 10
REF_SEQ_NUM: Final = 45
TEXT: Final = 58
RAW_DATA_LENGTH: Final = 95
RAW_DATA: Final = 96
ENCRYPT_METHOD: Final = 98
HEART_BT_INT: Final = 108
TEST_REQ_ID: Final = 112
GAP_FILL_FLAG: Final = 123
RESET_SEQ_NUM_FLAG: Final = 141
ENCODED_TEXT_LEN: Final = 354
ENCODED_TEXT: Final = 355
REF_TAG_ID: Final = 371
REF_MSG_TYPE: Final = 372
SESSION_REJECT_REASON: Final = 373
BUSINESS_REJECT_REF_ID: Final = 379
BUSINESS_REJECT_REASON: Final = 380
NEXT_EXPECTED_MSG_SEQ_NUM: Final = 789
ENCRYPTED_PASSWORD_METHOD: Final = 1400
ENCRYPTED_PASSWORD_LEN: Final = 1401
ENCRYPTED_PASSWORD: Final = 1402
APPLICATION_SYSTEM_NAME: Final = 1603
TRADING_SYSTEM_VERSION: Final = 1604
APPLICATION_SYSTEM_VENDOR: Final = 1605

# --- application tags used by filters and simulators ---
ACCOUNT: Final = 1
CL_ORD_ID: Final = 11
EXEC_ID: Final = 17
EXEC_TRANS_TYPE: Final = 20
ORDER_ID: Final = 37
ORDER_QTY: Final = 38
ORD_STATUS: Final = 39
ORD_TYPE: Final = 40
ORIG_CL_ORD_ID: Final = 41
PRICE: Final = 44
SIDE: Final = 54
SYMBOL: Final = 55
TRANSACT_TIME: Final = 60
EXEC_TYPE: Final = 150
LEAVES_QTY: Final = 151
CUM_QTY: Final = 14
AVG_PX: Final = 6
LAST_QTY: Final = 32
LAST_PX: Final = 31
SECURITY_EXCHANGE: Final = 207

#: Length tag -> data tag, for FIX "data" fields whose value may contain SOH (Vol. 1, data types).
DATA_LENGTH_TAGS: Final[dict[int, int]] = {
    SECURE_DATA_LEN: SECURE_DATA,
    RAW_DATA_LENGTH: RAW_DATA,
    XML_DATA_LEN: XML_DATA,
    ENCODED_TEXT_LEN: ENCODED_TEXT,
    ENCRYPTED_PASSWORD_LEN: ENCRYPTED_PASSWORD,
    348: 349,    # EncodedIssuerLen -> EncodedIssuer
    350: 351,    # EncodedSecurityDescLen -> EncodedSecurityDesc
    352: 353,    # EncodedListExecInstLen -> EncodedListExecInst
    356: 357,    # EncodedSubjectLen -> EncodedSubject
    358: 359,    # EncodedHeadlineLen -> EncodedHeadline
    618: 619,    # EncodedLegIssuerLen -> EncodedLegIssuer
    621: 622,    # EncodedLegSecurityDescLen -> EncodedLegSecurityDesc
}


class MsgType:
    """MsgType (35) values. Session-level ones per FIX Vol. 2; application ones that drop copy
    categories refer to (see docs/architecture.md vocabulary)."""

    HEARTBEAT: Final = b"0"
    TEST_REQUEST: Final = b"1"
    RESEND_REQUEST: Final = b"2"
    REJECT: Final = b"3"
    SEQUENCE_RESET: Final = b"4"
    LOGOUT: Final = b"5"
    LOGON: Final = b"A"
    XML_NON_FIX: Final = b"n"
    EXECUTION_REPORT: Final = b"8"
    ORDER_CANCEL_REJECT: Final = b"9"
    NEW_ORDER_SINGLE: Final = b"D"
    ORDER_CANCEL_REQUEST: Final = b"F"
    ORDER_CANCEL_REPLACE_REQUEST: Final = b"G"
    NEW_ORDER_CROSS: Final = b"s"
    NEW_ORDER_MULTILEG: Final = b"AB"
    MULTILEG_CANCEL_REPLACE: Final = b"AC"
    ORDER_MASS_ACTION_REPORT: Final = b"BZ"
    ORDER_MASS_ACTION_REQUEST: Final = b"CA"
    BUSINESS_MESSAGE_REJECT: Final = b"j"


#: Session-level (administrative) message types, FIX Vol. 2. On resend these are gap-filled.
ADMIN_MSG_TYPES: Final[frozenset[bytes]] = frozenset({
    MsgType.HEARTBEAT, MsgType.TEST_REQUEST, MsgType.RESEND_REQUEST, MsgType.REJECT,
    MsgType.SEQUENCE_RESET, MsgType.LOGOUT, MsgType.LOGON,
})


class SessionRejectReason:
    """SessionRejectReason (373) values, FIX 4.2/4.4."""

    INVALID_TAG_NUMBER: Final = 0
    REQUIRED_TAG_MISSING: Final = 1
    TAG_NOT_DEFINED_FOR_MSG_TYPE: Final = 2
    UNDEFINED_TAG: Final = 3
    TAG_WITHOUT_VALUE: Final = 4
    VALUE_INCORRECT: Final = 5
    INCORRECT_DATA_FORMAT: Final = 6
    DECRYPTION_PROBLEM: Final = 7
    SIGNATURE_PROBLEM: Final = 8
    COMPID_PROBLEM: Final = 9
    SENDING_TIME_ACCURACY: Final = 10
    INVALID_MSG_TYPE: Final = 11
    XML_VALIDATION_ERROR: Final = 12
    TAG_APPEARS_MORE_THAN_ONCE: Final = 13
    TAG_OUT_OF_ORDER: Final = 14
    REPEATING_GROUP_OUT_OF_ORDER: Final = 15
    INCORRECT_NUM_IN_GROUP: Final = 16
    NON_DATA_VALUE_INCLUDES_DELIMITER: Final = 17
    OTHER: Final = 99
