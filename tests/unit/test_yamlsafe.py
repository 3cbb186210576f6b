import pytest

from scheduler import yamlsafe
from scheduler.yamlsafe import MAX_DEPTH, MAX_NODES, locate, parse
from tests.task_corpus import INVALID

PARSERS = sorted(yamlsafe.COMPOSERS)


def only_data(text: str, parser: str = yamlsafe.DEFAULT_PARSER):
    parsed = parse(text, parser)
    assert parsed.issues == ()
    [document] = parsed.documents
    assert document.issues == ()
    return document.data


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v: yes", "yes"),  # YAML 1.1 booleans stay strings
        ("v: on", "on"),
        ("v: No", "No"),
        ("v: true", True),
        ("v: FALSE", False),
        ("v: 2026-12-01T03:00:00Z", "2026-12-01T03:00:00Z"),  # timestamps stay text
        ("v: 2026-12-01", "2026-12-01"),
        ("v: !!timestamp 2026-12-01", "2026-12-01"),
        ("v: 10", 10),
        ("v: -7", -7),
        ("v: 0755", 755),  # YAML 1.2: decimal, not octal
        ("v: 0o17", 15),
        ("v: 0x1F", 31),
        ("v: 1_000", "1_000"),
        ("v: 1.5", 1.5),
        ("v: 1e3", 1000.0),
        ("v: .inf", float("inf")),
        ("v: -.Inf", float("-inf")),
        ("v: ~", None),
        ("v: null", None),
        ("v:", None),
        ("v: '10'", "10"),
        ("v: !!str 10", "10"),
        ("v: !!int '10'", 10),
        ("v: !!float 1", 1.0),
        ("v: 1:30", "1:30"),  # no sexagesimal numbers
        ("v: [a, {b: c}]", ["a", {"b": "c"}]),
    ],
)
def test_core_schema_scalars(parser, text, expected):
    assert only_data(text, parser) == {"v": expected}


def test_keys_are_kept_as_written():
    assert only_data("200: a\non: b\ntrue: c\n~: d\n'q': e\n") == {
        "200": "a",
        "on": "b",
        "true": "c",
        "~": "d",
        "q": "e",
    }


def test_nan_is_a_float():
    value = only_data("v: .nan")["v"]
    assert value != value


def test_documents_and_their_lines():
    parsed = parse("# comment\na: 1\n---\nb: 2\n---\n")
    assert [(d.line, d.data, d.empty) for d in parsed.documents] == [
        (2, {"a": 1}, False),
        (4, {"b": 2}, False),
        (6, None, True),
    ]


def test_a_syntax_error_keeps_the_documents_before_it():
    parsed = parse("a: 1\n---\nb: [\n")
    assert [d.data for d in parsed.documents] == [{"a": 1}]
    assert parsed.issues[0].line == 4


def test_aliases_within_the_limit_are_plain_copies():
    data = only_data("a: &x {k: [1, 2]}\nb: *x\n")
    assert data == {"a": {"k": [1, 2]}, "b": {"k": [1, 2]}}
    data["a"]["k"].append(3)
    assert data["b"] == {"k": [1, 2]}  # no shared mutable object


def flat_sequence(items: int) -> str:
    return "[" + ", ".join(["1"] * items) + "]"


@pytest.mark.parametrize("parser", PARSERS)
def test_node_limit_boundary(parser):
    assert len(only_data(flat_sequence(MAX_NODES - 1), parser)) == MAX_NODES - 1  # plus the sequence itself
    refused = parse(flat_sequence(MAX_NODES), parser)
    assert refused.documents == ()
    assert "more than 10000 nodes" in refused.issues[0].message


@pytest.mark.parametrize("parser", PARSERS)
def test_node_limit_counts_alias_expansions(parser):
    # 1 mapping + 2 keys + (1 + 5000 values) + 1 alias that stands for 5001 nodes: 10005 in all.
    text = "a: &a " + flat_sequence(5000) + "\nb: *a\n"
    refused = parse(text, parser)
    assert (refused.issues[0].line, refused.issues[0].col) == (2, 4)
    assert "once aliases are expanded" in refused.issues[0].message


@pytest.mark.parametrize("parser", PARSERS)
def test_depth_limit_boundary(parser):
    assert only_data("[" * MAX_DEPTH + "]" * MAX_DEPTH, parser) is not None
    refused = parse("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), parser)
    assert "nested too deeply" in refused.issues[0].message


@pytest.mark.parametrize("parser", PARSERS)
def test_depth_limit_counts_alias_expansions(parser):
    half = MAX_DEPTH // 2 + 1
    text = "a: &a " + "[" * half + "]" * half + "\nb: " + "[" * half + "*a" + "]" * half + "\n"
    assert "nested too deeply" in parse(text, parser).issues[0].message


@pytest.mark.skipif("libyaml" not in yamlsafe.COMPOSERS, reason="PyYAML built without libyaml: one parser only")
@pytest.mark.parametrize("case", [c for c in INVALID if isinstance(c.text, str)], ids=lambda c: c.id)
def test_both_parsers_agree_on_positions_and_data(case):
    """libyaml is the default; the pure Python parser must give the same lines, columns and data."""
    results = []
    for parser in PARSERS:
        parsed = parse(case.text, parser)
        issues = list(parsed.issues) + [i for d in parsed.documents for i in d.issues]
        # Syntax errors are worded by each parser; everything else is ours.
        results.append(
            (
                [
                    (i.line, i.col, i.pointer, "" if i.message.startswith(("invalid YAML", "character")) else i.message)
                    for i in issues
                ],
                [d.data for d in parsed.documents],
            )
        )
    assert all(r == results[0] for r in results)


@pytest.mark.skipif("libyaml" not in yamlsafe.COMPOSERS, reason="PyYAML built without libyaml")
@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("a: 1\n---\nb: [x, {c: d}]\n---\n", True),
        ("v: !!python/object:os.system x\n", True),  # refused by the builder, the same on both paths
        ("a: 1\na: 2\n", True),
        ("a: &x 1\n", True),  # an anchor nobody refers to
        ("[" * MAX_DEPTH + "]" * MAX_DEPTH, True),
        (flat_sequence(MAX_NODES - 1), True),
        ("a: &x [1]\nb: *x\n", False),
        ("a: &x 1\nb: *x\n", False),
        ("a: &x [*x]\n", False),
        ("a: *nowhere\n", False),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), False),
        (flat_sequence(MAX_NODES), False),
        ("a: 1\n---\nb: [\n", False),
    ],
)
def test_libyaml_composes_plain_texts_itself_and_leaves_the_rest_to_the_bounded_composer(text, plain):
    fast = yamlsafe._parse_plain(text)
    assert (fast is not None) == plain
    if fast is not None:
        exact = parse(text, "python")
        assert fast.issues == exact.issues
        assert [(d.line, d.data, d.issues, d.empty) for d in fast.documents] == [
            (d.line, d.data, d.issues, d.empty) for d in exact.documents
        ]


TREE = """\
name: t
schedule:
  every: 5m
run:
  command:
    - /bin/echo
    - "a/b"
odd~/key: 1
"""


@pytest.mark.parametrize(
    ("pointer", "key", "position"),
    [
        ("", False, (1, 1)),
        ("/name", False, (1, 7)),
        ("/name", True, (1, 1)),
        ("/schedule/every", False, (3, 10)),
        ("/schedule/every", True, (3, 3)),
        ("/run/command/1", False, (7, 7)),
        ("/run/command/9", False, (6, 5)),  # missing index: the nearest parent
        ("/schedule/cron", False, (3, 3)),  # missing key: the parent mapping
        ("/nothing/deeper", False, (1, 1)),
        ("/odd~0~1key", True, (8, 1)),
    ],
)
def test_locate(pointer, key, position):
    root = parse(TREE).documents[0].root
    assert locate(root, pointer, key=key) == position
