"""Routing: categories by MsgType/ExecType, compiled filters, the immutable routing table."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dcgateway import routing
from dcgateway.config import Filters, GroupDef, IncludeExclude, SessionDef, load_config
from dcgateway.errors import ConfigError
from dcgateway.fix import codec
from dcgateway.fix.codec import RawMessage
from dcgateway.routing import Route, RoutingTable, category, compile_fields, compile_filter

#: The operator contract's gateway.yaml and groups.yaml, as the venue hands them to users.
CONTRACT = Path(__file__).resolve().parent / "contract"
HEADER = [(49, "ABC123N"), (56, "DCGW"), (34, 7), (50, "TRADER1"), (52, "20261124-20:10:11.123")]
FILL = [(37, "ORD1"), (17, "EX1"), (150, "F"), (39, "2"), (1, "ACCT01"), (55, "ESZ6"),
        (207, "XCME"), (54, 1), (32, 10), (31, "4512.25")]


def make(msg_type: str = "8", body=FILL, begin: str = "FIX.4.2", header=HEADER,
         **fields: object) -> RawMessage:
    """A decoded message; ``fields`` (tag_NN=value; None drops the field) override ``body``,
    except tag_50 (SenderSubID), which overrides the header."""
    over = {int(k[4:]): v for k, v in fields.items()}
    hdr = list(header)
    if 50 in over:
        sub = over.pop(50)
        hdr = [(t, v) for t, v in hdr if t != 50] + ([(50, sub)] if sub is not None else [])
    items = [(t, over.pop(t) if t in over else v) for t, v in body] + list(over.items())
    items = [(t, v) for t, v in items if v is not None]
    (m,) = codec.Decoder().feed(codec.encode_fields(begin, msg_type, hdr, items))
    assert isinstance(m, RawMessage)
    return m


# ---------------------------------------------------------------------------------------------
# Categories
# ---------------------------------------------------------------------------------------------

TRADE_EXEC_TYPES = [("FIX.4.4", "F"), ("FIX.4.2", "1"), ("FIX.4.2", "2"), ("FIX.4.4", "1"),
                    ("FIX.4.4", "2"), ("FIX.4.2", "F"), ("FIX.4.4", "G"), ("FIX.4.4", "H"),
                    ("FIX.4.2", "G"), ("FIX.4.2", "H")]
ACK_EXEC_TYPES = list("0458C6AE3D79BI")


@pytest.mark.parametrize("begin,exec_type", TRADE_EXEC_TYPES)
def test_trades_are_executions_in_any_version(begin, exec_type):
    assert category(make("8", begin=begin, tag_150=exec_type)) == "execution"


@pytest.mark.parametrize("exec_type", ACK_EXEC_TYPES)
@pytest.mark.parametrize("begin", ["FIX.4.2", "FIX.4.4"])
def test_non_trade_execution_reports_are_acknowledgments(begin, exec_type):
    assert category(make("8", begin=begin, tag_150=exec_type, tag_32=None)) == "acknowledgment"


@pytest.mark.parametrize("exec_type", ["1", "2"])
def test_a_fix42_status_report_is_an_acknowledgment_whatever_its_exec_type(exec_type):
    """ExecTransType 3 (Status) restates an order that has traded: a clearing firm taking
    fills only must not book it again (FIX 4.4 says the same with ExecType I)."""
    assert category(make("8", tag_150=exec_type, tag_20="3")) == "acknowledgment"
    assert category(make("8", tag_150=exec_type, tag_20="0")) == "execution"
    assert category(make("8", tag_150=exec_type, tag_20="1")) == "execution"   # a bust


def test_unknown_exec_type_is_an_acknowledgment():
    assert category(make("8", tag_150="Z")) == "acknowledgment"


@pytest.mark.parametrize("last_qty,expected", [(10, "execution"), ("0.5", "execution"),
                                               (0, "acknowledgment"), ("0.0", "acknowledgment"),
                                               (None, "acknowledgment"),
                                               ("x", "acknowledgment")])
def test_execution_report_without_exec_type_is_judged_by_last_qty(last_qty, expected):
    assert category(make("8", tag_150=None, tag_32=last_qty)) == expected


@pytest.mark.parametrize("msg_type,expected", [
    ("9", "acknowledgment"),
    ("D", "order"), ("F", "order"), ("G", "order"), ("AB", "order"), ("AC", "order"),
    ("s", "order"), ("t", "order"), ("u", "order"), ("q", "order"), ("CA", "order"),
    ("BZ", "mass_action"), ("r", "mass_action"),
    ("3", "reject"), ("j", "reject"),
])
def test_category_by_msg_type(msg_type, expected):
    assert category(make(msg_type, body=[(11, "C1"), (150, "F")])) == expected


@pytest.mark.parametrize("msg_type", ["0", "1", "2", "4", "5", "A", "n", "H", "AF", "V", "W",
                                      "ZZ", "U1"])
def test_admin_and_unknown_types_are_not_copied(msg_type):
    assert category(make(msg_type, body=[(150, "F")])) is None


def test_category_table_is_a_dict_covering_every_category():
    assert set(routing.CATEGORY_BY_MSG_TYPE.values()) | {"execution"} == set(routing.CATEGORIES)


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------

PREDICATES = [("account", 1, "ACCT01", "ACCT02"), ("symbol", 55, "ESZ6", "GEZ6"),
              ("security_exchange", 207, "XCME", "XCBT"), ("side", 54, "1", "2"),
              ("sender_sub_id", 50, "TRADER1", "TRADER2")]
ALL = frozenset(routing.CATEGORIES)


def _filters(name: str, cond: IncludeExclude, categories=ALL) -> Filters:
    return Filters(categories=frozenset(categories), **{name: cond})


def _with(tag: int, value):
    return make("8", **{f"tag_{tag}": value})


@pytest.mark.parametrize("name,tag,value,other", PREDICATES)
def test_include(name, tag, value, other):
    f = compile_filter(_filters(name, IncludeExclude(frozenset({value}))))
    assert f(_with(tag, value), "execution")
    assert not f(_with(tag, other), "execution")
    assert not f(_with(tag, None), "execution"), "include: an absent value does not match"


@pytest.mark.parametrize("name,tag,value,other", PREDICATES)
def test_exclude(name, tag, value, other):
    f = compile_filter(_filters(name, IncludeExclude(None, frozenset({other}))))
    assert f(_with(tag, value), "execution")
    assert not f(_with(tag, other), "execution")
    assert f(_with(tag, None), "execution"), "exclude: an absent value matches"


@pytest.mark.parametrize("name,tag,value,other", PREDICATES)
def test_include_and_exclude(name, tag, value, other):
    cond = IncludeExclude(frozenset({value, other}), frozenset({other}))
    f = compile_filter(_filters(name, cond))
    assert f(_with(tag, value), "execution")
    assert not f(_with(tag, other), "execution")       # included but excluded
    assert not f(_with(tag, "ELSE"), "execution")      # not included
    assert not f(_with(tag, None), "execution")


def test_categories_only():
    f = compile_filter(Filters(categories=frozenset({"execution", "order"})))
    m = make("8")
    assert f(m, "execution") and f(m, "order")
    assert not f(m, "acknowledgment") and not f(m, "reject") and not f(m, "mass_action")
    assert compile_fields(Filters(categories=ALL)) is None


def test_a_cross_order_meets_a_condition_when_one_of_its_sides_does():
    """A NewOrderCross (35=s) carries an account (1) and a side (54) per side: a firm clearing
    either side's account gets it whichever side comes first; an exclude drops it only when
    every side is excluded."""
    def cross(first: tuple[str, str], second: tuple[str, str]) -> RawMessage:
        body = [(548, "X1"), (549, 1), (552, 2)]
        for side, account in (first, second):
            body += [(54, side), (11, "C" + side), (1, account), (38, 5)]
        body += [(55, "ESZ6"), (40, 2), (44, "4500"), (60, "20261124-10:00:00")]
        return make("s", body=body, begin="FIX.4.4")
    buy_first, sell_first = cross(("1", "ACCT09"), ("2", "ACCT01")), cross(("2", "ACCT01"),
                                                                         ("1", "ACCT09"))
    acct01 = compile_fields(Filters(categories=ALL, account=IncludeExclude(frozenset({"ACCT01"}))))
    sells = compile_fields(Filters(categories=ALL, side=IncludeExclude(frozenset({"2"}))))
    not09 = compile_fields(Filters(categories=ALL,
                                   account=IncludeExclude(None, frozenset({"ACCT09"}))))
    only09 = compile_fields(Filters(categories=ALL,
                                    account=IncludeExclude(None, frozenset({"ACCT09", "ACCT01"}))))
    for msg in (buy_first, sell_first):
        assert acct01(msg) and sells(msg) and not09(msg) and not only09(msg)
    assert not acct01(cross(("1", "ACCT09"), ("2", "ACCT07")))


def test_combined_conditions_all_must_hold():
    filters = Filters(categories=frozenset({"execution"}),
                      account=IncludeExclude(frozenset({"ACCT01"})),
                      symbol=IncludeExclude(None, frozenset({"GEZ6"})),
                      security_exchange=IncludeExclude(frozenset({"XCME"})),
                      side=IncludeExclude(frozenset({"1"})),
                      sender_sub_id=IncludeExclude(None, frozenset({"BOT"})))
    f = compile_filter(filters)
    assert f(make("8"), "execution")
    assert not f(make("8"), "acknowledgment")
    for bad in ({"tag_1": "ACCT02"}, {"tag_55": "GEZ6"}, {"tag_207": "XCBT"}, {"tag_54": 2},
                {"tag_50": "BOT"}, {"tag_1": None}):
        assert not f(make("8", **bad), "execution"), bad
    assert f(make("8", tag_50=None, tag_55=None), "execution")


def test_predicate_is_a_tuple_of_checks_with_sender_sub_id_first():
    pred = compile_fields(Filters(categories=ALL, symbol=IncludeExclude(None, frozenset({"X"})),
                                  sender_sub_id=IncludeExclude(frozenset({"A", "B"}),
                                                               frozenset({"B"}))))
    assert pred.checks == ((50, frozenset({b"A"}), frozenset()), (55, None, frozenset({b"X"})))


def test_filter_is_not_fooled_by_a_value_inside_a_data_field():
    # EncodedText (355) may hold SOH; "\x011=ACCT01" inside it is not an Account field
    body = [(150, "F"), (354, 10), (355, "x\x011=ACCT01"), (1, "ACCT99"), (55, "ESZ6")]
    f = compile_filter(_filters("account", IncludeExclude(frozenset({"ACCT01"}))))
    assert not f(make("8", body=body), "execution")


# ---------------------------------------------------------------------------------------------
# The routing table, with the contract configuration
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def contract(tmp_path):
    for name in ("gateway.yaml", "groups.yaml"):
        shutil.copy(CONTRACT / name, tmp_path / name)
    cfg = load_config(tmp_path / "gateway.yaml")
    return cfg.groups, {s.comp_id: s for s in cfg.sessions}


@pytest.fixture
def table(contract):
    return RoutingTable.build(*contract)


def targets(routes):
    return [(r.target, r.front_end) for r in routes]


def test_fill_reaches_both_targets_from_abc(table):
    routes = table.route("ABC123N", make("8"))
    assert targets(routes) == [("CLR001N", "ilink2"), ("CLRFIX44", "fix")]
    assert [r.group for r in routes] == ["CLEARCO/clearco-all-fills",
                                         "CLEARCO/clearco-everything-fix"]
    assert all(isinstance(r, Route) for r in routes)


def test_fill_from_abd_reaches_only_the_ilink2_target(table):
    assert targets(table.route("ABD123N", make("8"))) == [("CLR001N", "ilink2")]


@pytest.mark.parametrize("exec_type", ["1", "2", "G", "H"])
def test_fix42_fills_and_busts_are_routed_as_executions(table, exec_type):
    assert targets(table.route("ABD123N", make("8", tag_150=exec_type))) == [("CLR001N", "ilink2")]


def test_excluded_symbol_does_not_reach_clr001n(table):
    assert targets(table.route("ABC123N", make("8", tag_55="GEZ6"))) == [("CLRFIX44", "fix")]
    assert table.route("ABD123N", make("8", tag_55="GEZ6")) == ()


def test_account_outside_the_include_list(table):
    assert targets(table.route("ABC123N", make("8", tag_1="ACCT09"))) == [("CLRFIX44", "fix")]
    assert targets(table.route("ABC123N", make("8", tag_1="ACCT02"))) == [
        ("CLR001N", "ilink2"), ("CLRFIX44", "fix")]
    assert table.route("ABC123N", make("8", tag_1=None))[0].target == "CLRFIX44"


def test_acknowledgment_reaches_only_the_fix_target(table):
    assert targets(table.route("ABC123N", make("8", tag_150="0"))) == [("CLRFIX44", "fix")]
    assert targets(table.route("ABC123N", make("9", body=[(11, "C1")]))) == [("CLRFIX44", "fix")]
    assert table.route("ABD123N", make("8", tag_150="0")) == ()


def test_order_reaches_clrfix44_only(table):
    order = make("D", body=[(11, "C1"), (1, "ACCT01"), (55, "ESZ6"), (54, 1)])
    assert targets(table.route("ABC123N", order)) == [("CLRFIX44", "fix")]
    assert table.route("ABD123N", order) == ()


def test_mass_action_and_unknown_types_reach_nobody(table):
    assert table.route("ABC123N", make("BZ", body=[(1369, "M1")])) == ()
    assert table.route("ABC123N", make("ZZ", body=[(1, "ACCT01")])) == ()
    assert table.route("ABC123N", make("j", body=[(380, 3)])) == ()


def test_unknown_source_routes_nowhere(table):
    assert table.route("XYZ999N", make("8")) == ()
    assert table.targets_of("XYZ999N") == frozenset()


def test_introspection(table):
    assert table.sources() == frozenset({"ABC123N", "ABD123N"})
    assert table.targets() == frozenset({"CLR001N", "CLRFIX44"})
    assert table.targets_of("ABC123N") == frozenset({"CLR001N", "CLRFIX44"})
    assert table.targets_of("ABD123N") == frozenset({"CLR001N"})
    assert table.front_end_of("CLR001N") == "ilink2"
    assert table.front_end_of("CLRFIX44") == "fix"
    assert table.front_end_of("NOPE") is None
    text = table.describe()
    for word in ("CLEARCO/clearco-all-fills", "ilink2", "account in {ACCT01,ACCT02}",
                 "symbol not in {GEZ6}", "CLRFIX44 (FIX.4.4)", "ABD123N", table.version):
        assert word in text, word


def test_table_is_immutable(table):
    with pytest.raises(AttributeError):
        table.version = "x"
    with pytest.raises(AttributeError):
        table._table = {}
    with pytest.raises(AttributeError):
        del table.version


def test_version_is_stable_and_tracks_content(contract):
    groups, sessions = contract
    a = RoutingTable.build(groups, sessions)
    b = RoutingTable.build(groups, sessions)
    assert a.version == b.version
    assert RoutingTable.build(groups[:1], sessions).version != a.version
    assert RoutingTable.build((), sessions).route("ABC123N", make("8")) == ()


# ---------------------------------------------------------------------------------------------
# Hand-built groups: dedup, conflicts
# ---------------------------------------------------------------------------------------------

def session(comp_id: str, role: str, profile: str = "fix") -> SessionDef:
    begin = "FIX.4.2" if profile == "ilink2" else "FIX.4.4"
    return SessionDef(comp_id, role, "CLEARCO", profile, begin, comp_id)


SESSIONS = {s.comp_id: s for s in (session("SRC1", "source"), session("SRC2", "source"),
                                   session("T1", "target"), session("T2", "target"),
                                   session("T3", "target", "ilink2"))}


def group(name: str, front_end: str = "fix", categories=("execution",), sources=("SRC1",),
          targets=("T1",), **conds) -> GroupDef:
    return GroupDef("CLEARCO", name, front_end, Filters(frozenset(categories), **conds),
                    tuple(sources), tuple(targets))


def test_target_in_two_matching_groups_gets_one_route_named_by_the_first():
    t = RoutingTable.build([group("a"), group("b", targets=("T1", "T2"))], SESSIONS)
    routes = t.route("SRC1", make("8"))
    assert [(r.target, r.group) for r in routes] == [("T1", "CLEARCO/a"), ("T2", "CLEARCO/b")]


def test_dedup_with_field_predicates_first_matching_group_names_the_route():
    acct1 = IncludeExclude(frozenset({"ACCT01"}))
    t = RoutingTable.build([group("a", account=IncludeExclude(frozenset({"ACCTX"}))),
                            group("b", account=acct1), group("c", targets=("T1", "T2"))],
                           SESSIONS)
    routes = t.route("SRC1", make("8"))
    assert [(r.target, r.group) for r in routes] == [("T1", "CLEARCO/b"), ("T2", "CLEARCO/c")]
    routes = t.route("SRC1", make("8", tag_1="ACCTX"))
    assert [(r.target, r.group) for r in routes] == [("T1", "CLEARCO/a"), ("T2", "CLEARCO/c")]


def test_groups_of_different_categories_split_execution_reports():
    t = RoutingTable.build([group("fills", targets=("T1",)),
                            group("acks", categories=("acknowledgment",), targets=("T2",))],
                           SESSIONS)
    assert [r.target for r in t.route("SRC1", make("8"))] == ["T1"]
    assert [r.target for r in t.route("SRC1", make("8", tag_150="4"))] == ["T2"]
    assert t.route("SRC1", make("9", body=[(11, "C")]))[0].target == "T2"
    assert t.route("SRC1", make("D", body=[(11, "C")])) == ()


def test_reject_and_mass_action_categories():
    t = RoutingTable.build([group("r", categories=("reject", "mass_action"))], SESSIONS)
    for mt in ("3", "j", "r"):
        assert [r.target for r in t.route("SRC1", make(mt, body=[(58, "x")]))] == ["T1"], mt
    # 35=BZ is the venue's (iLink 2) message: a FIX 4.4 target's fix copies cannot carry it;
    # its ilink2 envelope can
    assert t.route("SRC1", make("BZ", body=[(58, "x")])) == ()
    t = RoutingTable.build([group("r", "ilink2", ("mass_action",), targets=("T3",))], SESSIONS)
    assert [r.target for r in t.route("SRC1", make("BZ", body=[(58, "x")]))] == ["T3"]
    assert t.route("SRC1", make("8")) == ()


def test_front_end_conflict_is_a_config_error_naming_target_and_groups():
    with pytest.raises(ConfigError) as exc:
        RoutingTable.build([group("a"), group("b", front_end="ilink2", targets=("T2", "T1"))],
                           SESSIONS)
    text = str(exc.value)
    assert "T1" in text and "CLEARCO/a" in text and "CLEARCO/b" in text and "T2" not in text


@pytest.mark.parametrize("sources,targets", [(("NOPE",), ("T1",)), (("SRC1",), ("NOPE",)),
                                             (("T1",), ("T2",)), (("SRC1",), ("SRC2",))])
def test_unknown_or_wrong_role_sessions_are_config_errors(sources, targets):
    with pytest.raises(ConfigError, match="NOPE|session"):
        RoutingTable.build([group("a", sources=sources, targets=targets)], SESSIONS)


def test_route_answers_are_shared_when_no_field_filter_applies():
    t = RoutingTable.build([group("a", categories=("order",))], SESSIONS)
    d1 = make("D", body=[(11, "C1")])
    d2 = make("D", body=[(11, "C2")])
    assert t.route("SRC1", d1) is t.route("SRC1", d2)


def test_groups_with_equal_filters_share_one_evaluation():
    acct = IncludeExclude(frozenset({"ACCT01"}))
    t = RoutingTable.build([group("a", account=acct, targets=("T1",)),
                            group("b", account=acct, targets=("T2", "T3"), front_end="ilink2"),
                            group("c", account=IncludeExclude(None, frozenset({"ACCT01"})),
                                  targets=("T1",))], SESSIONS | {"T3": session("T3", "target")})
    assert [(r.target, r.group) for r in t.route("SRC1", make("8"))] == [
        ("T1", "CLEARCO/a"), ("T2", "CLEARCO/b"), ("T3", "CLEARCO/b")]
    assert [(r.target, r.group) for r in t.route("SRC1", make("8", tag_1="ACCT02"))] == [
        ("T1", "CLEARCO/c")]
