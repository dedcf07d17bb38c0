"""The gateway's vocabulary, defined once: the words of configuration, routing, metrics and the
command line (a session's role and profile, a group's front end system, a message's drop copy
category). Each is a ``StrEnum``: its members are the very strings written in gateway.yaml and
groups.yaml, shown in metric labels and accepted on the command line."""

from __future__ import annotations

from enum import StrEnum

from .fix import tags as T
from .fix.dropcopy import FrontEnd


class Role(StrEnum):
    SOURCE = "source"       # an order-entry session whose messages are copied
    TARGET = "target"       # a drop copy session that receives copies (read-only)


class Profile(StrEnum):
    """A session's message profile: key scope, required Logon tags, default BeginString."""

    ILINK2 = "ilink2"
    FIX = "fix"


class Category(StrEnum):
    """Which kind of business message a drop copy group copies (the venue's filters)."""

    EXECUTION = "execution"             # fills, trade corrections and busts
    ACKNOWLEDGMENT = "acknowledgment"   # execution reports that are not trades, cancel rejects
    ORDER = "order"                     # order entry: D, F, G, AB, AC, ...
    MASS_ACTION = "mass_action"         # order mass action reports
    REJECT = "reject"                   # session-level and business rejects


#: The same as plain strings, in definition order (for YAML, CLI choices and metric labels).
ROLES: tuple[str, ...] = tuple(r.value for r in Role)
PROFILES: tuple[str, ...] = tuple(p.value for p in Profile)
FRONT_ENDS: tuple[str, ...] = tuple(f.value for f in FrontEnd)
CATEGORIES: tuple[str, ...] = tuple(c.value for c in Category)
#: The message types each category can carry (FIX 4.2/4.4 Vol. 4 and the venue's order mass
#: actions). An ExecutionReport (8) is an execution or an acknowledgment by its ExecType: the
#: routing table decides per message (dcgateway.routing).
CATEGORY_MSG_TYPES: dict[str, tuple[bytes, ...]] = {
    Category.ORDER: (T.MsgType.NEW_ORDER_SINGLE, T.MsgType.ORDER_CANCEL_REQUEST,
                     T.MsgType.ORDER_CANCEL_REPLACE_REQUEST, T.MsgType.NEW_ORDER_MULTILEG,
                     T.MsgType.MULTILEG_CANCEL_REPLACE, T.MsgType.NEW_ORDER_CROSS, b"t", b"u",
                     b"q", T.MsgType.ORDER_MASS_ACTION_REQUEST),
    Category.ACKNOWLEDGMENT: (T.MsgType.EXECUTION_REPORT, T.MsgType.ORDER_CANCEL_REJECT),
    Category.EXECUTION: (T.MsgType.EXECUTION_REPORT,),
    Category.MASS_ACTION: (T.MsgType.ORDER_MASS_ACTION_REPORT, b"r"),
    Category.REJECT: (T.MsgType.REJECT, T.MsgType.BUSINESS_MESSAGE_REJECT),
}
#: A session profile's own copy format, when no group names one for a target.
PROFILE_FRONT_END: dict[str, FrontEnd] = {Profile.ILINK2: FrontEnd.ILINK2,
                                          Profile.FIX: FrontEnd.FIX}

__all__ = ["CATEGORIES", "CATEGORY_MSG_TYPES", "Category", "FRONT_ENDS", "FrontEnd", "PROFILES", "PROFILE_FRONT_END",
           "Profile", "ROLES", "Role"]
