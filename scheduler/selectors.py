"""Label selectors in kubectl's syntax: ``team=data,tier!=batch,critical,!legacy``.

Terms are separated by commas and must all hold: ``key=value`` (or ``key==value``)
the label has this value; ``key!=value`` it has not (a task without the label
matches, as in kubectl); ``key`` the label is set; ``!key`` it is not. Spaces
around keys and values are ignored. Keys and values are compared as plain text
by the stores, never read as patterns or operators; they cannot contain
``, = ! ( )`` (kubectl's set-based ``key in (a,b)`` is not supported). The API
(``labelSelector``) and the CLI (``task-list -l``) share this parser, so both
refuse a bad selector with the same message; ``scheduler/api/openapi.yaml``
describes the same grammar as a pattern (a test checks that they agree).
"""

from __future__ import annotations

from .model import LabelOperator, LabelRequirement

# The whole selector: as the type filter, so that both fit aiohttp's 8 KiB request line even when
# every character takes 12 bytes (4 in UTF-8, percent-encoded).
MAX_LENGTH = 256
MAX_TERMS = 20  # each term is one condition of the store query
RESERVED = ",=!()"
# The spaces ignored around keys and values: the ones the OpenAPI pattern names. Not str.strip()'s,
# which also drops \x1c-\x1f and \x85: a client checking a selector against the document (JSON
# Schema's regular expressions, where \s has none of those) would send one the node refused.
SPACES = " \t\n\r\f\v"
SYNTAX = "expected key=value, key!=value, key or !key, separated by commas"


class SelectorError(ValueError):
    """A label selector that cannot be parsed; the message says which term and why."""


def parse_selector(text: str) -> tuple[LabelRequirement, ...]:
    """The requirements of ``text``; ``SelectorError`` when it is not a valid selector."""
    if len(text) > MAX_LENGTH:
        raise SelectorError(f"longer than {MAX_LENGTH} characters")
    terms = text.split(",")
    if len(terms) > MAX_TERMS:
        raise SelectorError(f"{len(terms)} terms, at most {MAX_TERMS}")
    return tuple(_requirement(term.strip(SPACES), number) for number, term in enumerate(terms, 1))


def _requirement(term: str, number: int) -> LabelRequirement:
    if not term:
        raise SelectorError(f"term {number} is empty ({SYNTAX})")
    if "(" in term or ")" in term:
        raise SelectorError(f"term {number} {term!r}: set-based selectors (in, notin) are not supported ({SYNTAX})")
    if term.startswith("!"):
        return LabelRequirement(_text("key", term[1:].strip(SPACES), term, number), LabelOperator.ABSENT)
    # "!=" before "==" before "=": each is looked for in the term as a whole, so "a!=b" is never "a!" = "b".
    for symbol, operator in (("!=", LabelOperator.NOT_EQUALS), ("==", LabelOperator.EQUALS), ("=", LabelOperator.EQUALS)):
        key, found, value = term.partition(symbol)
        if found:
            return LabelRequirement(
                _text("key", key.strip(SPACES), term, number), operator,
                _text("value", value.strip(SPACES), term, number),
            )
    return LabelRequirement(_text("key", term, term, number), LabelOperator.EXISTS)


def _text(what: str, text: str, term: str, number: int) -> str:
    where = f"term {number} {term!r}"
    if what == "key" and not text:
        raise SelectorError(f"{where}: the label key is empty ({SYNTAX})")
    reserved = sorted({c for c in text if c in RESERVED})
    if reserved:
        raise SelectorError(f"{where}: the label {what} {text!r} contains {' '.join(reserved)} ({SYNTAX})")
    return text
