"""Safe YAML for task files: plain data only, located errors, bounded work.

PyYAML's loaders construct objects while they parse, keep the last of two
duplicate keys without a word, follow YAML 1.1 (``on`` and ``yes`` are booleans,
timestamps become datetimes) and expand aliases without limit. This module
composes the node graph first (libyaml's parser when available, the pure Python
one otherwise), checks it, and only then builds plain data from it:

- implicit types follow the YAML 1.2 core schema: ``yes``/``on`` stay strings and
  timestamps stay strings (the spec parses ``at`` itself);
- any tag other than the core ones (``!!python/object``, ``!!binary``, local
  ``!tags``...) is an issue naming the tag; nothing is ever constructed from it;
- duplicate mapping keys are issues giving both lines;
- every document is refused past ``MAX_NODES`` nodes once aliases are expanded,
  or ``MAX_DEPTH`` levels of nesting, while it is being composed: a "billion
  laughs" file stops after a few thousand nodes, in bounded memory.

With libyaml, a text is first composed by libyaml's own composer, which never
expands aliases; only a text that uses aliases, crosses a limit or holds an
error goes through the bounded composer (see ``_parse_plain``).

Lines and columns are 1-based. ``locate`` maps a JSON pointer back to a position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

MAX_FILE_BYTES = 1 << 20  # 1 MiB: the loader refuses larger files before parsing
MAX_NODES = 10_000  # per document, counting every alias as the nodes it expands to
MAX_DEPTH = 64  # nesting levels per document, aliases expanded

CORE = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (CORE + t for t in ("str", "int", "float", "bool", "null"))
MAP, SEQ, TIMESTAMP = CORE + "map", CORE + "seq", CORE + "timestamp"
SCALAR_TAGS = frozenset({STR, INT, FLOAT, BOOL, NULL, TIMESTAMP})

# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution).
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_PATTERNS = {NULL: _NULL, BOOL: _BOOL, INT: _INT, FLOAT: _FLOAT}
_YAML11_BOOLEANS = frozenset({"yes", "no", "on", "off", "y", "n"})


@dataclass(frozen=True)
class Issue:
    """A problem found in the YAML itself, at a 1-based line and column."""

    line: int
    col: int
    message: str
    pointer: str = ""


@dataclass(frozen=True)
class Document:
    """One YAML document: its node tree and, when it has no issues, its data."""

    root: Node
    data: Any
    issues: tuple[Issue, ...]

    @property
    def line(self) -> int:
        return self.root.start_mark.line + 1

    @property
    def empty(self) -> bool:
        """A document holding nothing, such as the one after a trailing ``---``."""
        return isinstance(self.root, ScalarNode) and self.root.tag == NULL


@dataclass(frozen=True)
class Parsed:
    """The documents of a text, and the issue that stopped parsing, if any."""

    documents: tuple[Document, ...]
    issues: tuple[Issue, ...]


class _Refused(Exception):
    def __init__(self, mark: yaml.Mark, message: str) -> None:
        super().__init__(message)
        self.issue = Issue(mark.line + 1, mark.column + 1, message)


class CoreResolver(BaseResolver):
    """Implicit tags of the YAML 1.2 core schema, nothing else."""


# The characters each pattern can start with ("" for the empty value): PyYAML tries
# only the patterns filed under a scalar's first character, where patterns filed
# under None would be tried on every scalar (four regular expressions per name,
# command and path). Int before float: "10" is an int.
_FIRST_CHARS = {NULL: ["~", "n", "N", ""], BOOL: list("tTfF"), INT: list("-+0123456789"), FLOAT: list("-+.0123456789")}
for _tag in (NULL, BOOL, INT, FLOAT):
    CoreResolver.add_implicit_resolver(_tag, _PATTERNS[_tag], _FIRST_CHARS[_tag])


class _BoundedComposer(Composer, CoreResolver):
    """PyYAML's composer, counting expanded nodes and depth as it goes. Subclasses add a parser."""

    def __init__(self) -> None:
        Composer.__init__(self)
        CoreResolver.__init__(self)
        self._reset()

    def _reset(self) -> None:
        self._expanded = 0
        self._depth = 0
        # Per finished node (by id, alive as long as the document): expanded size and height.
        self._sizes: dict[int, int] = {}
        self._heights: dict[int, int] = {}

    def compose_document(self) -> Node:
        self._reset()
        return super().compose_document()

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                if id(target) not in self._sizes:
                    raise _Refused(event.start_mark, f"alias *{event.anchor} refers to a node that contains it")
                self._grow(self._sizes[id(target)], self._heights[id(target)], event.start_mark)
            return super().compose_node(parent, index)  # consumes the alias (or reports it undefined)
        start = self._expanded
        self._grow(1, 1, self.peek_event().start_mark)
        self._depth += 1
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._sizes[id(node)] = self._expanded - start
        self._heights[id(node)] = 1 + max((self._heights[id(c)] for c in _children(node)), default=0)
        return node

    def _grow(self, nodes: int, height: int, mark: yaml.Mark) -> None:
        self._expanded += nodes
        if self._expanded > MAX_NODES:
            raise _Refused(mark, f"document too large: more than {MAX_NODES} nodes once aliases are expanded")
        if self._depth + height > MAX_DEPTH:
            raise _Refused(mark, f"document nested too deeply: more than {MAX_DEPTH} levels")


class _PythonComposer(_BoundedComposer, Reader, Scanner, Parser):
    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        _BoundedComposer.__init__(self)


COMPOSERS: dict[str, type[_BoundedComposer]] = {"python": _PythonComposer}
_PLAIN_COMPOSER: type | None = None  # libyaml's composer, for ``_parse_plain``
try:
    from yaml._yaml import CParser
except ImportError:  # PyYAML built without libyaml: same results, about five times slower
    pass
else:

    class _LibyamlComposer(_BoundedComposer, CParser):
        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            _BoundedComposer.__init__(self)

    class _PlainComposer(CParser, CoreResolver):
        """libyaml's own composer (in C) with our resolver."""

        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            CoreResolver.__init__(self)

    COMPOSERS["libyaml"] = _LibyamlComposer
    _PLAIN_COMPOSER = _PlainComposer
DEFAULT_PARSER = "libyaml" if "libyaml" in COMPOSERS else "python"


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return node.value
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def parse(text: str, parser: str = DEFAULT_PARSER) -> Parsed:
    """Compose and check every document of ``text``; never raises for bad input.

    ``parser`` is ``libyaml`` (the default when PyYAML has it) or ``python``.
    """
    if parser == "libyaml":
        plain = _parse_plain(text)
        if plain is not None:
            return plain
    return _parse_bounded(text, parser)


def _parse_plain(text: str) -> Parsed | None:
    """The fast path for the common file: what ``_parse_bounded`` gives, or None to let it decide.

    libyaml's composer runs in C, four times faster than the bounded composer
    (a third of the loader's time per file was composing). It is safe to run
    on any input: it shares aliased nodes instead of expanding them, so its
    work and memory follow the size of the text, and libyaml refuses nesting
    past 1,000 levels. Its trees are the bounded composer's (the same events
    and resolver) as long as no alias is used and no limit is crossed; a text
    with an alias, over a limit or with any error goes the bounded way, which
    locates and words every refusal.
    """
    if _PLAIN_COMPOSER is None:
        return None
    documents: list[Document] = []
    composer = None
    try:
        composer = _PLAIN_COMPOSER(text)
        while composer.check_node():
            root = composer.get_node()
            if not _plain_tree(root):
                return None
            found: list[Issue] = []
            data = _Builder(found).build(root, "")
            documents.append(Document(root, None if found else data, tuple(found)))
    except yaml.YAMLError:
        return None
    finally:
        if composer is not None:
            composer.dispose()
    return Parsed(tuple(documents), ())


def _plain_tree(root: Node) -> bool:
    """A tree (no node reached twice: no alias) within ``MAX_NODES`` and ``MAX_DEPTH``."""
    seen: set[int] = set()
    level: list[Node] = [root]
    for _ in range(MAX_DEPTH):  # one nesting level at a time
        below: list[Node] = []
        for node in level:
            if id(node) in seen:
                return False
            seen.add(id(node))
            if isinstance(node, MappingNode):
                for pair in node.value:
                    below += pair
            elif isinstance(node, SequenceNode):
                below += node.value
        if not below:
            return len(seen) <= MAX_NODES
        level = below
    return False


def _parse_bounded(text: str, parser: str) -> Parsed:
    """Compose with the bounded composer of ``parser``, refusing a document as it crosses a limit."""
    documents: list[Document] = []
    issues: list[Issue] = []
    composer = None
    try:
        composer = COMPOSERS[parser](text)  # PyYAML's reader checks the characters right here
        while composer.check_node():
            root = composer.get_node()
            found: list[Issue] = []
            data = _Builder(found).build(root, "")
            documents.append(Document(root, None if found else data, tuple(found)))
    except _Refused as exc:
        issues.append(exc.issue)
    except yaml.MarkedYAMLError as exc:
        issues.append(_syntax_issue(exc))
    except yaml.reader.ReaderError as exc:
        # libyaml reports a byte offset and the code point as an int, PyYAML a character offset
        # and the character: finding the character itself gives the same answer for both.
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        line, col = position(text, max(text.find(char), 0))
        issues.append(Issue(line, col, f"character U+{ord(char):04X} is not allowed in YAML ({exc.reason})"))
    except yaml.YAMLError as exc:  # unlocated errors of either parser
        issues.append(Issue(1, 1, f"invalid YAML: {exc}"))
    finally:
        if composer is not None:
            composer.dispose()
    return Parsed(tuple(documents), tuple(issues))


def position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of a character index."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _syntax_issue(exc: yaml.MarkedYAMLError) -> Issue:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    message = f"invalid YAML: {exc.problem or exc.context}"
    duplicate = re.match(r"found duplicate anchor '?([^';]*)", exc.context or "")
    if duplicate and exc.context_mark:
        first = exc.context_mark.line + 1
        message = f"invalid YAML: duplicate anchor &{duplicate[1]} (first defined at line {first})"
    elif exc.context and exc.problem:
        where = f" started at line {exc.context_mark.line + 1}" if exc.context_mark else ""
        message += f" ({exc.context}{where})"
    if (exc.context or "").startswith(("while scanning an alias", "while scanning an anchor")):
        message += '; a value starting with * or & must be quoted, e.g. cron: "*/5 * * * *"'
    return Issue(line, col, message)


def escape(key: str) -> str:
    """One JSON pointer segment (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def unescape(segment: str) -> str:
    return segment.replace("~1", "/").replace("~0", "~")


def show_tag(tag: str) -> str:
    return "!!" + tag[len(CORE) :] if tag.startswith(CORE) else tag


class _Builder:
    """Plain data from a checked node tree; problems go to ``issues``, never raised."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues

    def _issue(self, node: Node, message: str, pointer: str) -> None:
        self.issues.append(Issue(node.start_mark.line + 1, node.start_mark.column + 1, message, pointer))

    def _bad_tag(self, node: Node, pointer: str) -> None:
        self._issue(
            node,
            f"tag {show_tag(node.tag)} is not allowed: task files hold plain YAML only "
            "(strings, numbers, booleans, null, lists and mappings)",
            pointer,
        )

    def build(self, node: Node, pointer: str) -> Any:
        if isinstance(node, ScalarNode):
            return self._scalar(node, pointer)
        if isinstance(node, SequenceNode):
            if node.tag != SEQ:
                return self._bad_tag(node, pointer)
            return [self.build(child, f"{pointer}/{i}") for i, child in enumerate(node.value)]
        if node.tag != MAP:
            return self._bad_tag(node, pointer)
        return self._mapping(node, pointer)

    def _mapping(self, node: MappingNode, pointer: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self._issue(key_node, "a mapping key must be a plain value, not a list or a mapping", pointer)
                continue
            if key_node.tag not in SCALAR_TAGS:
                self._bad_tag(key_node, pointer)
                continue
            key = key_node.value  # keys as written: `200:` and `on:` are the strings "200" and "on"
            child = f"{pointer}/{escape(key)}"
            if key in first_lines:
                self._issue(key_node, f"duplicate key '{key}' (first defined at line {first_lines[key]})", child)
                continue
            first_lines[key] = key_node.start_mark.line + 1
            if key == "<<" and not key_node.style:  # plain style: None (PyYAML) or "" (libyaml)
                self._issue(key_node, "merge keys (<<) are not supported: write the fields out", child)
                continue
            result[key] = self.build(value_node, child)
        return result

    def _scalar(self, node: ScalarNode, pointer: str) -> Any:
        tag, value = node.tag, node.value
        if tag in (STR, TIMESTAMP):  # timestamps stay text: the spec parses and checks them
            return value
        pattern = _PATTERNS.get(tag)
        if pattern is None:
            return self._bad_tag(node, pointer)
        if not pattern.match(value):
            return self._issue(node, f"{value!r} is not a valid {show_tag(tag)}", pointer)
        if tag == NULL:
            return None
        if tag == BOOL:
            return value.lower() == "true"
        if tag == INT:
            return self._int(node, pointer)
        lowered = value.lower()
        if lowered.endswith((".inf", ".nan")):
            return float(lowered.replace(".", ""))
        return float(value)

    def _int(self, node: ScalarNode, pointer: str) -> int | None:
        value = node.value
        if len(value) > 40:  # also keeps Python's 4,300-digit conversion limit out of reach
            return self._issue(node, f"number {value[:20]}... is too large", pointer)
        if value.startswith("0o"):
            return int(value[2:], 8)
        if value.startswith("0x"):
            return int(value[2:], 16)
        return int(value, 10)


def is_yaml11_boolean(value: Any) -> bool:
    """``yes``, ``on``... : booleans in YAML 1.1, plain strings here."""
    return isinstance(value, str) and value.lower() in _YAML11_BOOLEANS


def locate(root: Node, pointer: str, *, key: bool = False) -> tuple[int, int]:
    """The position of the node at ``pointer`` (of its key when ``key``), or of its nearest existing parent."""
    node, mark = root, root.start_mark
    for segment in (unescape(s) for s in pointer.split("/")[1:]):
        found: tuple[Node, Node] | None = None
        if isinstance(node, MappingNode):
            found = next(((k, v) for k, v in node.value if isinstance(k, ScalarNode) and k.value == segment), None)
        elif isinstance(node, SequenceNode) and segment.isdigit() and int(segment) < len(node.value):
            found = (node.value[int(segment)], node.value[int(segment)])
        if found is None:
            break
        key_node, node = found
        mark = key_node.start_mark if key else node.start_mark
    return mark.line + 1, mark.column + 1
