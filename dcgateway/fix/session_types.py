"""Types of the FIX session engine's public API (:mod:`.session` re-exports every name here;
import them from there): the state table, configuration, authenticator protocol and events.

Events are small frozen dataclasses told apart by their class (``isinstance``/``match``); the I/O
shell turns them into log lines and metrics (docs/architecture.md rule 3).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import DcGatewayError
from .codec import DEFAULT_MAX_SIZE, RawMessage


class SessionState(enum.Enum):
    """FIX Vol. 2 session life cycle as seen by the acceptor."""

    AWAITING_LOGON = "awaiting_logon"
    ACTIVE = "active"
    LOGOUT_SENT = "logout_sent"
    LOGOUT_RECEIVED = "logout_received"
    CLOSED = "closed"


S = SessionState

#: state -> {trigger: next state}. LOGOUT_RECEIVED may still send (its Logout reply);
#: LOGOUT_SENT ends on the peer's Logout, the logout timeout or a fault: all are "disconnect".
TRANSITIONS: dict[SessionState, dict[str, SessionState]] = {
    S.AWAITING_LOGON: {"logon": S.ACTIVE, "send_logout": S.LOGOUT_SENT, "disconnect": S.CLOSED},
    S.ACTIVE: {"send_logout": S.LOGOUT_SENT, "recv_logout": S.LOGOUT_RECEIVED,
               "disconnect": S.CLOSED},
    S.LOGOUT_SENT: {"disconnect": S.CLOSED},
    S.LOGOUT_RECEIVED: {"send_logout": S.LOGOUT_RECEIVED, "disconnect": S.CLOSED},
    S.CLOSED: {},
}


@dataclass(frozen=True)
class SessionConfig:
    begin_string: bytes            # expected BeginString, e.g. b"FIX.4.2" or b"FIX.4.4"
    our_comp_id: bytes             # the gateway's CompID: 49 on what we send, expected 56 inbound
    their_comp_id: bytes           # counterparty CompID: 56 on what we send, expected 49 inbound
    heartbeat_min: int = 5         # accepted HeartBtInt(108) range, docs/venue.md: 5..60
    heartbeat_max: int = 60
    sending_time_tolerance: float = 120.0   # SendingTime accuracy for all inbound messages
    resend_chunk: int = 2500       # max messages per ResendRequest we send (the venue's 2500)
    #: seqs of a ResendRequest we serve answered per :meth:`~.session.FixSession.continue_resend`
    #: call (0: the whole request at once); a request is always answered whole
    resend_slice: int = 0
    logout_timeout: float = 10.0   # after we send Logout, disconnect if no Logout reply by then
    max_queued: int = 10000        # bound on out-of-order inbound messages held while a gap fills
    allow_reset_on_logon: bool = True   # 141=Y accepted on Logon
    logon_timeout: float = 60.0    # docs/venue.md: the Logon must arrive within 60 s of the connect
    max_queued_bytes: int = 64 * 1024 * 1024    # byte bound on the same queue
    max_message_size: int = DEFAULT_MAX_SIZE    # codec frame cap for this session's decoder
    #: the session's data dictionary validator (:class:`~.validate.Validator`); None: only the
    #: session-level checks of :func:`.session_admin.validate`
    validator: Any = None
    reset_on_logon: bool = False   # QuickFIX ResetOnLogon: every Logon starts both sides at 1
    error_logout_grace: float = 2.0   # after an error Logout, wait this long for the peer's


class Outgoing(NamedTuple):
    """One message the session sends, as the shell needs it: its MsgSeqNum, whether it is a
    retransmission (PossDupFlag=Y: it reuses an old seq and may go out at once) and its bytes.
    A drop copy target's outbox interleaves these with copies by ``seq``, so nothing has to
    decode the session's own output again."""

    seq: int
    poss_dup: bool
    raw: bytes


class AuthDecision(NamedTuple):
    ok: bool
    reason: str = ""      # precise reason for logs/metrics, never sent to the peer
    text: str = ""        # 58 text of the Logout sent on failure


Authenticator = Callable[[RawMessage, float], AuthDecision]


def accept_all(logon: RawMessage, now: float) -> AuthDecision:
    """Default authenticator: the acceptor already checked that the CompID is configured."""
    return AuthDecision(True)


class SessionNotReady(DcGatewayError):
    """send_app() on a session that is not logged on (or is logging out)."""


# --- events ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LoggedOn:
    heartbeat_interval: int
    reset: bool


class AppMessage:
    """An application message, in sequence and valid, for the application sink. A plain class,
    not a frozen dataclass like the other events: one is made per message, and compiled a
    native class is built directly where a frozen dataclass runs its generated ``__init__``
    (about 2,000 instructions)."""

    __slots__ = ("msg",)

    def __init__(self, msg: RawMessage) -> None:
        self.msg = msg

    def __repr__(self) -> str:
        return f"AppMessage({self.msg!r})"


@dataclass(frozen=True, slots=True)
class AuthFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class SessionRejectSent:
    ref_seq: int
    reason: int
    text: str


@dataclass(frozen=True, slots=True)
class PeerReject:
    """The peer rejected one of our messages: a session-level Reject (35=3) or a
    BusinessMessageReject (35=j); ``ref_seq`` is its RefSeqNum (45), 0 when absent."""

    ref_seq: int
    msg_type: bytes
    reason: str
    text: str


@dataclass(frozen=True, slots=True)
class ProtocolError:
    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class ResendServed:
    begin: int
    end: int
    resent: int
    gap_filled: int       # sequence numbers covered by SequenceReset-GapFill (resent+this = range)


@dataclass(frozen=True, slots=True)
class ResendRequested:
    begin: int
    end: int


@dataclass(frozen=True, slots=True)
class LoggedOut:
    reason: str


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason: str


Event = (LoggedOn | AppMessage | AuthFailed | SessionRejectSent | ProtocolError | ResendServed
         | ResendRequested | LoggedOut | Disconnect | PeerReject)
