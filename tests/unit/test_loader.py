import hashlib
import os
import random
import socket
from datetime import datetime, timedelta, timezone

import pytest

from scheduler.loader import Problem, is_task_file, load_bytes, load_directory, load_file, load_text
from scheduler.spec import Source
from scheduler.yamlsafe import MAX_FILE_BYTES
from tests.support.taskfiles import counting_reads
from tests.task_corpus import BASE, EVERY, HEAD, INVALID, RUN


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_file_gives_one_located_problem(case):
    data = case.text if isinstance(case.text, bytes) else case.text.encode()
    result = load_bytes(data, "tasks.d/case.yaml", known_types=())
    assert not result.ok
    [problem] = result.problems
    assert (problem.line, problem.col) == (case.line, case.col)
    assert case.message in problem.message
    assert str(problem) == f"tasks.d/case.yaml:{case.line}:{case.col}: {problem.message}"


def test_problems_carry_the_json_pointer():
    result = load_text(HEAD + "schedule: {every: 5x}\n" + RUN + "retry: {backoff: linear}\n", "f.yaml")
    assert [p.pointer for p in result.problems] == ["/schedule/every", "/retry/backoff"]


def test_every_problem_of_a_file_is_reported():
    text = (
        BASE + "enabled: yes\nrunOn: some\n"  # two in the first document
        "---\n" + BASE.replace("name: t", "name: u").replace("every: 5m", "cron: '99 * * * *'")
    )
    result = load_text(text, "f.yaml")
    assert [(p.line, p.message.split(":")[0]) for p in result.problems] == [
        (8, "enabled"),
        (9, "runOn"),
        (15, "schedule.cron"),
    ]


FULL = """\
apiVersion: scheduler/v1
kind: Task
name: data-sync
type: dataSync
description: Sync CRM records
labels: {team: crm}
enabled: true
schedule:
  cron: "0 * * * *"
  timezone: Europe/Paris
  jitter: 30s
  missedRuns: runOnce
run:
  command: ["/usr/local/bin/sync", "--target", "CRM"]
  env: {LOG_LEVEL: info, PORT: 8080}
  workingDir: /var/lib/sync
  timeout: 10m
parameters: {targetSystem: CRM, batchSize: 1000, on: yes}
retry: {maxRetries: 3, retryDelay: 60s, backoff: exponential, maxDelay: 1h}
concurrency: forbid
persistent: true
runOn: any
nodes: []
onCrash: resume
"""


def test_the_design_example_loads_completely():
    result = load_text(FULL, "tasks.d/data-sync.yaml")
    assert result.ok
    [spec] = result.specs
    assert spec.source == Source("tasks.d/data-sync.yaml", 1)
    assert (spec.name, spec.type, spec.schedule.cron, spec.schedule.timezone) == (
        "data-sync",
        "dataSync",
        "0 * * * *",
        "Europe/Paris",
    )
    assert spec.run.command == ("/usr/local/bin/sync", "--target", "CRM")
    assert dict(spec.run.env) == {"LOG_LEVEL": "info", "PORT": "8080"}
    assert spec.run.timeout == timedelta(minutes=10)
    assert dict(spec.parameters) == {"targetSystem": "CRM", "batchSize": 1000, "on": "yes"}
    assert spec.retry.backoff == "exponential" and spec.retry.max_delay == timedelta(hours=1)


@pytest.mark.parametrize(
    ("text", "check"),
    [
        (BASE, lambda s: s.schedule.every == timedelta(minutes=5) and s.type == "t"),
        (HEAD + "schedule: {every: 90}\n" + RUN, lambda s: s.schedule.every == timedelta(seconds=90)),
        (
            HEAD + "schedule: {at: 2026-12-01T04:00:00+01:00}\n" + RUN,
            lambda s: s.schedule.at == datetime(2026, 12, 1, 3, tzinfo=timezone.utc),
        ),
        (HEAD + "schedule: {after: 0s}\n" + RUN, lambda s: s.schedule.after == timedelta(0)),
        (HEAD + "schedule: {cron: '@daily'}\n" + RUN, lambda s: s.schedule.cron == "@daily"),
        (HEAD + EVERY + "run: {shell: 'echo hi | wc -c'}\n", lambda s: s.run.shell == "echo hi | wc -c"),
        (HEAD + EVERY + "run: {command: /usr/bin/uptime}\n", lambda s: s.run.command == ("/usr/bin/uptime",)),
        (HEAD + EVERY + "run: {python: 'pkg.jobs:sync'}\n", lambda s: s.run.python == "pkg.jobs:sync"),
        (
            HEAD
            + EVERY
            + "run:\n  http: {method: POST, url: 'http://127.0.0.1:8181/x', body: {a: [1]}, expectStatus: 204}\n",
            lambda s: (s.run.http.method, s.run.http.expect_status, s.run.http.body["a"]) == ("POST", (204,), (1,)),
        ),
        (
            BASE + "persistent: false\nrunOn: all\nnodes: [n1, n2]\n",
            lambda s: (s.persistent, s.run_on, s.nodes) == (False, "all", ("n1", "n2")),
        ),
        (BASE + "labels: {tier: 1}\n", lambda s: dict(s.labels) == {"tier": "1"}),
        (BASE + "parameters: {list: &l [1, 2], again: *l}\n", lambda s: s.parameters["again"] == (1, 2)),
        (BASE + "description: !!str 42\n", lambda s: s.description == "42"),
        (
            "{apiVersion: scheduler/v1, kind: Task, name: t, schedule: {every: 5m}, run: {shell: x}}",
            lambda s: s.run.shell == "x",
        ),
        ("\ufeff" + BASE, lambda s: s.name == "t"),  # a byte order mark
        (BASE.replace("\n", "\r\n"), lambda s: s.name == "t"),  # Windows line ends
        ("---\n" + BASE + "...\n", lambda s: s.name == "t"),  # explicit document markers
    ],
    ids=lambda v: None if callable(v) else v.splitlines()[-1][:40],
)
def test_valid_files(text, check):
    result = load_text(text, "f.yaml", known_types=())
    assert result.problems == ()
    [spec] = result.specs
    assert check(spec)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "---\n---\n", BASE + "---\n"])
def test_empty_documents_are_skipped(text):
    result = load_text(text, "f.yaml")
    assert result.ok and len(result.specs) == text.count("name:")


def test_several_documents_keep_their_lines():
    result = load_text("# header\n" + BASE + "---\n" + BASE.replace("name: t", "name: u"), "f.yaml")
    assert [(s.name, s.source.line) for s in result.specs] == [("t", 2), ("u", 10)]


def test_specs_that_pass_stay_available_beside_the_problems():
    result = load_text(BASE + "---\n" + BASE.replace("name: t", "name: u") + "enabled: maybe\n", "f.yaml")
    assert [s.name for s in result.specs] == ["t"]
    assert not result.ok


def test_a_task_without_run_needs_a_registered_executor():
    text = HEAD + "type: dataSync\n" + EVERY
    assert load_text(text, "f.yaml", known_types={"dataSync"}).ok
    [problem] = load_text(text, "f.yaml", known_types={"other"}).problems
    assert "no executor is registered for type 'dataSync'" in problem.message


def test_result_carries_the_digest_of_the_bytes(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_bytes(BASE.encode())
    result = load_file(path)
    assert result.sha256 == hashlib.sha256(BASE.encode()).hexdigest()
    assert result.path == str(path) and result.specs[0].source == Source(str(path), 1)


def test_a_file_over_the_size_limit_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(BASE.encode() + b"#" * MAX_FILE_BYTES)
    [problem] = load_file(path).problems
    assert (problem.line, problem.message) == (
        0,
        f"file too large: {MAX_FILE_BYTES + 1} bytes (the limit is {MAX_FILE_BYTES})",
    )
    assert str(problem) == f"{path}: {problem.message}"


def test_an_unreadable_file_is_a_result(tmp_path):
    result = load_file(tmp_path / "missing.yaml")
    assert result.io_error == "No such file or directory"
    assert str(result.problems[0]) == f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory"


@pytest.mark.parametrize(
    ("name", "read"),
    [
        ("task.yaml", True),
        ("task.yml", True),
        ("task.d.yaml", True),
        ("task.json", False),
        ("task", False),
        ("task.YAML", False),
        (".ansible_tmpXYZ.yaml", False),
        (".hidden.yaml", False),
        ("task.yaml~", False),
        ("task.yaml.swp", False),
        ("task.swp", False),
        ("task.tmp", False),
        ("task.yaml.dpkg-old", False),
        ("task.dpkg-new", False),
    ],
)
def test_is_task_file(name, read):
    assert is_task_file(name) is read


def write(directory, name, text):
    path = directory / name
    path.write_text(text)
    return str(path)


def test_directory_reads_task_files_only(tmp_path):
    write(tmp_path, "a.yaml", BASE)
    write(tmp_path, "b.yml", BASE.replace("name: t", "name: b"))
    for ignored in (".ansible_tmpXYZ.yaml", "a.yaml~", "x.swp", "notes.txt", "c.yaml.dpkg-old"):
        write(tmp_path, ignored, "not: [valid")
    (tmp_path / "sub").mkdir()  # subdirectories are not read
    write(tmp_path / "sub", "deep.yaml", "not: [valid")
    result = load_directory(tmp_path)
    assert [os.path.basename(f.path) for f in result.files] == ["a.yaml", "b.yml"]
    assert result.ok and [s.name for s in result.specs] == ["t", "b"]


def test_only_regular_files_are_read_and_each_odd_entry_is_its_own_problem(tmp_path):
    write(tmp_path, "good.yaml", BASE)
    os.mkfifo(tmp_path / "fifo.yaml")  # opening it for reading would wait for a writer forever
    (tmp_path / "dir.yaml").mkdir()
    (tmp_path / "device.yaml").symlink_to("/dev/null")
    (tmp_path / "loop.yaml").symlink_to("loop.yaml")
    (tmp_path / "dangling.yaml").symlink_to("nowhere.yaml")
    (tmp_path / "link.yaml").symlink_to("good.yaml")  # a link to a regular file is read
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(tmp_path / "sock.yaml"))
        result = load_directory(tmp_path, known_types=())

    errors = {os.path.basename(f.path): f.io_error for f in result.files}
    assert errors == {
        "dangling.yaml": "dangling symbolic link to nowhere.yaml",
        "device.yaml": "not a regular file: a character device",
        "dir.yaml": "not a regular file: a directory",
        "fifo.yaml": "not a regular file: a FIFO (named pipe)",
        "good.yaml": None,
        "link.yaml": None,
        "loop.yaml": "symbolic link loop (too many levels of symbolic links)",
        "sock.yaml": "not a regular file: a socket",
    }
    fifo = next(f for f in result.files if f.path.endswith("fifo.yaml"))
    assert str(fifo.problems[0]) == f"{tmp_path / 'fifo.yaml'}: cannot read: not a regular file: a FIFO (named pipe)"
    assert [s.name for s in result.specs] == ["t"]  # link.yaml repeats good.yaml's name: a duplicate
    assert load_file(tmp_path / "fifo.yaml").io_error == "not a regular file: a FIFO (named pipe)"


def test_duplicate_names_across_files_name_both_files(tmp_path):
    first = write(tmp_path, "10-first.yaml", BASE)
    second = write(tmp_path, "20-second.yaml", "# the same name again\n" + BASE)
    result = load_directory(tmp_path, known_types=())
    assert result.problems == (Problem(second, 2, 1, "/name", f"task name 't' is already defined in {first}:1"),)
    assert [s.source.path for s in result.specs] == [first]  # the file that sorts first keeps the task
    assert all(f.ok and len(f.specs) == 1 for f in result.files)  # each file alone is fine
    assert not result.ok and result.all_problems == result.problems


def test_a_name_belongs_to_its_holder_whatever_the_name_order(tmp_path):
    first = write(tmp_path, "10-first.yaml", BASE)
    second = write(tmp_path, "20-second.yaml", "# the holder\n" + BASE)
    held = {"t": Source(second, 2)}

    result = load_directory(tmp_path, known_types=(), holders=held)
    assert result.problems == (Problem(first, 1, 1, "/name", f"task name 't' is already defined in {second}:2"),)
    assert [s.source.path for s in result.specs] == [second]

    write(tmp_path, "20-second.yaml", "name: [")  # a rejected holder keeps its name (its last good version runs)
    assert load_directory(tmp_path, known_types=(), holders=held).problems[0].path == first
    write(tmp_path, "20-second.yaml", BASE.replace("name: t", "name: u"))  # a holder that let it go does not
    assert load_directory(tmp_path, known_types=(), holders=held).ok
    os.unlink(second)  # nor one that went
    assert load_directory(tmp_path, known_types=(), holders=held).ok


def test_a_bad_file_does_not_hide_the_good_ones(tmp_path):
    write(tmp_path, "bad.yaml", "name: [")
    write(tmp_path, "good.yaml", BASE)
    result = load_directory(tmp_path)
    assert [s.name for s in result.specs] == ["t"]
    assert [os.path.basename(p.path) for p in result.all_problems] == ["bad.yaml"]


def test_a_rescan_parses_only_the_files_that_changed(tmp_path):
    write(tmp_path, "a.yaml", BASE)
    write(tmp_path, "b.yaml", BASE.replace("name: t", "name: b"))
    first = load_directory(tmp_path, known_types=())
    write(tmp_path, "b.yaml", BASE.replace("name: t", "name: b2"))
    write(tmp_path, "c.yaml", BASE.replace("name: t", "name: c"))

    second = load_directory(tmp_path, known_types=(), previous=first)

    assert second.files[0] is first.files[0]
    assert [s.name for s in second.specs] == ["t", "b2", "c"]
    assert second.files[1].sha256 != first.files[1].sha256


def test_a_rescan_with_other_executor_types_parses_everything_again(tmp_path):
    write(tmp_path, "a.yaml", HEAD + EVERY + "type: sync\n")  # no run: needs an executor registered for its type
    without = load_directory(tmp_path, known_types=())
    with_sync = load_directory(tmp_path, known_types=("sync",), previous=without)
    assert not without.ok and "no executor is registered" in without.all_problems[0].message
    assert with_sync.ok and [s.name for s in with_sync.specs] == ["t"]


def test_a_dangling_symlink_is_reported(tmp_path):
    (tmp_path / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
    [result] = load_directory(tmp_path).files
    assert result.io_error == f"dangling symbolic link to {tmp_path / 'nowhere.yaml'}"


def test_an_unlistable_directory_raises(tmp_path):
    with pytest.raises(OSError):
        load_directory(tmp_path / "missing")


ODD_VALUES = [
    *("", "0", "-1", "1e400", ".nan", ".inf", "~", "true", "x", "[]", "{}", "[1, [2]]", "{a: {b: c}}", "!!str 5"),
    *("99999999999999999999", "1e308", "0.0001", "'0ms'", "'1d1d'", "'@reboot'", "'* * * * * * *'", "'0 0 31 2 *'"),
    *("'2026-13-45T99:99:99Z'", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00", "'Z'", "'+01:00'"),
    *("'http://'", "'https://x y'", "'m:f'", "'../../etc/passwd'", "'Etc/GMT+5'", "'UTC '", "'\\0'", "'/'"),
]


def test_no_value_in_any_field_escapes_as_an_exception():
    """Put odd values in random fields of the corpus files: always a result, never a raise."""
    rng = random.Random(7)
    documents = [FULL, BASE] + [c.text for c in INVALID if isinstance(c.text, str)]
    for _ in range(1500):
        lines = rng.choice(documents).splitlines()
        for _ in range(rng.randint(1, 3)):
            index = rng.randrange(len(lines))
            key, colon, _ = lines[index].partition(":")
            if colon:
                lines[index] = f"{key}: {rng.choice(ODD_VALUES)}"
        result = load_text("\n".join(lines), "f.yaml")
        assert result.problems or result.specs


def test_a_load_of_the_changed_names_reads_those_files_alone(tmp_path, monkeypatch):
    for name in ("a", "b", "c"):
        write(tmp_path, f"{name}.yaml", BASE.replace("name: t", f"name: {name}"))
    first = load_directory(tmp_path, known_types=())
    write(tmp_path, "b.yaml", BASE.replace("name: t", "name: b2"))
    os.unlink(tmp_path / "c.yaml")
    write(tmp_path, "0.yaml", BASE.replace("name: t", "name: zero"))
    write(tmp_path, "a.yaml", BASE.replace("name: t", "name: not-looked-at"))  # no event told of it
    reads = counting_reads(monkeypatch)

    second = load_directory(tmp_path, known_types=(), previous=first,
                            changed={"b.yaml", "c.yaml", "0.yaml", ".b.yaml.swp", "notes.txt"})

    assert sorted(reads) == ["0.yaml", "b.yaml"]
    assert [os.path.basename(f.path) for f in second.files] == ["0.yaml", "a.yaml", "b.yaml"]
    assert [s.name for s in second.specs] == ["zero", "a", "b2"]
    assert second.files[1] is first.files[0]
    # A full scan reads them all, and finds what no event told of.
    assert [s.name for s in load_directory(tmp_path, known_types=(), previous=second).specs] == \
        ["zero", "not-looked-at", "b2"]


def test_the_checks_between_files_cover_the_files_not_read_again(tmp_path, monkeypatch):
    write(tmp_path, "a.yaml", BASE.replace("name: t", "name: a") + "dependsOn: [b]\n")
    write(tmp_path, "b.yaml", BASE.replace("name: t", "name: b"))
    write(tmp_path, "c.yaml", BASE.replace("name: t", "name: c"))
    first = load_directory(tmp_path, known_types=())
    assert first.ok
    reads = counting_reads(monkeypatch)

    write(tmp_path, "b.yaml", BASE.replace("name: t", "name: b") + "dependsOn: [a]\n")  # a -> b -> a
    cycle = load_directory(tmp_path, known_types=(), previous=first, changed={"b.yaml"})
    write(tmp_path, "c.yaml", BASE.replace("name: t", "name: a"))  # a name a.yaml declares
    duplicate = load_directory(tmp_path, known_types=(), previous=cycle, changed={"c.yaml"})

    assert reads == ["b.yaml", "c.yaml"]
    assert {(os.path.basename(p.path), p.message.split(":")[0]) for p in cycle.problems} == {
        ("a.yaml", "dependency cycle"), ("b.yaml", "dependency cycle")
    }
    assert [(os.path.basename(p.path), p.message) for p in duplicate.problems if "already" in p.message] == [
        ("c.yaml", f"task name 'a' is already defined in {tmp_path / 'a.yaml'}:1")
    ]


def test_a_file_rewritten_within_one_clock_tick_with_the_same_size_is_read_again(tmp_path):
    """Nothing trusts modification times: a reported change is read, and a full scan reads every file."""
    path = tmp_path / "a.yaml"
    write(tmp_path, "a.yaml", BASE.replace("every: 5m", "every: 1m"))
    stamp = os.stat(path).st_mtime_ns
    first = load_directory(tmp_path, known_types=())
    write(tmp_path, "a.yaml", BASE.replace("every: 5m", "every: 2m"))  # the same size
    os.utime(path, ns=(stamp, stamp))  # and the same time, as within one tick of a coarse clock

    for changed in ({"a.yaml"}, None):
        [spec] = load_directory(tmp_path, known_types=(), previous=first, changed=changed).specs
        assert spec.schedule.every == timedelta(minutes=2)


def test_names_declared_twice_are_counted_file_by_file_across_loads_of_changed_files(tmp_path):
    write(tmp_path, "a.yaml", BASE)
    write(tmp_path, "b.yaml", BASE)  # t again
    first = load_directory(tmp_path, known_types=())
    write(tmp_path, "a.yaml", BASE.replace("name: t", "name: a"))
    write(tmp_path, "b.yaml", BASE.replace("name: t", "name: b"))
    both_renamed = load_directory(tmp_path, known_types=(), previous=first, changed={"a.yaml", "b.yaml"})
    write(tmp_path, "c.yaml", BASE.replace("name: t", "name: a"))
    clash = load_directory(tmp_path, known_types=(), previous=both_renamed, changed={"c.yaml"})

    assert [p.message for p in first.problems] == [f"task name 't' is already defined in {tmp_path / 'a.yaml'}:1"]
    assert both_renamed.ok and dict(both_renamed.index.counts) == {"a": 1, "b": 1}
    assert [p.path for p in clash.problems] == [str(tmp_path / "c.yaml")]
