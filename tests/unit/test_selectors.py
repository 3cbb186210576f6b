"""Label selectors: kubectl's syntax parsed into requirements, and the OpenAPI pattern that says the same."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.api.app import load_openapi
from scheduler.model import LabelOperator as Op
from scheduler.model import LabelRequirement as Req
from scheduler.selectors import SelectorError, parse_selector

VALID = [
    ("team=data", [Req("team", Op.EQUALS, "data")]),
    # What the API's fuzzing sent: only the six spaces of the document's pattern are stripped.
    ("\n\t\t\n\t\x1e", [Req("\x1e", Op.EXISTS)]),
    ("team==data", [Req("team", Op.EQUALS, "data")]),
    ("tier!=batch", [Req("tier", Op.NOT_EQUALS, "batch")]),
    ("critical", [Req("critical", Op.EXISTS)]),
    ("!legacy", [Req("legacy", Op.ABSENT)]),
    (" team = data , ! legacy ", [Req("team", Op.EQUALS, "data"), Req("legacy", Op.ABSENT)]),
    ("tier=", [Req("tier", Op.EQUALS, "")]),
    ("tier!=", [Req("tier", Op.NOT_EQUALS, "")]),
    ("app.kubernetes.io/name=crm", [Req("app.kubernetes.io/name", Op.EQUALS, "crm")]),
    ("$where=1", [Req("$where", Op.EQUALS, "1")]),
    ("owner=Data Team", [Req("owner", Op.EQUALS, "Data Team")]),
    ("a'b=%", [Req("a'b", Op.EQUALS, "%")]),
    (",".join(f"k{i}" for i in range(20)), [Req(f"k{i}", Op.EXISTS) for i in range(20)]),
]

INVALID = [
    ("", "term 1 is empty"),
    ("team=data,", "term 2 is empty"),
    ("a,,b", "term 2 is empty"),
    ("=data", "term 1 '=data': the label key is empty"),
    ("!", "term 1 '!': the label key is empty"),
    ("!=x", "term 1 '!=x': the label key '=x' contains ="),
    ("a=b=c", "term 1 'a=b=c': the label value 'b=c' contains ="),
    ("a===b", "the label value '=b' contains ="),
    ("a!==b", "the label value '=b' contains ="),
    ("a=!b", "the label value '!b' contains !"),
    ("!a=b", "term 1 '!a=b': the label key 'a=b' contains ="),
    ("a!b", "the label key 'a!b' contains !"),
    ("tier in (a,b)", "term 1 'tier in (a': set-based selectors (in, notin) are not supported"),
    ("tier notin (a)", "set-based selectors (in, notin) are not supported"),
    (",".join(f"k{i}" for i in range(21)), "21 terms, at most 20"),
    ("k=" + "v" * 255, "longer than 256 characters"),
]

PATTERN = re.compile(
    next(p for p in load_openapi()["paths"]["/cxs/tasks"]["get"]["parameters"] if p["name"] == "labelSelector")[
        "schema"
    ]["pattern"]
)


@pytest.mark.parametrize(("text", "requirements"), VALID, ids=[text for text, _ in VALID])
def test_valid_selectors(text, requirements):
    assert list(parse_selector(text)) == requirements
    assert PATTERN.search(text), "the OpenAPI pattern refuses a selector the node accepts"


@pytest.mark.parametrize(("text", "message"), INVALID, ids=[text[:30] for text, _ in INVALID])
def test_invalid_selectors_say_which_term_and_why(text, message):
    with pytest.raises(SelectorError, match=re.escape(message)):
        parse_selector(text)
    if len(text) <= 256:  # longer ones are refused by the document's maxLength
        assert not PATTERN.search(text), "the OpenAPI pattern accepts a selector the node refuses"


@settings(max_examples=2000, deadline=None, database=None)
# With characters Python's str.strip() and \s take for spaces and JSON Schema's \s does not (and one the other way).
@given(st.text(alphabet="ab =!,()\t\x1e\x85\ufeff", max_size=24))
def test_the_openapi_pattern_accepts_what_the_parser_accepts(text):
    try:
        parse_selector(text)
        accepted = True
    except SelectorError:
        accepted = False
    assert bool(PATTERN.search(text)) == accepted
