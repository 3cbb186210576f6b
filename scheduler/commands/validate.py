"""``scheduler validate PATH... | - [--config FILE]``: check task files offline.

A PATH is a file (read whatever its name: Ansible's ``validate:`` passes a
temporary file without an extension), a directory (its task files, plus the checks
between them), or ``-`` for standard input. Every problem is printed, one per line
as ``path:line:col: message`` on standard output; a one-line summary goes to
standard error. Exit 0 valid, 1 invalid, 2 usage or I/O error.

``--check-imports`` also imports every ``python:`` target, each module in a
child process of its own, killed after ``--import-timeout`` seconds
(``scheduler.importcheck``): a typo in a module or function name is reported
at the line of its ``python:`` key, like any other problem, instead of failing
the task's first run.

``--config FILE`` also checks a node configuration (``scheduler.yaml``) as
``scheduler run`` reads it: the systemd unit runs it before every start, and
Ansible as the ``validate:`` of the config template.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import importcheck, loader, yamlsafe
from ..config import load_config
from ..errors import ConfigError
from ..loader import FileResult, Problem
from ..spec import TaskSpec

STDIN_NAME = "<stdin>"
EXIT_VALID, EXIT_INVALID, EXIT_IO = 0, 1, 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check task files without running anything",
        description=(
            "Check task files offline. PATH is a file (whatever its name), a directory (its *.yaml and *.yml "
            "files, and names unique across them) or - for standard input. Problems are printed as "
            "path:line:col: message. Exit 0 valid, 1 invalid, 2 usage or I/O error."
        ),
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="a task file, a directory of them, or - for stdin")
    parser.add_argument(
        "--config", action="append", default=[], metavar="FILE", help="also check a node configuration file (scheduler.yaml)"
    )
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="default: text")
    parser.add_argument(
        "--check-imports", action="store_true",
        help="also import each python: target, in a child process of its own, as a node started here would",
    )
    parser.add_argument(
        "--import-timeout", type=_timeout, default=importcheck.DEFAULT_TIMEOUT, metavar="SECONDS",
        help=f"with --check-imports: the longest a module's import may take (default {importcheck.DEFAULT_TIMEOUT:g})",
    )
    parser.set_defaults(handler=run)


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("expected more than 0 and at most 3600 seconds")
    return value


@dataclass
class Report:
    """What the PATH arguments hold, gathered before anything is printed."""

    files: list[FileResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    io_errors: list[str] = field(default_factory=list)
    tasks: list[TaskSpec] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)  # --config files checked
    unreadable_configs: int = 0
    config_errors: list[str] = field(default_factory=list)  # one message per invalid file, naming it
    checked_tasks: bool = True  # False when only --config was given
    stdin: bytes | None = None  # what "-" read, to locate what later checks find in it

    def add(self, files: tuple[FileResult, ...], between: tuple[Problem, ...], tasks: tuple[TaskSpec, ...]) -> None:
        self.files.extend(files)
        self.problems.extend(p for f in files if not f.io_error for p in f.problems)
        self.problems.extend(between)
        self.io_errors.extend(f"{f.path}: cannot read: {f.io_error}" for f in files if f.io_error)
        self.tasks.extend(tasks)


def run(args: argparse.Namespace) -> int:
    if not args.paths and not args.config:
        print("scheduler validate: error: the following arguments are required: PATH (or --config FILE)", file=sys.stderr)
        return EXIT_IO
    report = Report(checked_tasks=bool(args.paths))
    for path in args.config:
        _check_config(path, report)
    for target in args.paths:
        check_path(target, report)
    if args.check_imports:
        _check_imports(report, args.import_timeout)
    if args.output == "json":
        _print_json(report)
    else:
        _print_text(report)
    if report.io_errors:
        return EXIT_IO
    return EXIT_INVALID if report.problems or report.config_errors else EXIT_VALID


def _check_config(path: str, report: Report) -> None:
    report.configs.append(path)
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        report.io_errors.append(f"{path}: no such file or not readable")
        report.unreadable_configs += 1
        return
    try:
        load_config(Path(path), env={})  # the file alone: no SCHEDULER_* overrides
    except ConfigError as exc:
        report.config_errors.append(exc.message)


def check_path(target: str, report: Report) -> None:
    if target == "-":
        if sys.stdin is None:
            report.io_errors.append("cannot read standard input: it is closed")
            return
        report.stdin = sys.stdin.buffer.read(yamlsafe.MAX_FILE_BYTES + 1)
        result = loader.load_bytes(report.stdin, STDIN_NAME)
        report.add((result,), (), result.specs)
    elif os.path.isdir(target):
        try:
            directory = loader.load_directory(target)
        except OSError as exc:
            report.io_errors.append(f"{target}: cannot list directory: {exc.strerror or exc}")
            return
        report.add(directory.files, directory.problems, directory.specs)
    elif not os.path.lexists(target):
        report.io_errors.append(f"{target}: no such file or directory")
    else:
        result = loader.load_file(target)
        report.add((result,), (), result.specs)


def _check_imports(report: Report, timeout: float) -> None:
    """A problem at the ``python:`` key of each valid task whose target a node could not import."""
    specs = [s for s in report.tasks if s.run is not None and s.run.python and s.source is not None]
    errors = importcheck.check({s.run.python for s in specs}, timeout) if specs else {}
    texts: dict[str, bytes | None] = {}
    found = []
    for spec in specs:
        error = errors[spec.run.python]
        if error is None:
            continue
        path, line = spec.source.path, spec.source.line
        if path not in texts:
            texts[path] = report.stdin if path == STDIN_NAME else _read(path)
        data = texts[path]
        line, col = (line, 1) if data is None else loader.locate_key(data, line, "/run/python")
        found.append(Problem(path, line, col, "/run/python", error))
    report.problems.extend(sorted(found))


def _read(path: str) -> bytes | None:
    try:
        return loader.read_regular_file(path, yamlsafe.MAX_FILE_BYTES + 1)
    except OSError:
        return None


def _print_text(report: Report) -> None:
    for error in report.config_errors:
        print(error)
    for problem in report.problems:
        print(problem)
    for error in report.io_errors:
        print(f"scheduler validate: {error}", file=sys.stderr)
    parts = []
    if report.configs:
        verdict = "valid"
        if report.config_errors or report.unreadable_configs:
            verdict = f"{len(report.config_errors)} invalid, {report.unreadable_configs} unreadable"
        parts.append(f"{len(report.configs)} configuration file(s): {verdict}")
    if report.checked_tasks:
        summary = f"{len(report.tasks)} task(s) in {len(report.files)} file(s)"
        if report.problems:
            summary += f": {len(report.problems)} problem(s) in {len({p.path for p in report.problems})} file(s)"
        elif not report.io_errors:
            summary += ": valid"
        parts.append(summary)
    print("; ".join(parts), file=sys.stderr)


def _print_json(report: Report) -> None:
    bad_paths = {p.path for p in report.problems}
    document = {
        "valid": not report.problems and not report.io_errors and not report.config_errors,
        "tasks": [s.name for s in report.tasks],
        "files": [
            {
                "path": f.path,
                "sha256": f.sha256,
                "tasks": [s.name for s in f.specs],
                "valid": f.path not in bad_paths and not f.io_error,
            }
            for f in report.files
        ],
        "problems": [p.to_dict() for p in report.problems],
        "errors": report.io_errors,
        "configErrors": report.config_errors,
    }
    print(json.dumps(document, indent=2))
