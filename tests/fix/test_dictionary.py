"""Data dictionaries: the shipped FIX 4.2 / 4.4 ones, a venue's own, and errors that say what is
wrong and where."""

from __future__ import annotations

from importlib import resources

import pytest

from dcgateway.errors import ConfigError
from dcgateway.fix import codec
from dcgateway.fix.codec import Decoder
from dcgateway.fix.dictionary import (
    DataDictionary,
    DictionaryCache,
    DictionaryError,
    load_dictionary,
    load_shipped,
    parse_dictionary,
)
from dcgateway.fix.validate import Validator

FIX42 = load_dictionary("FIX.4.2")
FIX44 = load_dictionary("FIX.4.4")


def test_shipped_files_are_package_data_with_their_licence():
    spec = resources.files("dcgateway.fix").joinpath("spec")
    for name in ("FIX42.xml", "FIX44.xml", "LICENSE-quickfix.txt", "README.md"):
        assert spec.joinpath(name).is_file(), name
    assert "QuickFIX Software License" in spec.joinpath("LICENSE-quickfix.txt").read_text()


def test_fix42_loads():
    d = FIX42
    assert d.begin_string == b"FIX.4.2"
    assert {b"0", b"1", b"2", b"3", b"4", b"5", b"A", b"8", b"9", b"D", b"F", b"G"} <= set(d.messages)
    er = d.messages[b"8"]
    assert er.name == "ExecutionReport" and er.category == "app"
    assert d.messages[b"A"].category == "admin"
    assert er.body.required == {37, 17, 20, 150, 39, 55, 54, 151, 14, 6}
    assert er.body.required_in_order[:4] == (37, 17, 20, 150)
    g = er.body.groups[382]                       # NoContraBrokers
    assert g.delimiter == 375 and g.entry.members == (375, 337, 437, 438)
    assert {375, 337} <= er.body.tags and 382 in er.body.index
    assert d.header.required == {8, 9, 35, 49, 56, 34, 52}
    assert d.trailer.members == (93, 89, 10) and d.trailer.required == {10}
    side = d.fields[54]
    assert (side.name, side.type) == ("Side", "CHAR") and {b"1", b"2"} <= side.values
    assert d.fields[38].type == "QTY" and d.fields[38].values == frozenset()
    assert d.field_by_name("ExecTransType").tag == 20 and d.field_by_name("Nope") is None


def test_fix44_flattens_components_and_nests_groups():
    d = FIX44
    assert d.begin_string == b"FIX.4.4"
    er = d.messages[b"8"]
    assert 20 not in er.body.tags                 # ExecTransType is gone in 4.4
    assert 55 in er.body.index                    # Symbol, from the Instrument component
    assert er.body.required == {37, 17, 150, 39, 54, 151, 14, 6}
    parties = er.body.groups[453]                 # Parties component -> NoPartyIDs group
    assert parties.delimiter == 448 and parties.entry.members == (448, 447, 452, 802)
    sub = parties.entry.groups[802]               # PtysSubGrp, nested inside each party
    assert sub.delimiter == 523 and {523, 803} <= er.body.tags
    assert d.header.groups[627].delimiter == 628  # NoHops in the 4.4 standard header
    # a required component's optional fields stay optional; its required ones become required
    nos = d.messages[b"D"].body
    assert 38 in nos.index and 38 not in nos.required      # OrderQtyData is required='Y'
    assert 60 in nos.required


def test_group_with_required_member():
    d = FIX44
    tcr = d.messages[b"AE"].body                  # TradeCaptureReport: NoSides(552)
    sides = tcr.groups[552]
    assert sides.delimiter == 54 and 37 in sides.entry.required


def test_shipped_loading_is_cached_per_process_and_per_cache():
    assert load_shipped("FIX.4.4") is load_shipped("FIX.4.4") is FIX44
    cache = DictionaryCache()
    assert cache.get("FIX.4.2") is cache.get("FIX.4.2")
    with pytest.raises(DictionaryError, match="no shipped data dictionary"):
        load_shipped("FIX.9.9")


# ---------------------------------------------------------------------------------------------
# A venue's own dictionary
# ---------------------------------------------------------------------------------------------

VENUE = b"""<fix type='FIX' major='4' minor='2' servicepack='0'>
 <header>
  <field name='BeginString' required='Y'/><field name='BodyLength' required='Y'/>
  <field name='MsgType' required='Y'/><field name='SenderCompID' required='Y'/>
  <field name='TargetCompID' required='Y'/><field name='MsgSeqNum' required='Y'/>
  <field name='SendingTime' required='Y'/>
 </header>
 <trailer><field name='CheckSum' required='Y'/></trailer>
 <messages>
  <message name='ExecutionReport' msgtype='8' msgcat='app'>
   <field name='OrderID' required='Y'/>
   <component name='Fill' required='Y'/>
   <field name='CtiCode' required='N'/>
   <group name='NoFees' required='N'>
    <field name='FeeType' required='Y'/>
    <field name='FeeAmt' required='Y'/>
    <group name='NoFeeNotes' required='N'><field name='FeeNote' required='Y'/></group>
   </group>
  </message>
 </messages>
 <components>
  <component name='Fill'>
   <field name='LastPx' required='Y'/><field name='LastShares' required='N'/>
  </component>
 </components>
 <fields>
  <field number='8' name='BeginString' type='STRING'/>
  <field number='9' name='BodyLength' type='LENGTH'/>
  <field number='10' name='CheckSum' type='STRING'/>
  <field number='34' name='MsgSeqNum' type='SEQNUM'/>
  <field number='35' name='MsgType' type='STRING'>
   <value enum='8' description='EXECUTION_REPORT'/><value enum='D' description='ORDER'/>
  </field>
  <field number='49' name='SenderCompID' type='STRING'/>
  <field number='56' name='TargetCompID' type='STRING'/>
  <field number='52' name='SendingTime' type='UTCTIMESTAMP'/>
  <field number='37' name='OrderID' type='STRING'/>
  <field number='31' name='LastPx' type='PRICE'/>
  <field number='32' name='LastShares' type='QTY'/>
  <field number='9702' name='CtiCode' type='CHAR'>
   <value enum='1' description='OWN'/><value enum='2' description='HOUSE'/>
  </field>
  <field number='9800' name='NoFees' type='NUMINGROUP'/>
  <field number='9801' name='FeeType' type='INT'/>
  <field number='9802' name='FeeAmt' type='AMT'/>
  <field number='9803' name='NoFeeNotes' type='NUMINGROUP'/>
  <field number='9804' name='FeeNote' type='STRING'/>
 </fields>
</fix>
"""


def _venue(tmp_path) -> DataDictionary:
    path = tmp_path / "VENUE42.xml"
    path.write_bytes(VENUE)
    return load_dictionary(path)


def _msg(body, begin=b"FIX.4.2", mt=b"8"):
    header = [(49, "SRC"), (56, "DCGW"), (34, 1), (52, "20261124-20:10:11.123")]
    [m] = Decoder().feed(codec.encode_fields(begin, mt, header, body))
    return m


def test_venue_dictionary_with_custom_tags(tmp_path):
    d = _venue(tmp_path)
    assert d.source.endswith("VENUE42.xml") and d.begin_string == b"FIX.4.2"
    body = d.messages[b"8"].body
    assert body.members == (37, 31, 32, 9702, 9800)
    assert body.required == {37, 31}               # component Fill is required='Y'
    fees = body.groups[9800]
    assert fees.delimiter == 9801 and fees.entry.groups[9803].delimiter == 9804
    v = Validator(d)
    ok = [(37, "O1"), (31, "4512.25"), (9702, "1"),
          (9800, 2), (9801, 1), (9802, "0.5"), (9803, 1), (9804, "x"), (9801, 2), (9802, "1")]
    assert v.validate(_msg(ok)) is None
    bad = v.validate(_msg([(37, "O1"), (31, "1"), (9702, "3")]))
    assert (bad.reason, bad.tag) == (5, 9702)
    missing = v.validate(_msg([(37, "O1"), (31, "1"), (9800, 1), (9801, 1)]))
    assert (missing.reason, missing.tag) == (1, 9802)     # required inside the group entry


def test_venue_dictionary_names_a_fix_msg_type_it_lacks(tmp_path):
    v = Validator(_venue(tmp_path))
    p = v.validate(_msg([(11, "C1")], mt=b"D"))
    assert (p.reason, p.tag) == (11, 35)
    assert "'D' is not defined in this FIX.4.2 data dictionary" in p.text
    p = v.validate(_msg([(11, "C1")], mt=b"ZZ"))
    assert p.reason == 11 and "'ZZ' is not a FIX.4.2 MsgType" in p.text


def test_dictionary_cache_rereads_nothing_for_the_same_path(tmp_path):
    path = tmp_path / "VENUE42.xml"
    path.write_bytes(VENUE)
    cache = DictionaryCache()
    assert cache.get(path) is cache.get(str(path))


# ---------------------------------------------------------------------------------------------
# Errors: a ConfigError naming the file and what is wrong
# ---------------------------------------------------------------------------------------------

def _broken(tmp_path, text: bytes) -> str:
    path = tmp_path / "broken.xml"
    path.write_bytes(text)
    with pytest.raises(DictionaryError) as info:
        load_dictionary(path)
    assert isinstance(info.value, ConfigError)
    msg = str(info.value)
    assert str(path) in msg
    return msg


def test_error_not_xml(tmp_path):
    msg = _broken(tmp_path, b"8=FIX.4.2\x019=5\x01")
    assert "broken.xml:1:" in msg and "not well-formed XML" in msg


def test_error_not_a_dictionary(tmp_path):
    assert "root element is not <fix>" in _broken(tmp_path, b"<html><body/></html>")


def test_error_missing_section(tmp_path):
    assert "no <messages> element" in _broken(
        tmp_path, VENUE.replace(b"<messages>", b"<x>").replace(b"</messages>", b"</x>"))


def test_error_unknown_component(tmp_path):
    msg = _broken(tmp_path, VENUE.replace(b"<component name='Fill' required='Y'/>",
                                          b"<component name='Fil' required='Y'/>"))
    assert "unknown component 'Fil'" in msg
    assert "<message name='ExecutionReport' msgtype='8'>" in msg


def test_error_unknown_field(tmp_path):
    msg = _broken(tmp_path, VENUE.replace(b"<field name='CtiCode' required='N'/>",
                                          b"<field name='CtiCod' required='N'/>"))
    assert "unknown field 'CtiCod'" in msg


def test_error_bad_number(tmp_path):
    msg = _broken(tmp_path, VENUE.replace(b"number='9702'", b"number='97x2'"))
    assert "bad number '97x2'" in msg and "<field name='CtiCode'" in msg


def test_error_duplicate_field(tmp_path):
    assert "field defined twice" in _broken(
        tmp_path, VENUE.replace(b"number='9804'", b"number='9803'"))


def test_error_component_cycle(tmp_path):
    msg = _broken(tmp_path, VENUE.replace(b"<field name='LastShares' required='N'/>",
                                          b"<component name='Fill' required='N'/>"))
    assert "includes itself (Fill -> Fill)" in msg


def test_error_bad_version(tmp_path):
    assert "numeric major and minor" in _broken(tmp_path, VENUE.replace(b"minor='2'", b"minor='x'"))


def test_error_empty_group(tmp_path):
    msg = _broken(tmp_path, VENUE.replace(
        b"<group name='NoFeeNotes' required='N'><field name='FeeNote' required='Y'/></group>",
        b"<group name='NoFeeNotes' required='N'></group>"))
    assert "no fields" in msg and "<group name='NoFeeNotes'>" in msg


def test_error_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the data dictionary"):
        load_dictionary(tmp_path / "nope.xml")


def test_parse_dictionary_names_its_source():
    with pytest.raises(DictionaryError, match="^CME-iLink: "):
        parse_dictionary(b"<fix/>", "CME-iLink")
