"""``scheduler validate`` as a user runs it: a real process, its output and exit code."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.task_corpus import BASE, INVALID, _bomb

ROOT = Path(__file__).resolve().parents[2]
VALID, INVALID_EXIT, USAGE = 0, 1, 2


def validate(*args, stdin=None):
    process = subprocess.run(
        [sys.executable, "-m", "scheduler", "validate", *map(str, args)],
        cwd=ROOT,
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        timeout=60,
    )
    stdout, stderr = process.stdout.decode(), process.stderr.decode()
    assert "Traceback" not in stderr + stdout
    return process.returncode, stdout, stderr


def test_the_examples_are_valid():
    code, stdout, stderr = validate("examples/tasks.d")
    assert (code, stdout) == (VALID, "")
    assert stderr.endswith("file(s): valid\n")
    assert int(stderr.split()[0]) >= 7  # tasks found


def test_every_corpus_file_is_reported_with_its_location(tmp_path):
    """The whole invalid corpus in one run: one located line per file, exit 1."""
    expected = {}
    for case in INVALID:
        path = tmp_path / f"{case.id}.yaml"
        path.write_bytes(case.text if isinstance(case.text, bytes) else case.text.encode())
        expected[str(path)] = case
    code, stdout, _ = validate(*expected)
    assert code == INVALID_EXIT
    lines = stdout.splitlines()
    assert len(lines) == len(INVALID)
    for line in lines:
        path, where, message = line.split(":", 1)[0], line.split(": ", 1)[0], line.split(": ", 1)[1]
        case = expected.pop(path)
        assert where == f"{path}:{case.line}:{case.col}" and case.message in message, case.id
    assert expected == {}


@pytest.mark.parametrize(
    "case_id", ["syntax-indentation", "python-object-tag", "unknown-field", "cron-range", "alias-bomb"]
)
def test_a_single_bad_file_exits_1(tmp_path, case_id):
    [case] = [c for c in INVALID if c.id == case_id]
    path = tmp_path / "task.yaml"
    path.write_text(case.text)
    code, stdout, stderr = validate(path)
    assert code == INVALID_EXIT
    assert stdout.startswith(f"{path}:{case.line}:{case.col}: ") and case.message in stdout
    assert stderr.endswith(": 1 problem(s) in 1 file(s)\n")


def test_standard_input():
    assert validate("-", stdin=BASE)[0] == VALID
    code, stdout, _ = validate("-", stdin=BASE + "enabled: yes\n")
    assert code == INVALID_EXIT
    assert stdout.startswith("<stdin>:8:10: enabled: expected true or false")


def test_a_file_without_extension_is_read(tmp_path):
    """Ansible's `validate: scheduler validate %s` passes a temporary file without .yaml."""
    good, bad = tmp_path / "tmpa1b2c3", tmp_path / "tmpd4e5f6"
    good.write_text(BASE)
    bad.write_text(BASE.replace("every: 5m", "every: often"))
    assert validate(good)[0] == VALID
    code, stdout, _ = validate(bad)
    assert (code, stdout.split(": ")[0]) == (INVALID_EXIT, f"{bad}:5:10")


def test_a_directory_skips_ignored_names(tmp_path):
    (tmp_path / "task.yaml").write_text(BASE)
    for name in (".ansible_tmpXYZ.yaml", "foo.yaml~", "x.swp", "README.txt", "old.yaml.dpkg-old"):
        (tmp_path / name).write_text("broken: [")
    code, stdout, stderr = validate(tmp_path)
    assert (code, stdout, stderr) == (VALID, "", "1 task(s) in 1 file(s): valid\n")


def test_a_directory_reports_names_defined_twice(tmp_path):
    (tmp_path / "a.yaml").write_text(BASE)
    (tmp_path / "b.yaml").write_text(BASE)
    code, stdout, _ = validate(tmp_path)
    assert code == INVALID_EXIT
    assert stdout == f"{tmp_path}/b.yaml:1:1: task name 't' is already defined in {tmp_path}/a.yaml:1\n"


def test_a_dependency_cycle_across_files_is_reported_at_each_dependson_line(tmp_path):
    def task(name: str, depends_on: str) -> str:
        return BASE.replace("name: t", f"name: {name}") + f"labels: {{team: data}}\ndependsOn: [{depends_on}]\n"

    (tmp_path / "a.yaml").write_text(task("export", "report"))
    (tmp_path / "b.yaml").write_text(task("transform", "export") + "---\n" + task("report", "transform, elsewhere"))
    (tmp_path / "c.yaml").write_text(task("loner", "loner"))
    code, stdout, _ = validate(tmp_path)

    assert code == INVALID_EXIT
    assert sorted(stdout.splitlines()) == sorted([
        f"{tmp_path}/a.yaml:9:1: dependency cycle: export -> report -> transform -> export: none of these tasks could ever run",
        f"{tmp_path}/b.yaml:9:1: dependency cycle: transform -> export -> report -> transform: none of these tasks could ever run",
        f"{tmp_path}/b.yaml:19:1: dependency cycle: report -> transform -> export -> report: none of these tasks could ever run",
        f"{tmp_path}/c.yaml:9:13: dependsOn[0]: task 'loner' cannot depend on itself",
    ])


def test_a_chain_loop_and_a_task_following_itself_are_reported(tmp_path):
    def chain(name: str, parent: str) -> str:
        return BASE.replace("name: t", f"name: {name}").replace("every: 5m", f"afterSuccessOf: {parent}")

    assert "every: 5m" in BASE
    (tmp_path / "chains.yaml").write_text("---\n".join([chain("a", "b"), chain("b", "a"), chain("c", "c")]))
    code, stdout, _ = validate(tmp_path)

    assert code == INVALID_EXIT
    problems = sorted(line.split(": ", 1)[1] for line in stdout.splitlines())
    assert problems == [
        "dependency cycle: a -> b -> a: none of these tasks could ever run",
        "dependency cycle: b -> a -> b: none of these tasks could ever run",
        "schedule.afterSuccessOf: task 'c' cannot follow itself",
    ]


def test_json_output(tmp_path):
    (tmp_path / "good.yaml").write_text(BASE)
    (tmp_path / "bad.yaml").write_text(BASE.replace("name: t", "name: u") + "runOn: some\n")
    code, stdout, stderr = validate("-o", "json", tmp_path)
    report = json.loads(stdout)
    assert code == INVALID_EXIT and stderr == ""
    assert report["valid"] is False and report["tasks"] == ["t"] and report["errors"] == []
    assert [(Path(f["path"]).name, f["tasks"], f["valid"]) for f in report["files"]] == [
        ("bad.yaml", [], False),
        ("good.yaml", ["t"], True),
    ]
    assert len(report["files"][1]["sha256"]) == 64
    assert report["problems"] == [
        {
            "path": f"{tmp_path}/bad.yaml",
            "line": 8,
            "col": 8,
            "pointer": "/runOn",
            "message": "runOn: expected one of any, all, got string 'some'",
        }
    ]


def test_json_output_of_valid_input():
    code, stdout, _ = validate("--output", "json", "-", stdin=BASE)
    assert code == VALID and json.loads(stdout)["valid"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "the following arguments are required: PATH"),
        (("-o", "xml", "x.yaml"), "invalid choice: 'xml'"),
        (("--frobnicate", "x.yaml"), "unrecognized arguments: --frobnicate"),
    ],
)
def test_usage_errors_exit_2(args, message):
    code, stdout, stderr = validate(*args)
    assert (code, stdout) == (USAGE, "")
    assert message in stderr


def test_a_missing_path_exits_2_even_beside_valid_files(tmp_path):
    (tmp_path / "t.yaml").write_text(BASE)
    code, stdout, stderr = validate(tmp_path / "t.yaml", tmp_path / "nope.yaml")
    assert (code, stdout) == (USAGE, "")
    assert f"scheduler validate: {tmp_path}/nope.yaml: no such file or directory" in stderr


def test_an_unreadable_file_in_a_directory_exits_2(tmp_path):
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "gone.yaml")
    code, _, stderr = validate(tmp_path)
    assert code == USAGE and f"dangling.yaml: cannot read: dangling symbolic link to {tmp_path / 'gone.yaml'}" in stderr


MEASURE = textwrap.dedent(
    """
    import resource, sys
    from scheduler.loader import load_text
    text = sys.stdin.read()
    load_text("a: 1", "warm-up")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = load_text(text, "bomb.yaml")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(after - before, result.problems[0].message)
    """
)


def test_an_alias_bomb_is_refused_in_bounded_memory():
    """Thirty levels of nine aliases: 9**30 nodes if expanded; refused after 10,000."""
    process = subprocess.run(
        [sys.executable, "-c", MEASURE], cwd=ROOT, input=_bomb(30), capture_output=True, text=True, timeout=60
    )
    grown_kib, message = process.stdout.split(" ", 1)
    assert message.startswith("document too large: more than 10000 nodes")
    assert int(grown_kib) < 16 * 1024
