"""The JSON Schemas shipped in ``scheduler/schemas`` and human messages for their errors.

The schemas are package data, read with ``importlib.resources``, so an installed
``scheduler`` validates without the source tree. jsonschema's own messages
("Additional properties are not allowed (...)", "... is not valid under any of
the given schemas") are written for schema authors; ``check`` turns each error
into one sentence naming the field and what was expected. A subschema's
``description`` is written as the noun phrase that follows "expected".
"""

from __future__ import annotations

import difflib
import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterable

import jsonschema_rs
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match

from .redact import redact_text
from .yamlsafe import escape, is_yaml11_boolean, unescape

_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}

_BOUNDS = {
    "minimum": "at least",
    "maximum": "at most",
    "exclusiveMinimum": "more than",
    "exclusiveMaximum": "less than",
}


@dataclass(frozen=True)
class SchemaIssue:
    """One schema violation: where (a JSON pointer; ``at_key`` for a key itself) and what."""

    pointer: str
    message: str
    at_key: bool = False


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """The validator of ``schemas/<name>.schema.json`` (``task`` or ``config``)."""
    text = resources.files("scheduler").joinpath("schemas", f"{name}.schema.json").read_text("utf-8")
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(_inline_refs(schema, schema.get("$defs", {})))


@functools.cache
def _verdict(name: str) -> jsonschema_rs.Draft202012Validator:
    """jsonschema-rs on the same schema: only the fast "valid" verdict, never a message.

    Checking a task with jsonschema took a quarter of the loader's time per file
    (2 s of a 10,000-file cold start); jsonschema-rs answers "valid" thirty times
    faster. It is the stricter of the two where they differ (its regular expressions
    are ECMA 262: ``\\d`` is ASCII, ``$`` is the very end), and a document it
    refuses goes to jsonschema, so jsonschema still decides every refusal.
    """
    return jsonschema_rs.Draft202012Validator(validator(name).schema)


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """The schema with each local ``$ref`` replaced by its definition.

    Following a ``$ref`` costs jsonschema more than all the other checks of a task
    together; our schemas have no recursive definitions, so inlining is exact.
    """
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    result = {k: _inline_refs(v, defs) for k, v in node.items() if k not in ("$ref", "$defs")}
    ref = node.get("$ref")
    if ref is not None:
        inlined = _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        result = {**inlined, **result}
    return result


def check(instance: Any, name: str) -> list[SchemaIssue]:
    """Every violation of schema ``name`` by ``instance``, as human messages, in document order."""
    if _verdict(name).is_valid(instance):
        return []
    issues: list[SchemaIssue] = []
    for error in validator(name).iter_errors(instance):
        for issue in _translate(error):
            if issue not in issues:
                issues.append(issue)
    return issues


def _pointer(path: Iterable[Any]) -> str:
    return "".join(f"/{escape(str(p))}" for p in path)


def field_name(pointer: str) -> str:
    """``/run/command/1`` as ``run.command[1]``, the way messages name a field."""
    name = ""
    for segment in pointer.split("/")[1:]:
        segment = unescape(segment)
        name += f"[{segment}]" if segment.isdigit() else f".{segment}" if name else segment
    return name


def show(value: Any) -> str:
    """A value as a user wrote it, kind first: ``string 'yes'``, ``a list``, ``nothing (null)``."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    # A wrong value is quoted back, and reload errors are shown to API viewers: hide a URL's secrets.
    text = repr(redact_text(value)) if isinstance(value, str) else json.dumps(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"string {text}" if isinstance(value, str) else f"number {text}"


def _expected(error: ValidationError, fallback: str) -> str:
    return error.schema.get("description") or fallback


def _translate(error: ValidationError) -> list[SchemaIssue]:
    pointer = _pointer(error.absolute_path)
    where = field_name(pointer)
    prefix = f"{where}: " if where else ""
    keyword, value, instance = error.validator, error.validator_value, error.instance

    if keyword == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        issues = []
        for key in (k for k in instance if k not in allowed):
            near = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            place = f" in {where}" if where else ""
            message = f"unknown field '{key}'{place} ({hint}allowed: {', '.join(allowed)})"
            issues.append(SchemaIssue(f"{pointer}/{escape(key)}", message, at_key=True))
        return issues
    if keyword == "required":
        return [
            SchemaIssue(pointer, _missing(key, error.schema.get("properties", {}).get(key, {}), where))
            for key in value
            if key not in instance
        ]
    if keyword in ("oneOf", "anyOf"):
        return [_alternatives(error, pointer, prefix)]
    if keyword == "const":
        return [SchemaIssue(pointer, f"{prefix}expected {value!r}, got {show(instance)}")]
    if keyword == "enum":
        choices = ", ".join(str(v) for v in value)
        return [SchemaIssue(pointer, f"{prefix}expected one of {choices}, got {show(instance)}")]
    if keyword == "type":
        types = [value] if isinstance(value, str) else value
        words = " or ".join(_TYPE_WORDS[t] for t in types)
        message = f"{prefix}expected {_expected(error, words)}, got {show(instance)}"
        if "boolean" in types and is_yaml11_boolean(instance):
            message += " (write true or false)"
        return [SchemaIssue(pointer, message)]
    if keyword == "pattern":
        return [
            SchemaIssue(pointer, f"{prefix}expected {_expected(error, 'text matching ' + value)}, got {show(instance)}")
        ]
    if keyword in _BOUNDS:
        return [SchemaIssue(pointer, f"{prefix}must be {_BOUNDS[keyword]} {value}, got {show(instance)}")]
    if keyword in ("minItems", "minLength") and value == 1:
        return [SchemaIssue(pointer, f"{prefix}must not be empty")]
    if keyword in ("minItems", "minLength"):
        unit = "items" if keyword == "minItems" else "characters"
        return [SchemaIssue(pointer, f"{prefix}must have at least {value} {unit}")]
    if keyword == "uniqueItems":
        return [SchemaIssue(pointer, f"{prefix}must not list the same value twice")]
    return [SchemaIssue(pointer, f"{prefix}{error.message}")]  # a keyword this module does not phrase yet


def _missing(key: str, schema: dict[str, Any], where: str) -> str:
    if "const" in schema:
        return f"missing {key}: add '{key}: {schema['const']}' to the document"
    place = f" in {where}" if where else ""
    return f"missing required field '{key}'{place}"


def _alternatives(error: ValidationError, pointer: str, prefix: str) -> SchemaIssue:
    """One message for a failed ``oneOf``/``anyOf``, never jsonschema's list of every branch."""
    branches = error.validator_value
    if all(set(b) == {"required"} and len(b["required"]) == 1 for b in branches):
        names = [b["required"][0] for b in branches]  # "exactly one of these keys"
        found = [n for n in names if isinstance(error.instance, dict) and n in error.instance]
        what = ", ".join(found) if found else "none"
        return SchemaIssue(pointer, f"{prefix}expected exactly one of {', '.join(names)} (found: {what})")
    # A branch that got further into the value (expectStatus: [200, 700]) knows better what is wrong.
    deepest = max(error.context, key=lambda e: len(e.absolute_path), default=None)
    if deepest is not None and len(deepest.absolute_path) > len(error.absolute_path):
        return _translate(deepest)[0]
    if "description" in error.schema:
        return SchemaIssue(pointer, f"{prefix}expected {error.schema['description']}, got {show(error.instance)}")
    relevant = best_match(error.context)
    return _translate(relevant)[0] if relevant is not None else SchemaIssue(pointer, f"{prefix}{error.message}")
