"""``scheduler next FILE|ID [--name NAME] [-n N] [--from TIME]``: when tasks will run.

A TARGET that exists, holds a ``/`` or a ``.`` (a task id holds neither), or is
``-`` (standard input), is a task file or a directory of them, read offline: each of its tasks (or the one ``--name`` picks) as if registered now
(or at ``--from``). Anything else is the id of a task in force, asked of a node
over its API (``--url``, ``--token`` as the admin commands): its next run as
stored, then its slots (after ``--from`` when given).

Each run is listed in the task's time zone and in UTC, with the daylight-saving
rules applied (``scheduler.preview`` says where they moved a run).

Exit codes: 0 listed; 1 an invalid file, no task of that name, or the node
refused (unknown task); 2 usage or I/O error; 3 cannot connect; 4 not
authenticated or not allowed.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from typing import Any

from .. import preview
from ..api import views
from ..client import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, ApiClient, task_path
from . import admin, render, validate


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "next",
        help="list the next fire times of tasks in a file, or of a task in force",
        description=(
            "List the next fire times in the task's time zone and in UTC, daylight-saving rules applied. A FILE "
            "(or directory, or - for stdin) is read offline, each task as if registered now (or at --from); "
            "anything else is the itemId of a task in force, asked of a node over its API."
        ),
        epilog=admin.EPILOG + " For a file: 1 also when it is invalid or holds no task of that --name.",
    )
    parser.add_argument("target", metavar="FILE|ID", help="a task file, a directory of them, - for stdin, or a task's itemId")
    parser.add_argument("-n", "--count", type=_count, default=10, metavar="N", help="how many runs per task (default 10, at most 1000)")
    parser.add_argument("--name", help="only this task of the file")
    parser.add_argument("--from", dest="start", type=_instant, metavar="TIME", help="ISO 8601, e.g. 2027-03-27T00:00:00Z (default: now)")
    admin._common(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if is_path(args.target):
        return _from_files(args)
    if args.name is not None:
        print(f"scheduler: --name picks a task of a file, and there is no file {args.target}", file=sys.stderr)
        return EXIT_USAGE
    return admin._run(_from_node)(args)


def is_path(target: str) -> bool:
    """A file, a directory or standard input; else a task id (an id holds no ``/`` nor ``.``)."""
    return target == "-" or "/" in target or "." in target or os.path.lexists(target)


async def _from_node(client: ApiClient, args: argparse.Namespace) -> int:
    query = {"count": args.count, "from": None if args.start is None else args.start.isoformat()}
    doc = (await client.call("GET", task_path(args.target, "next"), query)).body
    _print([doc], args, doc)
    return EXIT_OK


def _from_files(args: argparse.Namespace) -> int:
    report = validate.Report()
    validate.check_path(args.target, report)
    for error in report.io_errors:
        print(f"scheduler next: {error}", file=sys.stderr)
    if report.io_errors:
        return EXIT_USAGE
    if report.problems:
        for problem in report.problems:
            print(problem, file=sys.stderr)
        print(f"scheduler next: {args.target} is invalid (scheduler validate says the same)", file=sys.stderr)
        return EXIT_REFUSED
    specs = [s for s in report.tasks if args.name in (None, s.name)]
    if not specs:
        names = ", ".join(s.name for s in report.tasks) or "none"
        print(f"scheduler next: no task named {args.name} in {args.target} (its tasks: {names})", file=sys.stderr)
        return EXIT_REFUSED
    registered = args.start or datetime.now(timezone.utc)
    docs = []
    for spec in specs:
        entries = preview.for_new_task(spec.schedule, spec.name, registered, args.count)
        docs.append(views.next_runs(spec.name, spec.schedule, entries, None if entries else "no run"))
    _print(docs, args, docs)
    return EXIT_OK


def _print(docs: list[dict[str, Any]], args: argparse.Namespace, data: Any) -> None:
    """Each task's runs as text, one block per task; or ``data`` as JSON or YAML."""
    if args.output != "table":
        print(render.dump(data, args.output))
        return
    print("\n\n".join(render.next_text(doc, width=render.terminal_width()) for doc in docs))


def _count(text: str) -> int:
    count = admin._at_least(1)(text)
    if count > preview.MAX_COUNT:
        raise argparse.ArgumentTypeError(f"at most {preview.MAX_COUNT}")
    return count


def _instant(text: str) -> datetime:
    try:
        return preview.parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None

