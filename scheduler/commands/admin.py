"""The admin commands over HTTP, after Apache Unomi's shell: ``task-list``, ``task-show``...

Each command makes one or two API calls to a node and prints the answer: as
text by default, or ``-o json`` / ``-o yaml`` with the API's own JSON shape (for
scripts). The node is ``--url``, else ``SCHEDULER_URL``, else
``http://127.0.0.1:8181``; the token is ``--token``, else ``SCHEDULER_TOKEN``,
else the node's admin token file on this machine (``stateDir/admin.token`` of
the config named by ``SCHEDULER_CONFIG``, or of the default state directory).

Exit codes:
    0  done
    1  the node refused: unknown task, wrong state (the node's message says
       which), files rejected by ``reload``, ``task-purge`` not confirmed
    2  usage error (bad option, bad URL, bad duration)
    3  cannot connect to a scheduler node at the URL
    4  not authenticated (no token, or the node does not accept it) or not
       allowed (a VIEWER token asking for an ADMINISTRATOR action)

Errors are one line on standard error, starting with ``scheduler:``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from ..client import (
    EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, ApiClient, ClientError, resolve_token,
    resolve_url, run_path, task_path,
)
from ..errors import SpecError
from ..selectors import SelectorError, parse_selector
from ..spec import parse_duration
from . import render

Handler = Callable[[ApiClient, argparse.Namespace], Awaitable[int]]
STATUSES = ("SCHEDULED", "WAITING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "CRASHED")
RECENT_RUNS = 10
MAX_RUN_INDEX = 1_000_001  # the API pages up to offset 1,000,000
EPILOG = (
    "Exit codes: 0 done, 1 refused by the node (unknown task, wrong state, rejected files, purge not confirmed), "
    "2 usage error, 3 cannot connect, 4 no token, token not accepted or role not allowed."
)


OUTPUTS = ("table", "json", "yaml")
TASK_LIST_OUTPUTS = ("table", "wide", "name", "json", "yaml")  # wide: more columns; name: one ID a line
NODE_LIST_OUTPUTS = ("table", "name", "json", "yaml")  # its table has every field already: no wide
DATA_OUTPUTS = ("json", "yaml")  # the API's answer as it is


def _common(parser: argparse.ArgumentParser, outputs: tuple[str, ...] = OUTPUTS) -> None:
    parser.add_argument("--url", help="the node's API (default: $SCHEDULER_URL or http://127.0.0.1:8181)")
    parser.add_argument("--token", help="API token (default: $SCHEDULER_TOKEN or this node's admin token file)")
    parser.add_argument("-o", "--output", choices=outputs, default="table", help="default: table (text)")


def _no_headers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-headers", action="store_true", help="no header lines and no footer (for scripts)")


def _print(data: Any, args: argparse.Namespace, text: Callable[[], str]) -> None:
    shown = render.dump(data, args.output) if args.output in DATA_OUTPUTS else text()
    if shown:  # an empty list with -o name or --no-headers prints nothing, not an empty line
        print(shown)


async def _task(client: ApiClient, item_id: str) -> dict[str, Any]:
    return (await client.call("GET", task_path(item_id))).body


# -- handlers -------------------------------------------------------------------------------


def _task_page_text(page: dict[str, Any], args: argparse.Namespace) -> str:
    if args.output == "name":
        return render.names(page["list"], "itemId")
    return render.task_table(
        page["list"], total=page["totalSize"], width=render.terminal_width(),
        wide=args.output == "wide", with_headers=not args.no_headers,
    )


def _warn_if_cut(page: dict[str, Any], args: argparse.Namespace) -> None:
    """Without the footer, say on standard error that tasks were left out: a script would not know."""
    hidden = page["totalSize"] - len(page["list"])
    if hidden > 0 and (args.no_headers or args.output == "name"):
        print(f"scheduler: {hidden} more task(s) not shown: {render.MORE_HINT}", file=sys.stderr)


def _selector(args: argparse.Namespace) -> str | None:
    """``-l`` given once or more: one selector, all terms to hold; checked here as the node would."""
    if not args.selector:
        return None
    text = ",".join(args.selector)
    try:
        parse_selector(text)
    except SelectorError as exc:
        raise ClientError(f"-l/--selector: {exc}", EXIT_USAGE) from None
    return text


async def task_list(client: ApiClient, args: argparse.Namespace) -> int:
    params = {
        "status": args.status, "type": args.type, "labelSelector": _selector(args), "limit": args.limit, "sortBy": args.sort,
    }
    if args.watch is None:
        page = (await client.call("GET", "/cxs/tasks", params)).body
        _print(page, args, lambda: _task_page_text(page, args))
        _warn_if_cut(page, args)
        return EXIT_OK
    if args.output not in ("table", "wide"):
        raise ClientError(f"--watch redraws the table: it cannot be combined with -o {args.output}", EXIT_USAGE)
    # Until Ctrl-C, which ends the command with 130. The signal sets an event rather than cancel
    # the command's task (asyncio.run's way): a cancel that lands as an HTTP request completes can
    # be lost inside the client library, and the watch would then go on for ever.
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    stop = asyncio.ensure_future(interrupted.wait())
    try:
        while not interrupted.is_set():
            request = asyncio.ensure_future(client.call("GET", "/cxs/tasks", params))
            await asyncio.wait({request, stop}, return_when=asyncio.FIRST_COMPLETED)
            if interrupted.is_set():
                request.cancel()
                break
            try:
                body = _task_page_text(request.result().body, args)
            except ClientError as exc:
                if exc.exit_code != EXIT_UNREACHABLE:
                    raise
                body = f"scheduler: {exc.message} (trying again)"  # a node restarting should not end the watch
            now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            sys.stdout.write(f"{render.CLEAR_SCREEN}Every {args.watch:g}s: {client.url}   {now} UTC\n\n{body}\n")
            sys.stdout.flush()
            await asyncio.wait({stop}, timeout=args.watch)
    finally:
        stop.cancel()
        loop.remove_signal_handler(signal.SIGINT)
    return EXIT_INTERRUPTED


async def task_show(client: ApiClient, args: argparse.Namespace) -> int:
    task = await _task(client, args.id)
    runs = (await client.call("GET", task_path(args.id, "runs"), {"limit": RECENT_RUNS})).body["list"]
    declared = (await client.call("GET", task_path(args.id, "declarations"))).body
    _print(
        {**task, "runs": runs, "declarations": declared}, args,
        lambda: render.task_view(task, runs, width=render.terminal_width(), declared=declared),
    )
    return EXIT_OK


async def task_runs(client: ApiClient, args: argparse.Namespace) -> int:
    page = (await client.call("GET", task_path(args.id, "runs"), {"offset": args.offset, "limit": args.limit})).body
    _print(page, args, lambda: render.run_table(args.id, page, width=render.terminal_width()))
    return EXIT_OK


async def task_logs(client: ApiClient, args: argparse.Namespace) -> int:
    run = await _run_record(client, args.id, args.run)
    if args.output != "table":
        print(render.dump(run, args.output))
        return EXIT_OK
    sys.stdout.write(run.get("output") or "")
    if run.get("outcome") is None:  # said apart from the output, which scripts read
        print(f"scheduler: run {run['runId']} is still running: its output is recorded when it ends", file=sys.stderr)
    return EXIT_OK


async def _run_record(client: ApiClient, item_id: str, run: str) -> dict[str, Any]:
    """The run ``run`` names: a runId, or ``N``, the Nth newest (``task-runs`` numbers them so)."""
    if not run.isdigit():
        return (await client.call("GET", run_path(item_id, run))).body
    index = int(run)
    page = (await client.call("GET", task_path(item_id, "runs"), {"offset": index - 1, "limit": 1})).body
    if page["list"]:
        return page["list"][0]
    if not page["totalSize"]:
        raise ClientError(f"Task {item_id} has no recorded run yet", EXIT_REFUSED)
    raise ClientError(f"Task {item_id} has {page['totalSize']} recorded run(s): there is no run #{index}", EXIT_REFUSED)


async def task_cancel(client: ApiClient, args: argparse.Namespace) -> int:
    await client.call("DELETE", task_path(args.id))
    task = await _task(client, args.id)
    _print(task, args, lambda: f"Task {args.id} cancelled: status {task['status']}")
    return EXIT_OK


def _summary(task: dict[str, Any]) -> str:
    text = f"status {task['status']}, next run {render.next_run_text(task)}"
    return text + _held_note(task)


def _held_note(task: dict[str, Any]) -> str:
    """What keeps a task that an action made due from running: a hold, or no live node able to."""
    if task.get("suspended"):
        return f"; it is suspended: it runs once unsuspended (scheduler task-unsuspend {task['itemId']})"
    if task.get("enabled") is False:
        return "; it is disabled (enabled: false in its spec): it runs once its spec enables it"
    reason = render.unrunnable_reason(task)
    return "" if reason is None else f"; {reason}"


async def task_retry(client: ApiClient, args: argparse.Namespace) -> int:
    task = (await client.call("POST", task_path(args.id, "retry"), {"resetFailureCount": args.reset})).body
    reset = ", failure count reset" if args.reset else f", {task['failureCount']} failure(s) so far"
    _print(task, args, lambda: f"Task {args.id} retried: {_summary(task)}{reset}")
    return EXIT_OK


async def task_resume(client: ApiClient, args: argparse.Namespace) -> int:
    task = (await client.call("POST", task_path(args.id, "resume"))).body
    _print(task, args, lambda: f"Task {args.id} resumed from its checkpoint: {_summary(task)}")
    return EXIT_OK


async def task_config(client: ApiClient, args: argparse.Namespace) -> int:
    """Set overrides, clear them (``--clear``), or with no flag show the settings in force (a VIEWER may)."""
    changes = args.max_retries is not None or args.retry_delay is not None
    if args.clear and changes:
        raise ClientError("task-config: --clear cannot be combined with --max-retries or --retry-delay", EXIT_USAGE)
    params: dict[str, Any] = {"maxRetries": args.max_retries}
    if args.retry_delay is not None:
        try:
            delay = parse_duration(args.retry_delay)
        except SpecError as exc:
            raise ClientError(f"--retry-delay: {exc.message}", EXIT_USAGE) from None
        params["retryDelay"] = int(delay.total_seconds() * 1000)  # the API takes milliseconds, as Unomi's
    if args.clear:
        task = (await client.call("DELETE", task_path(args.id, "config"))).body
    elif changes:
        task = (await client.call("PUT", task_path(args.id, "config"), params)).body
    else:
        task = await _task(client, args.id)
    _print(task, args, lambda: render.retry_settings_text(task))
    return EXIT_OK


async def task_run(client: ApiClient, args: argparse.Namespace) -> int:
    task = (await client.call("POST", task_path(args.id, "run"))).body  # refused while the task is held
    reason = render.unrunnable_reason(task)
    if reason is None:
        _print(task, args, lambda: f"Task {args.id} will run now: {_summary(task)}")
    else:
        _print(task, args, lambda: f"Task {args.id} is due now but does not run yet: {reason}")
    return EXIT_OK


async def task_suspend(client: ApiClient, args: argparse.Namespace) -> int:
    task = (await client.call("POST", task_path(args.id, "suspend"))).body
    running = "; its current run finishes normally" if task["status"] == "RUNNING" else ""
    _print(task, args, lambda: (
        f"Task {args.id} suspended: nothing runs it until `scheduler task-unsuspend {args.id}` "
        f"(status {task['status']}{running})"
    ))
    return EXIT_OK


async def task_unsuspend(client: ApiClient, args: argparse.Namespace) -> int:
    task = (await client.call("POST", task_path(args.id, "unsuspend"))).body
    _print(task, args, lambda: f"Task {args.id} unsuspended: {render.unsuspended_text(task)}")
    return EXIT_OK


def _confirmed(question: str) -> bool:
    """Ask on the terminal (standard error, so standard output stays data); no answer (EOF) is no."""
    sys.stderr.write(question)
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not answer:
        sys.stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")


async def task_purge(client: ApiClient, args: argparse.Namespace) -> int:
    scope = f"more than {args.days} day(s) ago" if args.days else "before now"
    if not args.force and not _confirmed(
        f"Delete the tasks that ended (COMPLETED, FAILED, CANCELLED) {scope}, and the run records "
        f"that ended {scope}? [y/N] "
    ):
        raise ClientError("nothing purged (not confirmed; --force skips the question)", EXIT_REFUSED)
    counts = (await client.call("POST", "/-/purge", {"days": args.days})).body
    beyond = counts.get("runsBeyondKeepRuns", 0)
    limits = f", and {beyond} run record(s) beyond their task's keepRuns" if beyond else ""
    _print(counts, args, lambda: (
        f"Purged {counts['tasks']} task(s) and {counts['runs']} run record(s) that ended {scope}{limits}"
    ))
    return EXIT_OK


async def node_list(client: ApiClient, args: argparse.Namespace) -> int:
    page = (await client.call("GET", "/cxs/nodes")).body

    def text() -> str:
        if args.output == "name":
            return render.names(page["list"], "nodeId")
        return render.node_table(page["list"], width=render.terminal_width(), with_headers=not args.no_headers)

    _print(page, args, text)
    return EXIT_OK


async def reload(client: ApiClient, args: argparse.Namespace) -> int:
    report = (await client.call("POST", "/-/reload")).body
    _print(report, args, lambda: render.reload_text(report))
    return EXIT_OK if report["ok"] else EXIT_REFUSED


# -- registration ---------------------------------------------------------------------------


def _run(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            client = ApiClient(resolve_url(args.url), resolve_token(args.token))
            return asyncio.run(handler(client, args))
        except ClientError as exc:
            print(f"scheduler: {exc.message}", file=sys.stderr)
            return exc.exit_code

    return run


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}")
        return value

    return parse


def _run_reference(text: str) -> str:
    if text.isdigit() and not 1 <= int(text) <= MAX_RUN_INDEX:
        raise argparse.ArgumentTypeError(f"a run number goes from 1 (the newest) to {MAX_RUN_INDEX:,}")
    if not text:
        raise argparse.ArgumentTypeError("expected a runId or a run number")
    return text


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError("expected 0.1 to 3600 seconds")
    return value


def register(subparsers: Any) -> None:
    def add(
        name: str, help: str, handler: Handler, with_id: bool = True, outputs: tuple[str, ...] = OUTPUTS
    ) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help, description=help + " (over the node's HTTP API)", epilog=EPILOG)
        if with_id:
            parser.add_argument("id", metavar="ID", help="the task's itemId (the name in its file)")
        _common(parser, outputs)
        parser.set_defaults(handler=_run(handler))
        return parser

    parser = add("task-list", "list tasks", task_list, with_id=False, outputs=TASK_LIST_OUTPUTS)
    _no_headers(parser)
    parser.add_argument("-s", "--status", choices=STATUSES, type=str.upper, help="only tasks in this status")
    parser.add_argument("-t", "--type", help="only tasks of this taskType")
    parser.add_argument(
        "-l", "--selector", action="append", metavar="SELECTOR",
        help="only tasks whose labels match, e.g. team=data,tier!=batch (also ==, key, !key); repeat to add terms",
    )
    parser.add_argument("--limit", type=_at_least(1), default=50, metavar="N", help="at most N tasks (default 50, at most 1000)")
    parser.add_argument("--sort", default="itemId", help="sortBy field[:asc|desc] (default itemId)")
    parser.add_argument(
        "-w", "--watch", type=_interval, nargs="?", const=2.0, metavar="SECONDS", help="redraw every SECONDS (default 2) until Ctrl-C"
    )
    add("task-show", "show every field of a task, its recent runs and its last output", task_show)
    parser = add("task-runs", "list a task's runs, newest first", task_runs)
    parser.add_argument("--limit", type=_at_least(1), default=20, metavar="N", help="at most N runs (default 20, at most 1000)")
    parser.add_argument("--offset", type=_at_least(0), default=0, metavar="N", help="skip the N newest runs (default 0)")
    parser = add("task-logs", "print the output of one of a task's runs (the newest by default)", task_logs)
    parser.add_argument(
        "run", metavar="RUN", nargs="?", default="1", type=_run_reference,
        help="a runId (as task-runs -o json gives it), or N for the Nth newest run as task-runs numbers them (default 1)",
    )
    add("task-cancel", "cancel a task (a running one is stopped)", task_cancel)
    parser = add("task-retry", "retry a FAILED or CANCELLED task now", task_retry)
    parser.add_argument("--reset", action="store_true", help="reset the failure count (a fresh retry budget)")
    add("task-resume", "resume a CRASHED task from its checkpoint", task_resume)
    parser = add("task-config", "show a task's retry settings, override them, or clear the overrides", task_config)
    parser.add_argument("--max-retries", type=_at_least(0), metavar="N")
    parser.add_argument("--retry-delay", metavar="DURATION", help="e.g. 90s, 5m, 1h30m")
    parser.add_argument("--clear", action="store_true", help="remove the overrides: the file's values are in force again")
    add("task-run", "run a task now (refused while it is disabled or suspended)", task_run)
    add("task-suspend", "hold a task: nothing runs it until task-unsuspend (a run in progress finishes)", task_suspend)
    add("task-unsuspend", "end a suspension: missed slots go by the task's missedRuns", task_unsuspend)
    parser = add("task-purge", "delete finished tasks and old run records", task_purge, with_id=False)
    parser.add_argument("--days", type=_at_least(0), default=7, metavar="N", help="that ended more than N days ago (default 7; 0: all)")
    parser.add_argument("--force", action="store_true", help="do not ask for confirmation")
    parser = add("node-list", "list the nodes of the cluster", node_list, with_id=False, outputs=NODE_LIST_OUTPUTS)
    _no_headers(parser)
    add("reload", "make the node rescan its tasks directory now", reload, with_id=False)
