"""The wizard's filter field: values typed comma-separated, and a group's values written back
into the field so that editing a group unchanged leaves it unchanged."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dcgateway.portal.wizard import split_values, values_text

# a filter value as groups.yaml takes it: 1-128 characters, no control characters
VALUE = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=128)


@given(st.lists(VALUE, max_size=6))
def test_values_written_into_the_field_read_back_the_same(values):
    assert split_values(values_text(values)) == values


@pytest.mark.parametrize("text, values", [
    ("ACC01, ACC02", ["ACC01", "ACC02"]),
    ("A , B,,\nC", ["A", "B", "C"]),                   # spaces around, empty parts, lines
    ('"ACC,01", ACC02', ["ACC,01", "ACC02"]),
    ('"say ""hi""" , x', ['say "hi"', "x"]),
    ('" pad "', [" pad "]),
    ("", []),
])
def test_what_a_user_types(text, values):
    assert split_values(text) == values


@pytest.mark.parametrize("text, problem", [
    ('"ACC,01', "not closed"),
    ('"A"B, C', "a comma is expected"),
])
def test_a_quote_left_open_or_text_after_one_is_refused_with_the_reason(text, problem):
    with pytest.raises(ValueError, match=problem):
        split_values(text)
