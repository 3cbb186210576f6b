"""The admin commands over HTTP, after Apache Unomi's shell: ``task-list``, ``task-show``...

Exit codes: 0 done; 1 the node refused (unknown task, wrong state, rejected
files on reload); 2 usage error; 3 cannot connect to the node; 4 not
authenticated or not allowed. Errors are one line on standard error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Awaitable, Callable

from ..client import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, ApiClient, ClientError, resolve_token, resolve_url
from ..errors import SpecError
from ..spec import parse_duration
from . import render

Handler = Callable[[ApiClient, argparse.Namespace], Awaitable[int]]
STATUSES = ("SCHEDULED", "WAITING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "CRASHED")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="the node's API (default: $SCHEDULER_URL or http://127.0.0.1:8181)")
    parser.add_argument("--token", help="API token (default: $SCHEDULER_TOKEN or this node's admin token file)")
    parser.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table", help="default: table")


def _print(data: Any, args: argparse.Namespace, text: Callable[[], str]) -> None:
    print(render.dump(data, args.output) if args.output != "table" else text())


# -- handlers -------------------------------------------------------------------------------


async def task_list(client: ApiClient, args: argparse.Namespace) -> int:
    params = {"status": args.status, "type": args.type, "limit": args.limit, "sortBy": args.sort}
    while True:
        page = (await client.call("GET", "/cxs/tasks", params)).body
        if not args.watch:
            _print(page, args, lambda: render.task_table(page["list"]))
            return EXIT_OK
        # Watch mode: redraw in place (clear screen, cursor home) until interrupted.
        sys.stdout.write("\x1b[H\x1b[2J" + render.task_table(page["list"]) + "\n")
        sys.stdout.flush()
        await asyncio.sleep(args.watch)


async def task_show(client: ApiClient, args: argparse.Namespace) -> int:
    task = (await client.call("GET", f"/cxs/tasks/{args.id}")).body
    runs = (await client.call("GET", f"/cxs/tasks/{args.id}/runs", {"limit": 10})).body
    data = {**task, "runs": runs.get("list", [])}

    def text() -> str:
        source = task.get("source") or {}
        location = f"{source.get('path')}:{source.get('line')}" if source.get("line") else source.get("path")
        view = render.fields(
            [
                ("ID", task.get("itemId")),
                ("Type", task.get("taskType")),
                ("Status", task.get("status")),
                ("Description", task.get("description")),
                ("Enabled", task.get("enabled")),
                ("Storage", "Storage" if task.get("persistent", True) else "Memory"),
                ("Node", task.get("node")),
                ("Source", location),
                ("Schedule", task.get("schedule")),
                ("Next Run", render.short_date(task.get("nextScheduledExecution"))),
                ("Last Run", render.short_date(task.get("lastExecutionDate"))),
                ("Failures", task.get("failureCount")),
                ("Successes", task.get("successCount")),
                ("Max Retries", task.get("maxRetries")),
                ("Retry Delay (ms)", task.get("retryDelay")),
                ("Overrides", task.get("overrides")),
                ("Current Step", task.get("currentStep")),
                ("Status Details", task.get("statusDetails")),
                ("Last Error", task.get("lastError")),
                ("Parameters", task.get("parameters")),
                ("Checkpoint", task.get("checkpointData")),
            ]
        )
        rows = [
            (
                render.short_date(r.get("startedAt")), r.get("attempt", ""), r.get("node", ""),
                r.get("outcome") or "running", r.get("exitCode") if r.get("exitCode") is not None else "-",
                (r.get("error") or "")[:60],
            )
            for r in data["runs"]
        ]
        if not rows:
            return view + "\n\nNo runs yet."
        return view + "\n\nRecent runs:\n" + render.table(("Started", "Attempt", "Node", "Outcome", "Exit", "Error"), rows)

    _print(data, args, text)
    return EXIT_OK


async def task_cancel(client: ApiClient, args: argparse.Namespace) -> int:
    await client.call("DELETE", f"/cxs/tasks/{args.id}")
    _print({"itemId": args.id, "status": "CANCELLED"}, args, lambda: f"Task {args.id} cancelled")
    return EXIT_OK


def _action(method: str, path: str, done: str, params: Callable[[argparse.Namespace], dict] = lambda a: {}) -> Handler:
    async def handler(client: ApiClient, args: argparse.Namespace) -> int:
        task = (await client.call(method, path.format(id=args.id), params(args))).body
        next_run = render.short_date(task.get("nextScheduledExecution"))
        _print(task, args, lambda: f"Task {args.id} {done}: status {task.get('status')}, next run {next_run}")
        return EXIT_OK

    return handler


def _config_params(args: argparse.Namespace) -> dict:
    params: dict[str, Any] = {"maxRetries": args.max_retries}
    if args.retry_delay is not None:
        try:
            params["retryDelay"] = int(parse_duration(args.retry_delay).total_seconds() * 1000)
        except SpecError as exc:
            raise ClientError(f"--retry-delay: {exc.message}", EXIT_USAGE) from None
    if params == {"maxRetries": None}:
        raise ClientError("give --max-retries and/or --retry-delay", EXIT_USAGE)
    return params


async def task_purge(client: ApiClient, args: argparse.Namespace) -> int:
    question = (
        f"Purge tasks that ended (COMPLETED, FAILED, CANCELLED) more than {args.days} day(s) ago, "
        f"and run records older than that? [y/N] "
    )
    if not args.force:
        try:
            answer = input(question).strip().lower()
        except EOFError:  # no terminal to ask (a script): never purge by default
            answer = ""
            print()
        if answer not in ("y", "yes"):
            print("Nothing purged.")
            return EXIT_REFUSED
    counts = (await client.call("POST", "/-/purge", {"days": args.days})).body
    _print(counts, args, lambda: f"Purged {counts['tasks']} task(s) and {counts['runs']} run record(s)")
    return EXIT_OK


async def node_list(client: ApiClient, args: argparse.Namespace) -> int:
    nodes = (await client.call("GET", "/cxs/nodes")).body

    def text() -> str:
        rows = [
            (n["nodeId"], "yes" if n.get("executor") else "no", render.short_date(n.get("heartbeat")), n.get("running", 0),
             n.get("version", ""), n.get("listen", ""))
            for n in nodes
        ]
        return render.table(("Node", "Executor", "Heartbeat", "Running", "Version", "Listen"), rows, right=(3,))

    _print(nodes, args, text)
    return EXIT_OK


async def reload(client: ApiClient, args: argparse.Namespace) -> int:
    report = (await client.call("POST", "/-/reload")).body

    def text() -> str:
        lines = [
            f"Reloaded: {report['created']} created, {report['updated']} updated, {report['removed']} removed, "
            f"{report['rejectedFiles']} file(s) rejected"
        ]
        for state in report["files"]:
            lines.extend(f"{e['location']}: {e['message']}" for e in state["errors"])
        return "\n".join(lines)

    _print(report, args, text)
    return EXIT_OK if report.get("ok") else EXIT_REFUSED


# -- registration ---------------------------------------------------------------------------


def _run(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        client = ApiClient(resolve_url(args.url), resolve_token(args.token))
        try:
            return asyncio.run(handler(client, args))
        except ClientError as exc:
            print(f"scheduler: {exc.message}", file=sys.stderr)
            return exc.exit_code

    return run


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def register(subparsers: Any) -> None:
    def add(name: str, help: str, handler: Handler, with_id: bool = True) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help, description=help)
        if with_id:
            parser.add_argument("id", metavar="ID", help="the task's itemId")
        _common(parser)
        parser.set_defaults(handler=_run(handler))
        return parser

    parser = add("task-list", "list tasks", task_list, with_id=False)
    parser.add_argument("-s", "--status", choices=STATUSES, type=str.upper)
    parser.add_argument("-t", "--type", help="only tasks of this taskType")
    parser.add_argument("--limit", type=_positive, default=50, help="at most N tasks (default 50)")
    parser.add_argument("--sort", default="itemId", help="sortBy field[:asc|desc] (default itemId)")
    parser.add_argument("-w", "--watch", type=float, nargs="?", const=2.0, metavar="SECONDS", help="refresh in place")
    add("task-show", "show every field of a task and its recent runs", task_show)
    add("task-cancel", "cancel a task (a running one is stopped)", task_cancel)
    parser = add("task-retry", "retry a FAILED or CANCELLED task", _action("POST", "/cxs/tasks/{id}/retry", "retried",
                 lambda a: {"resetFailureCount": a.reset}))
    parser.add_argument("--reset", action="store_true", help="reset the failure count (a fresh retry budget)")
    add("task-resume", "resume a CRASHED task from its checkpoint", _action("POST", "/cxs/tasks/{id}/resume", "resumed"))
    parser = add("task-config", "override a task's retry settings", _action("PUT", "/cxs/tasks/{id}/config", "updated", _config_params))
    parser.add_argument("--max-retries", type=int, metavar="N")
    parser.add_argument("--retry-delay", metavar="DURATION", help="e.g. 90s, 5m")
    add("task-run", "run a task now", _action("POST", "/cxs/tasks/{id}/run", "will run now"))
    parser = add("task-purge", "delete old finished tasks and run records", task_purge, with_id=False)
    parser.add_argument("--days", type=_positive, default=7, help="older than N days (default 7)")
    parser.add_argument("--force", action="store_true", help="do not ask for confirmation")
    add("node-list", "list the nodes of the cluster", node_list, with_id=False)
    add("reload", "make the node rescan its tasks directory now", reload, with_id=False)
