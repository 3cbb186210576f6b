"""Task files as tables: valid ones, and invalid ones with the problem a user must see.

Shared by the loader's unit tests (``load_text``) and the CLI's acceptance test
(``scheduler validate`` as a subprocess), so both read the same expectations.
"""

from __future__ import annotations

from dataclasses import dataclass

HEAD = "apiVersion: scheduler/v1\nkind: Task\nname: t\n"
EVERY = "schedule:\n  every: 5m\n"
RUN = "run:\n  command: [/bin/true]\n"
BASE = HEAD + EVERY + RUN  # lines: 1 apiVersion, 2 kind, 3 name, 4-5 schedule, 6-7 run


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return HEAD + EVERY + RUN + "parameters:\n" + "".join(f"  {line}\n" for line in lines)


@dataclass(frozen=True)
class Invalid:
    """A file that must be refused with ``message`` (a fragment) at ``line``:``col``."""

    id: str
    text: str | bytes
    line: int
    col: int
    message: str


INVALID = [
    # YAML itself
    Invalid("syntax-indentation", "a: 1\n b: 2\n", 2, 3, "invalid YAML: mapping values are not allowed"),
    Invalid("syntax-unclosed-flow", HEAD + "schedule: {every: 5m\n" + RUN, 5, 4, "invalid YAML"),
    Invalid("syntax-tab-indent", HEAD + "schedule:\n\tevery: 5m\n", 5, 1, "invalid YAML"),
    Invalid(
        "unquoted-cron", HEAD + "schedule:\n  cron: * * * * *\n", 5, 10, 'must be quoted, e.g. cron: "*/5 * * * *"'
    ),
    Invalid("undefined-alias", BASE + "parameters: {a: *nowhere}\n", 8, 17, "found undefined alias 'nowhere'"),
    Invalid(
        "duplicate-anchor",
        BASE + "parameters: {a: &x 1, b: &x 2}\n",
        8,
        26,
        "duplicate anchor &x (first defined at line 8)",
    ),
    Invalid("control-character", BASE + "description: bell\x07\n", 8, 18, "character U+0007 is not allowed"),
    Invalid("not-utf8", BASE.encode() + b"description: caf\xe9\n", 8, 17, "not UTF-8 text: byte 0xe9"),
    Invalid("alias-bomb", _bomb(), 13, 12, "document too large: more than 10000 nodes once aliases are expanded"),
    Invalid(
        "recursive-alias", BASE + "parameters: &p {self: *p}\n", 8, 23, "alias *p refers to a node that contains it"
    ),
    Invalid(
        "too-deep",
        BASE + "parameters: {a: " + "[" * 70 + "]" * 70 + "}\n",
        8,
        79,
        "nested too deeply: more than 64 levels",
    ),
    Invalid(
        "python-object-tag",
        BASE + "parameters: !!python/object:os.system {}\n",
        8,
        13,
        "tag !!python/object:os.system is not allowed",
    ),
    Invalid(
        "python-name-tag",
        BASE + "description: !!python/name:os.system ''\n",
        8,
        14,
        "tag !!python/name:os.system is not allowed",
    ),
    Invalid("local-tag", BASE + "description: !env HOME\n", 8, 14, "tag !env is not allowed"),
    Invalid("binary-tag", BASE + "description: !!binary aGk=\n", 8, 14, "tag !!binary is not allowed"),
    Invalid("set-tag", BASE + "nodes: !!set {a, b}\n", 8, 8, "tag !!set is not allowed"),
    Invalid("bad-explicit-int", BASE + "retry: {maxRetries: !!int three}\n", 8, 21, "'three' is not a valid !!int"),
    Invalid("duplicate-key", HEAD + "name: u\n" + EVERY + RUN, 4, 1, "duplicate key 'name' (first defined at line 3)"),
    Invalid(
        "duplicate-nested-key",
        HEAD + "schedule:\n  every: 5m\n  every: 1h\n" + RUN,
        6,
        3,
        "duplicate key 'every' (first defined at line 5)",
    ),
    Invalid("merge-key", BASE + "labels:\n  <<: {team: a}\n", 9, 3, "merge keys (<<) are not supported"),
    Invalid("complex-key", BASE + "labels:\n  ? [a, b]\n  : c\n", 9, 5, "a mapping key must be a plain value"),
    # Structure (the JSON Schema)
    Invalid(
        "not-a-mapping",
        "- apiVersion: scheduler/v1\n",
        1,
        1,
        "expected a task: a mapping with apiVersion, kind, name, schedule",
    ),
    Invalid("scalar-document", "hello\n", 1, 1, "expected a task: a mapping"),
    Invalid(
        "unknown-field",
        BASE + "schedul: {every: 5m}\n",
        8,
        1,
        "unknown field 'schedul' (did you mean 'schedule'? allowed: apiVersion,",
    ),
    Invalid(
        "unknown-nested-field",
        HEAD + "schedule:\n  every: 5m\n  jiter: 5s\n" + RUN,
        6,
        3,
        "unknown field 'jiter' in schedule (did you mean 'jitter'?",
    ),
    Invalid(
        "missing-api-version",
        "kind: Task\nname: t\n" + EVERY + RUN,
        1,
        1,
        "missing apiVersion: add 'apiVersion: scheduler/v1' to the document",
    ),
    Invalid(
        "wrong-api-version",
        BASE.replace("scheduler/v1", "scheduler/v2"),
        1,
        13,
        "apiVersion: expected 'scheduler/v1', got string 'scheduler/v2'",
    ),
    Invalid("missing-kind", BASE.replace("kind: Task\n", ""), 1, 1, "missing kind: add 'kind: Task' to the document"),
    Invalid("wrong-kind", BASE.replace("kind: Task", "kind: Job"), 2, 7, "kind: expected 'Task', got string 'Job'"),
    Invalid("missing-name", BASE.replace("name: t\n", ""), 1, 1, "missing required field 'name'"),
    Invalid(
        "bad-name", BASE.replace("name: t", "name: Data_Sync"), 3, 7, "name: expected a task name: lowercase letters"
    ),
    Invalid("long-name", BASE.replace("name: t", "name: " + "a" * 64), 3, 7, "name: expected a task name"),
    Invalid("missing-schedule", HEAD + RUN, 1, 1, "missing required field 'schedule'"),
    Invalid(
        "no-schedule-kind",
        HEAD + "schedule: {jitter: 5s}\n" + RUN,
        4,
        11,
        "schedule: expected exactly one of cron, every, at, after, afterSuccessOf (found: none)",
    ),
    Invalid(
        "two-schedule-kinds", HEAD + "schedule: {every: 5m, cron: '* * * * *'}\n" + RUN, 4, 11, "(found: cron, every)"
    ),
    Invalid(
        "bad-duration",
        HEAD + "schedule: {every: 5x}\n" + RUN,
        4,
        19,
        "schedule.every: expected a duration such as 90s, 5m, 1h30m, 7d",
    ),
    Invalid(
        "negative-duration",
        HEAD + "schedule: {every: -5}\n" + RUN,
        4,
        19,
        "schedule.every: must be at least 0, got number -5",
    ),
    Invalid(
        "missed-runs-enum",
        HEAD + "schedule: {every: 5m, missedRuns: sometimes}\n" + RUN,
        4,
        35,
        "schedule.missedRuns: expected one of skip, runOnce, runAll",
    ),
    Invalid(
        "enabled-yes",
        BASE + "enabled: yes\n",
        8,
        10,
        "enabled: expected true or false, got string 'yes' (write true or false)",
    ),
    Invalid("concurrency-enum", BASE + "concurrency: allow\n", 8, 14, "concurrency: expected one of forbid, replace"),
    Invalid("run-on-enum", BASE + "runOn: some\n", 8, 8, "runOn: expected one of any, all"),
    Invalid("on-crash-enum", BASE + "onCrash: retry\n", 8, 10, "onCrash: expected one of resume, manual"),
    Invalid("nodes-repeated", BASE + "nodes: [a, a]\n", 8, 8, "nodes: must not list the same value twice"),
    Invalid("labels-list-value", BASE + "labels: {team: [a]}\n", 8, 16, "labels.team: expected a string"),
    Invalid("parameters-list", BASE + "parameters: [1, 2]\n", 8, 13, "parameters: expected a mapping, got a list"),
    Invalid("description-number", BASE + "description: 5\n", 8, 14, "description: expected a string, got number 5"),
    Invalid("type-pattern", BASE + "type: data sync\n", 8, 7, "type: expected a task type"),
    Invalid(
        "run-empty",
        HEAD + EVERY + "run: {}\n",
        6,
        6,
        "run: expected exactly one of command, shell, http, python (found: none)",
    ),
    Invalid("run-two-kinds", HEAD + EVERY + "run: {command: [a], shell: b}\n", 6, 6, "(found: command, shell)"),
    Invalid("command-empty", HEAD + EVERY + "run: {command: []}\n", 6, 16, "run.command: must not be empty"),
    Invalid(
        "command-number-argument",
        HEAD + EVERY + "run: {command: [/bin/sleep, 5]}\n",
        6,
        29,
        "run.command[1]: expected a command argument (quote numbers",
    ),
    Invalid(
        "python-target",
        HEAD + EVERY + "run: {python: nocolon}\n",
        6,
        15,
        "run.python: expected a callable written module:function",
    ),
    Invalid(
        "http-url",
        HEAD + EVERY + "run: {http: {url: 'ftp://x'}}\n",
        6,
        19,
        "run.http.url: expected an http:// or https:// URL",
    ),
    Invalid(
        "http-method",
        HEAD + EVERY + "run: {http: {url: 'http://x', method: FETCH}}\n",
        6,
        39,
        "run.http.method: expected one of GET, HEAD",
    ),
    Invalid(
        "http-status",
        HEAD + EVERY + "run: {http: {url: 'http://x', expectStatus: [200, 700]}}\n",
        6,
        51,
        "run.http.expectStatus[1]: must be at most 599",
    ),
    Invalid(
        "http-no-url", HEAD + EVERY + "run: {http: {method: GET}}\n", 6, 13, "missing required field 'url' in run.http"
    ),
    Invalid(
        "env-boolean",
        HEAD + EVERY + "run: {command: [a], env: {DEBUG: true}}\n",
        6,
        34,
        "run.env.DEBUG: expected a string (quote values",
    ),
    Invalid(
        "retry-negative",
        BASE + "retry: {maxRetries: -1}\n",
        8,
        21,
        "retry.maxRetries: must be at least 0, got number -1",
    ),
    Invalid(
        "retry-backoff", BASE + "retry: {backoff: linear}\n", 8, 18, "retry.backoff: expected one of fixed, exponential"
    ),
    # Meaning (TaskSpec.from_dict and the loader)
    Invalid(
        "cron-range",
        HEAD + "schedule: {cron: '61 * * * *'}\n" + RUN,
        4,
        18,
        "schedule.cron: invalid cron expression '61 * * * *'",
    ),
    Invalid("cron-six-fields", HEAD + "schedule: {cron: '0 0 * * * *'}\n" + RUN, 4, 18, "invalid cron expression"),
    Invalid(
        "unknown-timezone",
        HEAD + "schedule: {cron: '0 * * * *', timezone: Mars/Olympus}\n" + RUN,
        4,
        41,
        "unknown time zone 'Mars/Olympus'",
    ),
    Invalid(
        "at-without-zone",
        HEAD + "schedule: {at: 2026-12-01T03:00:00}\n" + RUN,
        4,
        16,
        "has no time zone: add Z or an offset",
    ),
    Invalid(
        "at-not-a-time", HEAD + "schedule: {at: tomorrow}\n" + RUN, 4, 16, "schedule.at: expected an ISO 8601 time"
    ),
    Invalid("every-zero", HEAD + "schedule: {every: 0s}\n" + RUN, 4, 19, "every must be a positive duration"),
    Invalid(
        "timezone-without-cron",
        HEAD + "schedule: {every: 5m, timezone: UTC}\n" + RUN,
        4,
        33,
        "timezone only applies to a cron schedule",
    ),
    Invalid(
        "fixed-rate-on-cron",
        HEAD + "schedule: {cron: '@daily', fixedRate: true}\n" + RUN,
        4,
        39,
        "fixedRate only applies to an 'every' schedule",
    ),
    Invalid("duration-too-large", HEAD + "schedule: {every: 99999999999d}\n" + RUN, 4, 19, "is too large"),
    Invalid("at-out-of-range", HEAD + "schedule: {at: 0001-01-01T00:00:00+01:00}\n" + RUN, 4, 16, "is out of range"),
    Invalid(
        "number-too-large",
        HEAD + "schedule: {every: 99999999999999999999}\n" + RUN,
        4,
        19,
        "duration 99999999999999999999 is too large",
    ),
    Invalid(
        "timeout-zero",
        HEAD + EVERY + "run: {command: [a], timeout: 0s}\n",
        6,
        30,
        "timeout must be a positive duration",
    ),
    Invalid(
        "env-on-python",
        HEAD + EVERY + "run: {python: 'm:f', env: {A: b}}\n",
        6,
        27,
        "env only applies to command and shell runs",
    ),
    Invalid(
        "no-run-unknown-type",
        HEAD + "type: mystery\n" + EVERY,
        4,
        7,
        "no executor is registered for type 'mystery': add a run with one of command, shell, http or python",
    ),
    Invalid("no-run-no-type", HEAD + EVERY, 3, 7, "no executor is registered for type 't'"),
    Invalid("same-name-twice", BASE + "---\n" + BASE, 11, 7, "task name 't' is already defined at line 1"),
    Invalid(
        "second-document-bad",
        BASE + "---\n" + BASE.replace("name: t", "name: u").replace("every: 5m", "every: soon"),
        13,
        10,
        "schedule.every: expected a duration",
    ),
]
