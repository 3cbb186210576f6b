from importlib import resources
from pathlib import Path

import pytest

from scheduler import schema
from scheduler.spec import TaskSpec
from scheduler.yamlsafe import parse
from tests.task_corpus import INVALID

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["task", "config"])
def test_schemas_are_package_data_and_valid_2020_12(name):
    packaged = resources.files("scheduler").joinpath("schemas", f"{name}.schema.json")
    assert packaged.is_file()
    assert schema.validator(name).schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    # DESIGN.md's path `schemas/...` is the same file.
    assert (ROOT / "schemas" / f"{name}.schema.json").read_bytes() == packaged.read_bytes()


def test_the_canonical_document_of_a_spec_matches_the_task_schema():
    spec = TaskSpec.from_dict(
        {
            "name": "t",
            "schedule": {"every": "1h", "jitter": "5s", "missedRuns": "skip", "missedRunGrace": "5m"},
            "run": {"http": {"url": "http://127.0.0.1/x", "method": "POST", "expectStatus": [200]}, "timeout": "1m"},
            "retry": {"maxDelay": "1h"},
            "nodes": ["a"],
            "keepRuns": {"successful": 3},
        }
    )
    assert schema.check(spec.to_dict(), "task") == []


def _documents(text: str | bytes) -> list:
    if isinstance(text, bytes):
        return []
    return [d.data for d in parse(text).documents if d.data is not None]


EXAMPLE_DOCUMENTS = [d for path in sorted((ROOT / "examples" / "tasks.d").glob("*.y*ml"))
                     for d in _documents(path.read_text())]
CORPUS_DOCUMENTS = [d for case in INVALID for d in _documents(case.text)] + [
    {"apiVersion": "scheduler/v1", "kind": "Task", "name": "t", "schedule": {"every": every}}
    for every in ("\u0661h", "5m\ufeff", "5m\n", 5.5, 10**30, True)
] + [{"apiVersion": "scheduler/v1", "kind": "Task", "name": name, "schedule": {"every": "1h"}}
     for name in ("t\n", "T", "", 7)]


def test_example_tasks_are_valid_for_both_validators():
    """The fast verdict (jsonschema-rs) must take the common case, or it saves nothing."""
    assert EXAMPLE_DOCUMENTS
    for document in EXAMPLE_DOCUMENTS:
        assert schema._verdict("task").is_valid(document)
        assert schema.check(document, "task") == []


@pytest.mark.parametrize("document", CORPUS_DOCUMENTS)
def test_the_fast_verdict_never_accepts_what_jsonschema_refuses(document):
    if schema._verdict("task").is_valid(document):
        assert not list(schema.validator("task").iter_errors(document))


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [
        ("/run/command/1", "run.command[1]"),
        ("/schedule/every", "schedule.every"),
        ("/labels/a~1b", "labels.a/b"),
        ("", ""),
    ],
)
def test_field_name(pointer, expected):
    assert schema.field_name(pointer) == expected


CONFIG = """\
nodeId: node-a
executorNode: true
tasksDir: /etc/scheduler/tasks.d
stateDir: /var/lib/scheduler
store: sqlite:///var/lib/scheduler/scheduler.db
leaseDuration: 30s
pollInterval: 1s
maxConcurrentRuns: 8
api:
  listen: 127.0.0.1:8181
  auth:
    tokens:
      - {name: ops, token: 0123456789abcdef0123, roles: [ADMINISTRATOR]}
      - {name: grafana, tokenFile: /etc/scheduler/grafana.token, roles: [VIEWER]}
      - {name: ci, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, roles: [VIEWER, ADMINISTRATOR]}
  cors:
    allowOrigins: ["https://admin.example.com"]
  metrics: {auth: false}
purge: {completed: 7d, failed: 30d, cancelled: 7d}
history: {keep: 20}
"""


def config_issues(text):
    [document] = parse(text).documents
    return [(i.pointer, i.message) for i in schema.check(document.data, "config")]


def test_a_sample_node_configuration_is_valid():
    assert config_issues(CONFIG) == []
    assert config_issues("{}") == []  # every setting has a default


@pytest.mark.parametrize(
    ("change", "pointer", "message"),
    [
        (("nodeId: node-a", "nodeid: node-a"), "/nodeid", "unknown field 'nodeid' (did you mean 'nodeId'?"),
        (("store: sqlite://", "store: postgres://"), "/store", "store: expected a store URL"),
        (("leaseDuration: 30s", "leaseDuration: 0"), "/leaseDuration", "leaseDuration: must be more than 0"),
        (("pollInterval: 1s", "pollInterval: soon"), "/pollInterval", "pollInterval: expected a duration"),
        (("maxConcurrentRuns: 8", "maxConcurrentRuns: 0"), "/maxConcurrentRuns", "must be at least 1"),
        (("listen: 127.0.0.1:8181", "listen: 8181"), "/api/listen", "api.listen: expected host:port"),
        (
            ("roles: [ADMINISTRATOR]}", "roles: [ROOT]}"),
            "/api/auth/tokens/0/roles/0",
            "expected one of ADMINISTRATOR, VIEWER",
        ),
        (("roles: [ADMINISTRATOR]}", "roles: []}"), "/api/auth/tokens/0/roles", "must not be empty"),
        (
            ("token: 0123456789abcdef0123,", "token: short,"),
            "/api/auth/tokens/0/token",
            "must have at least 16 characters",
        ),
        (
            ("tokenFile: /etc/scheduler/grafana.token", "sha256: abc"),
            "/api/auth/tokens/1/sha256",
            "expected the SHA-256 of the token",
        ),
        (
            ("{name: ops, token: 0123456789abcdef0123,", "{name: ops,"),
            "/api/auth/tokens/0",
            "expected exactly one of token, tokenFile, sha256 (found: none)",
        ),
        (
            ("metrics: {auth: false}", "metrics: {auth: maybe}"),
            "/api/metrics/auth",
            "api.metrics.auth: expected true or false",
        ),
        (("cancelled: 7d", "crashed: 7d"), "/purge/crashed", "unknown field 'crashed' in purge"),
        (("keep: 20", "keep: -1"), "/history/keep", "must be at least 0"),
    ],
)
def test_bad_node_configurations(change, pointer, message):
    assert CONFIG.count(change[0]) == 1
    issues = config_issues(CONFIG.replace(*change))
    assert len(issues) == 1
    assert issues[0][0] == pointer and message in issues[0][1]
