"""Deterministic order lifecycle generator for the source simulator.

Why a generator of whole lifecycles rather than random messages: a drop copy target (a clearing
firm) checks that what it receives makes sense as trading activity: a fill refers to an order
that was acknowledged, a trade bust refers to a fill (ExecRefID 19), a cancel reject answers a
cancel request (OrigClOrdID 41). Filters and categories are only exercised properly by traffic
with that shape: acknowledgments, executions and order entry interleaved across several open
orders, accounts and symbols.

:class:`OrderFlow` is an endless iterator of :class:`OrderEvent` (MsgType + body fields + a
business key). Everything, except TransactTime (60) when no ``clock`` is given, follows from the
``seed``: two flows built with the same arguments yield the same messages.

Message shapes (FIX 4.2 Vol. 4 / FIX 4.4 Vol. 4 "Single/General Order Handling", and the iLink 2
conventions for trade busts and corrections):

* NewOrderSingle (D), OrderCancelRequest (F), OrderCancelReplaceRequest (G): order entry.
* ExecutionReport (8): 150=0 new, 150=1/2 partial/full fill in FIX 4.2 (150=F with 39=1/2 in
  FIX 4.4), 150=4 canceled, 150=5 replaced, 150=8 rejected, 150=H trade cancel (bust) and 150=G
  trade correction, both with ExecRefID (19) naming the fill; in FIX 4.2 ExecTransType (20) is
  0 new, 1 cancel, 2 correct.
* OrderCancelReject (9): a cancel request that came too late (the order was filled).
* OrderMassActionReport (BZ): a mass cancel of an account's orders in one symbol and side; the
  affected open orders then get 150=4 cancel acknowledgments.

Every message carries the fields the gateway's filters read: Account (1), Symbol (55),
SecurityExchange (207), Side (54); SenderSubID (50) travels in :attr:`OrderEvent.sub_id` for the
header. Every message has a unique business key (:func:`message_key`): ``8:<ExecID>``,
``D:/F:/G:<ClOrdID>``, ``9:<ClOrdID of the cancel request>``, ``BZ:<MassActionReportID>``.
"""

from __future__ import annotations

import datetime as _dt
import random
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

__all__ = ["OrderEvent", "OrderFlow", "message_key", "KEY_TAGS", "DEFAULT_ACCOUNTS",
           "DEFAULT_SYMBOLS", "SYMBOL_EXCHANGE", "OUTCOMES"]

Field = tuple[int, str]

DEFAULT_ACCOUNTS = ("ACCT01", "ACCT02", "ACCT03", "ACCT09")
DEFAULT_SYMBOLS = ("ESZ6", "NQZ6", "GEZ6", "ZNH7", "CLF7")
#: Where each default symbol trades (MIC): CME equity/rates, CBOT treasuries, NYMEX energy.
SYMBOL_EXCHANGE = {"ES": "XCME", "NQ": "XCME", "GE": "XCME", "ZN": "XCBT", "CL": "XNYM"}
#: (base price, tick) per product, so prices look like the product's.
_PRICES = {"ES": ("4500.00", "0.25"), "NQ": ("15800.00", "0.25"), "GE": ("95.500", "0.005"),
           "ZN": ("110.5", "0.015625"), "CL": ("75.00", "0.01")}

#: The business-key tag of each MsgType (see the module docstring).
KEY_TAGS: dict[str, int] = {"8": 17, "D": 11, "F": 11, "G": 11, "9": 11, "BZ": 1369,
                            "AB": 11, "AC": 11, "r": 1369}
_FALLBACK_KEY_TAGS = (17, 11, 1369)

#: Lifecycle outcomes and their default weights.
OUTCOMES: dict[str, float] = {
    "fill": 0.38, "partial_cancel": 0.10, "cancel": 0.12, "cancel_reject": 0.07,
    "replace": 0.12, "reject": 0.07, "bust": 0.07, "correct": 0.07,
}


def message_key(msg_type: str, get: Callable[[int], "bytes | str | None"]) -> str | None:
    """The business key of a message: its MsgType and the id that makes it unique. ``get(tag)``
    reads a field (bytes or str). None when the message carries none of the id tags."""
    tag = KEY_TAGS.get(msg_type)
    for t in (tag,) if tag is not None else _FALLBACK_KEY_TAGS:
        v = get(t)
        if v:
            return f"{msg_type}:{v.decode('latin-1') if isinstance(v, bytes) else v}"
    return None


class OrderEvent(NamedTuple):
    """One message to send: MsgType, body fields, business key, SenderSubID for the header."""
    msg_type: str
    fields: list[Field]
    key: str
    sub_id: str | None


def _now_transact_time() -> str:
    t = _dt.datetime.now(_dt.timezone.utc)
    return t.strftime("%Y%m%d-%H:%M:%S.") + f"{t.microsecond // 1000:03d}"


@dataclass
class _Order:
    clordid: str            # current ClOrdID (changes on F/G)
    orig_clordid: str | None
    order_id: str
    account: str
    symbol: str
    exchange: str
    side: str
    qty: int
    price: Decimal
    sub_id: str | None
    cum: int = 0
    notional: Decimal = Decimal(0)
    acked: bool = False
    pending_request: bool = False   # an F/G is outstanding: its answer must come next
    last_fill: tuple[str, int, Decimal] | None = None   # (ExecID, qty, price) for busts
    status: str = "A"               # OrdStatus (39) as a FIX value

    @property
    def leaves(self) -> int:
        return max(self.qty - self.cum, 0) if self.status not in ("4", "8", "2") else 0

    def avg_px(self) -> str:
        """AvgPx (6) as a FIX Price: plain digits, never an exponent (Decimal.normalize would
        write 4500 as 4.5E+3)."""
        return format((self.notional / self.cum).quantize(Decimal("0.000001")).normalize(),
                      "f") if self.cum else "0"


#: One step of an order's scripted lifecycle: the next message about it.
_Step = Callable[[_Order], OrderEvent]


class OrderFlow(Iterator[OrderEvent]):
    """Endless, seeded stream of interleaved order lifecycles (see the module docstring).

    ``max_open`` bounds the orders in flight (and so this object's memory); ``p_mass`` is the
    chance per step of an OrderMassActionReport (FIX 4.2 flows only: 35=BZ is the venue's
    iLink 2 message, not a FIX 4.4 one); ``outcomes`` overrides :data:`OUTCOMES`
    weights; ``clock`` returns TransactTime (60) text (default: the wall clock)."""

    P_MASS = 0.01           # the default chance of a BZ per step

    def __init__(self, *, seed: int = 1, sender: str = "SRC", begin_string: str = "FIX.4.2",
                 accounts: Sequence[str] = DEFAULT_ACCOUNTS,
                 symbols: Sequence[str] = DEFAULT_SYMBOLS,
                 exchanges: Sequence[str] | None = None, sub_ids: Sequence[str | None] = (None,),
                 max_open: int = 16, p_new: float = 0.3, p_mass: float = P_MASS,
                 outcomes: dict[str, float] | None = None,
                 clock: Callable[[], str] | None = None, id_prefix: str | None = None) -> None:
        if not accounts or not symbols or not sub_ids:
            raise ValueError("accounts, symbols and sub_ids must not be empty")
        self.rng = random.Random(seed)
        self.v44 = begin_string >= "FIX.4.4"
        self.accounts = list(accounts)
        self.symbols = list(symbols)
        self.exchanges = list(exchanges) if exchanges else None
        self.sub_ids = list(sub_ids)
        self.max_open = max(1, max_open)
        self.p_new = p_new
        self.p_mass = p_mass
        weights = dict(OUTCOMES if outcomes is None else outcomes)
        self._outcomes = [k for k, w in weights.items() if w > 0]
        self._weights = [weights[k] for k in self._outcomes]
        if not self._outcomes:
            raise ValueError("at least one outcome needs a positive weight")
        self.clock = clock or _now_transact_time
        self.prefix = f"{sender}-{seed}-" if id_prefix is None else id_prefix
        self._open: dict[str, tuple[_Order, deque[_Step]]] = {}   # OrderID -> (order, steps)
        self._n = {"C": 0, "O": 0, "X": 0, "M": 0}
        self.outcome_counts: dict[str, int] = {}
        self._again = False

    # -- ids and fields -------------------------------------------------------------------------

    def _id(self, kind: str) -> str:
        self._n[kind] += 1
        return f"{self.prefix}{kind}{self._n[kind]}"

    def _exchange(self, symbol: str) -> str:
        if self.exchanges:
            return self.rng.choice(self.exchanges)
        return SYMBOL_EXCHANGE.get(symbol[:2], "XCME")

    def _price(self, symbol: str) -> Decimal:
        base, tick = _PRICES.get(symbol[:2], ("100.00", "0.01"))
        return Decimal(base) + Decimal(tick) * self.rng.randint(-40, 40)

    @staticmethod
    def _instrument(o: _Order) -> list[Field]:
        return [(1, o.account), (55, o.symbol), (207, o.exchange), (54, o.side)]

    def _report(self, o: _Order, exec_type: str, *, last_qty: int = 0,
                last_px: Decimal | None = None, extra: Sequence[Field] = (),
                trans_type: str = "0") -> OrderEvent:
        """An ExecutionReport (35=8) of ``o`` in its current state."""
        exec_id = self._id("X")
        f: list[Field] = [(37, o.order_id), (11, o.clordid)]
        if o.orig_clordid:
            f.append((41, o.orig_clordid))
        f.append((17, exec_id))
        if not self.v44:
            f.append((20, trans_type))
            if exec_type in ("G", "H"):     # FIX 4.2: a correction/bust is 20=2/1 on a fill
                exec_type = "2" if o.leaves == 0 else "1"
        f += [(150, exec_type), (39, o.status)] + self._instrument(o)
        f += [(38, str(o.qty)), (40, "2"), (44, str(o.price)), (32, str(last_qty)),
              (31, str(last_px if last_px is not None else 0)), (151, str(o.leaves)),
              (14, str(o.cum)), (6, o.avg_px()), (60, self.clock())]
        f += list(extra)
        return OrderEvent("8", f, f"8:{exec_id}", o.sub_id)

    # -- lifecycle steps (each returns the next message of one order) -----------------------------

    def _new_order(self) -> OrderEvent:
        symbol = self.rng.choice(self.symbols)
        o = _Order(clordid=self._id("C"), orig_clordid=None, order_id=self._id("O"),
                   account=self.rng.choice(self.accounts), symbol=symbol,
                   exchange=self._exchange(symbol), side=self.rng.choice("12"),
                   qty=self.rng.randint(1, 50), price=self._price(symbol),
                   sub_id=self.rng.choice(self.sub_ids))
        outcome = self.rng.choices(self._outcomes, self._weights)[0]
        self.outcome_counts[outcome] = self.outcome_counts.get(outcome, 0) + 1
        self._open[o.order_id] = (o, deque(self._script(o, outcome)))
        f = [(11, o.clordid)] + ([] if self.v44 else [(21, "1")]) + self._instrument(o)
        f += [(60, self.clock()), (38, str(o.qty)), (40, "2"), (44, str(o.price)), (59, "0")]
        return OrderEvent("D", f, f"D:{o.clordid}", o.sub_id)

    def _script(self, o: _Order, outcome: str) -> list[_Step]:
        """The steps after the NewOrderSingle for ``outcome``."""
        if outcome == "reject":
            return [self._reject]
        fills: list[_Step] = [self._fills]
        scripts: dict[str, list[_Step]] = {
            "fill": [self._ack, *fills],
            "partial_cancel": [self._ack, *([self._fill] if o.qty > 1 else []),
                               self._cancel_request, self._cancel_ack],
            "cancel": [self._ack, self._cancel_request, self._cancel_ack],
            "cancel_reject": [self._ack, self._fill_all, self._cancel_request,
                              self._cancel_reject],
            "replace": [self._ack, self._replace_request, self._replace_ack, *fills],
            "bust": [self._ack, self._fill_all, self._trade_cancel],
            "correct": [self._ack, self._fill_all, self._trade_correct],
        }
        return scripts[outcome]

    def _ack(self, o: _Order) -> OrderEvent:
        o.acked, o.status = True, "0"
        return self._report(o, "0")

    def _reject(self, o: _Order) -> OrderEvent:
        o.status = "8"
        # OrdRejReason 99 (Other) is FIX 4.4; FIX 4.2's nearest is 0 (Broker option)
        return self._report(o, "8", extra=[(103, "99" if self.v44 else "0"),
                                           (58, "price outside banding")])

    def _execute(self, o: _Order, qty: int) -> OrderEvent:
        price = o.price
        o.cum += qty
        o.notional += price * qty
        full = o.cum >= o.qty
        o.status = "2" if full else "1"
        exec_type = "F" if self.v44 else ("2" if full else "1")
        ev = self._report(o, exec_type, last_qty=qty, last_px=price)
        o.last_fill = (ev.fields[[t for t, _ in ev.fields].index(17)][1], qty, price)
        return ev

    def _fill(self, o: _Order) -> OrderEvent:
        """A partial fill that leaves at least one lot for the steps after it."""
        leaves = o.qty - o.cum
        return self._execute(o, self.rng.randint(1, leaves - 1) if leaves > 1 else leaves)

    def _fill_all(self, o: _Order) -> OrderEvent:
        return self._execute(o, o.qty - o.cum)

    def _fills(self, o: _Order) -> OrderEvent:
        """Partial fills until, by chance or by quantity, a last fill completes the order; the
        quantity is known only now (a replace may have changed it)."""
        leaves = o.qty - o.cum
        if leaves > 1 and self.rng.random() < 0.45:
            self._again = True
            return self._execute(o, self.rng.randint(1, leaves - 1))
        return self._execute(o, leaves)

    def _request(self, o: _Order, msg_type: str, extra: Sequence[Field] = ()) -> OrderEvent:
        o.orig_clordid, o.clordid = o.clordid, self._id("C")
        o.pending_request = True
        f = [(41, o.orig_clordid), (37, o.order_id), (11, o.clordid)] + self._instrument(o)
        f += [(60, self.clock()), (38, str(o.qty))] + list(extra)
        return OrderEvent(msg_type, f, f"{msg_type}:{o.clordid}", o.sub_id)

    def _cancel_request(self, o: _Order) -> OrderEvent:
        return self._request(o, "F")

    def _replace_request(self, o: _Order) -> OrderEvent:
        o.qty = max(o.cum + 1, o.qty + self.rng.randint(-o.qty // 2, 10))
        o.price = self._price(o.symbol)
        extra = ([] if self.v44 else [(21, "1")]) + [(40, "2"), (44, str(o.price))]
        return self._request(o, "G", extra)

    def _cancel_ack(self, o: _Order, text: str | None = None) -> OrderEvent:
        o.pending_request, o.status = False, "4"
        return self._report(o, "4", extra=[(58, text)] if text else ())

    def _replace_ack(self, o: _Order) -> OrderEvent:
        # OrdStatus 5 (Replaced) is FIX 4.2's; FIX 4.4 reports the order's own status
        o.pending_request, o.status = False, "0" if self.v44 else "5"
        ev = self._report(o, "5")
        o.status = "0"
        return ev

    def _cancel_reject(self, o: _Order) -> OrderEvent:
        """The cancel request came after the order was filled: 35=9, 102=0 too late."""
        o.pending_request = False
        # OrderCancelReject carries no instrument in FIX 4.2/4.4, only the Account
        f = [(37, o.order_id), (11, o.clordid), (41, o.orig_clordid or ""), (39, o.status),
             (434, "1"), (102, "0"), (58, "too late to cancel"), (1, o.account)]
        return OrderEvent("9", f, f"9:{o.clordid}", o.sub_id)

    def _trade_cancel(self, o: _Order) -> OrderEvent:
        """Trade bust (150=H): the last fill is undone; ExecRefID (19) names it."""
        assert o.last_fill is not None
        ref, qty, price = o.last_fill
        o.cum -= qty
        o.notional -= price * qty
        o.status = "1" if o.cum else "0"
        ev = self._report(o, "H", last_qty=qty, last_px=price, extra=[(19, ref)], trans_type="1")
        o.status = "4"          # busted orders are done here
        return ev

    def _trade_correct(self, o: _Order) -> OrderEvent:
        """Trade correction (150=G): the last fill's price changes by a tick or two."""
        assert o.last_fill is not None
        ref, qty, price = o.last_fill
        _, tick = _PRICES.get(o.symbol[:2], ("100.00", "0.01"))
        new_px = price + Decimal(tick) * self.rng.choice((-2, -1, 1, 2))
        o.notional += (new_px - price) * qty
        return self._report(o, "G", last_qty=qty, last_px=new_px, extra=[(19, ref)],
                            trans_type="2")

    def _mass_cancel(self) -> OrderEvent | None:
        """OrderMassActionReport (BZ) cancelling an account's open orders in one symbol and side;
        the affected orders' remaining steps become one 150=4 acknowledgment each."""
        anchor, _ = self._open[self.rng.choice(list(self._open))]
        affected = [(o, steps) for o, steps in self._open.values()
                    if (o.account, o.symbol, o.side) == (anchor.account, anchor.symbol, anchor.side)
                    and o.acked and not o.pending_request and o.leaves > 0]
        if not affected:
            return None
        report_id = self._id("M")

        def mass_cancel_ack(o: _Order) -> OrderEvent:
            return self._cancel_ack(o, f"mass cancel {report_id}")

        for o, steps in affected:
            o.pending_request = True        # its cancel is on the way: no second mass action
            steps.clear()
            steps.append(mass_cancel_ack)
        f = [(1369, report_id), (1373, "3"), (1374, "1"), (1375, "1"),
             (533, str(len(affected))), (60, self.clock())] + self._instrument(anchor)
        return OrderEvent("BZ", f, f"BZ:{report_id}", anchor.sub_id)

    # -- iteration --------------------------------------------------------------------------------

    def __iter__(self) -> OrderFlow:
        return self

    def __next__(self) -> OrderEvent:
        rng = self.rng
        if not self._open or (len(self._open) < self.max_open and rng.random() < self.p_new):
            return self._new_order()
        if not self.v44 and rng.random() < self.p_mass:   # BZ is the venue's, on FIX 4.2
            ev = self._mass_cancel()
            if ev is not None:
                return ev
        order_id = rng.choice(list(self._open))
        o, steps = self._open[order_id]
        step = steps.popleft()
        self._again = False
        ev = step(o)
        if self._again:             # a step that repeats (partial fills)
            steps.appendleft(step)
        if not steps:
            del self._open[order_id]
        return ev

    @property
    def open_orders(self) -> int:
        return len(self._open)
