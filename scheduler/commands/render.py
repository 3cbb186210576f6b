"""Terminal rendering for the admin commands: Unomi-style tables, key/value views, JSON and YAML.

Everything here is a pure function of the API's JSON (and of a width and a
"now" where they matter), so the layout is tested without a node.
"""

from __future__ import annotations

import json
import shlex
import shutil
import textwrap
from datetime import datetime, timezone
from typing import Any, Callable, Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from ..errors import SpecError
from ..schedule import is_missed
from ..spec import Schedule
from .tables import Column, columns_fit, columns_table, table

TEXT_FLOOR = 12  # below this, a type is hard to read: switch the dates to relative ones first
CLEAR_SCREEN = "\x1b[H\x1b[2J"  # cursor home, erase display: watch mode redraws in place


def terminal_width() -> int | None:
    """``COLUMNS`` or the terminal's width; None (no limit) when the output is not a terminal."""
    return shutil.get_terminal_size((0, 0)).columns or None


def parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def short_date(value: str | None) -> str:
    """``2025-02-12T08:31:25.120Z`` -> ``2025-02-12 08:31:25`` (UTC), ``-`` when absent."""
    moment = parse_date(value)
    if moment is None:
        return value or "-"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def relative_date(value: str | None, now: datetime) -> str:
    """``in 5m``, ``3h ago``, ``now`` (the largest unit, rounded down): short, for narrow terminals."""
    moment = parse_date(value)
    if moment is None:
        return value or "-"
    seconds = (moment - now).total_seconds()
    if abs(seconds) < 1:
        return "now"
    amount = duration_text(abs(seconds), units=1)
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def duration_text(seconds: float, units: int = 2) -> str:
    """``5400`` -> ``1h30m``; ``0.25`` -> ``250ms``; at most ``units`` units, larger ones first."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms" if seconds else "0s"
    parts = []
    remaining = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if remaining >= size and len(parts) < units:
            parts.append(f"{remaining // size}{unit}")
            remaining %= size
    return "".join(parts)


def schedule_text(schedule: dict[str, Any] | None) -> str:
    """The API's schedule object as a line: ``every 1h (fixed rate), jitter 30s``."""
    if not schedule:
        return "-"
    if "cron" in schedule:
        text = f"cron {schedule['cron']} ({schedule.get('timezone', 'UTC')})"
    elif "every" in schedule:
        text = f"every {duration_text(schedule['every'])} ({'fixed rate' if schedule.get('fixedRate') else 'fixed delay'})"
        if schedule.get("initialDelay"):
            text += f", first after {duration_text(schedule['initialDelay'])}"
    elif "at" in schedule:
        text = f"once at {short_date(schedule['at'])}"
    else:
        text = f"once, {duration_text(schedule.get('after', 0))} after registration"
    if schedule.get("jitter"):
        text += f", jitter {duration_text(schedule['jitter'])}"
    return text


def missed_runs_text(schedule: dict[str, Any] | None) -> str | None:
    """``skip, past 15m late`` (with a ``missedRunGrace``), ``runOnce``: what becomes of a late slot."""
    if not schedule or not schedule.get("missedRuns"):
        return None
    grace = schedule.get("missedRunGrace")
    return schedule["missedRuns"] + ("" if grace is None else f", past {duration_text(grace)} late")


def labels_text(labels: dict[str, str] | None) -> str:
    """``team=data,tier=batch``, as a label selector would match them; ``-`` when none."""
    return ",".join(f"{key}={value}" for key, value in sorted((labels or {}).items())) or "-"


def run_text(run: dict[str, Any] | None) -> str | None:
    """What the task runs, from the API's ``run``: ``command: backup --full``, ``http: POST https://...``."""
    if not run:
        return None
    if "command" in run:
        return f"command: {shlex.join(run['command'])}"
    if "shell" in run:
        script = run["shell"].rstrip("\n")
        return "shell:\n" + textwrap.indent(script, "  ") if "\n" in script else f"shell: {script}"
    if "http" in run:
        return f"http: {run['http']['method']} {run['http']['url']}"
    return f"python: {run['python']}"


def held_text(task: dict[str, Any]) -> str | None:
    """Why nothing runs the task (``disabled``, ``suspended`` or both), or None when nothing holds it."""
    reasons = [reason for reason, holds in (("disabled", task.get("enabled") is False), ("suspended", task.get("suspended")))
               if holds]
    return ", ".join(reasons) or None


def next_run_text(task: dict[str, Any], date: Callable[[str | None], str] = short_date) -> str:
    """The Next Run cell: a date, ``-`` when none is planned, or what holds the task (it runs nothing)."""
    return held_text(task) or date(task.get("nextScheduledExecution"))


TASK_COLUMNS = (
    Column("ID", lambda t, date: t.get("itemId", "")),
    Column("Type", lambda t, date: t.get("taskType", "")),
    Column("Status", lambda t, date: t.get("status", "")),
    Column("Next Run", next_run_text),
    Column("Last Run", lambda t, date: date(t.get("lastExecutionDate"))),
    Column("Failures", lambda t, date: t.get("failureCount", 0), right=True),
    Column("Persistent", lambda t, date: "Storage" if t.get("persistent", True) else "Memory"),
)
WIDE_TASK_COLUMNS = TASK_COLUMNS + (  # -o wide: after the usual ones, so that their positions stay
    Column("Successes", lambda t, date: t.get("successCount", 0), right=True),
    Column("Last Outcome", lambda t, date: t.get("lastOutcome") or "-"),
    Column("Node", lambda t, date: t.get("node") or "-"),
    Column("Labels", lambda t, date: labels_text(t.get("labels"))),
)
TASK_SHRINK = ("Type", "Labels")
MORE_HINT = "raise --limit or filter with -s, -t or -l"
# On a narrow terminal, the columns left out first; the ID and the status always stay.
TASK_DROP = ("Persistent", "Successes", "Node", "Last Run", "Failures", "Last Outcome", "Labels", "Type", "Next Run")


def task_table(
    tasks: list[dict[str, Any]],
    *,
    total: int | None = None,
    width: int | None = None,
    now: datetime | None = None,
    wide: bool = False,
    with_headers: bool = True,
) -> str:
    """Unomi's ``task-list`` table and footer, fitted to ``width`` (``wide``: with more columns).

    Dates are absolute (UTC) when every column fits; on a narrow terminal they
    become relative (``in 5m``, ``2h ago``), then the Type and Labels columns are
    cut and columns left out (``TASK_DROP``); IDs are never cut. Without headers,
    no footer either: the lines are the tasks only.
    """
    columns = WIDE_TASK_COLUMNS if wide else TASK_COLUMNS
    moment = now or datetime.now(timezone.utc)

    def relative(value: str | None) -> str:
        return relative_date(value, moment)

    absolute = columns_fit(columns, tasks, short_date, shrink=TASK_SHRINK, width=width, floor=TEXT_FLOOR)
    date = short_date if absolute else relative
    text = columns_table(
        columns, tasks, date, shrink=TASK_SHRINK, drop=TASK_DROP, width=width, with_headers=with_headers
    )
    if not with_headers:
        return text
    stored = sum(1 for t in tasks if t.get("persistent", True))
    lines = [text, f"Showing {len(tasks)} task(s) ({stored} in storage, {len(tasks) - stored} in memory)"]
    if total is not None and total > len(tasks):
        lines.append(f"{total - len(tasks)} more task(s) not shown: {MORE_HINT}")
    return "\n".join(lines)



def names(items: list[dict[str, Any]], key: str) -> str:
    """``-o name``: one id per line, nothing else."""
    return "\n".join(str(item[key]) for item in items)


def task_view(
    task: dict[str, Any], runs: list[dict[str, Any]], width: int | None = None, declared: dict[str, Any] | None = None
) -> str:
    """``task-show``: every field of the task, the nodes declaring it, its recent runs and the newest run's output."""
    source = task.get("source") or {}
    location = f"{source.get('path')}:{source.get('line')}" if source.get("line") else source.get("path")
    overrides = task.get("overrides") or {}
    retry_delay = task.get("retryDelay")
    lease = task.get("lease")
    view = fields(
        [
            ("ID", task.get("itemId")),
            ("Type", task.get("taskType")),
            ("Status", task.get("status")),
            ("Description", task.get("description") or None),
            ("Enabled", "no: enabled: false in its spec, nothing runs it" if task.get("enabled") is False
             else _yes_no(task.get("enabled"))),
            ("Suspended", suspended_text(task)),
            ("Persistent", "Storage" if task.get("persistent", True) else "Memory"),
            ("Node", task.get("node")),
            ("Executor Type", task.get("executorType")),
            ("Runnable", runnable_text(task)),
            ("Depends On", ", ".join(task.get("dependsOn") or ()) or None),
            ("Waiting On", ", ".join(task.get("waitingOnTasks") or ()) or None),
            ("Labels", task.get("labels")),
            ("Source", location),
            ("Schedule", schedule_text(task.get("schedule"))),
            ("Missed Runs", missed_runs_text(task.get("schedule"))),
            ("Run", run_text(task.get("run"))),
            ("Timeout", _timeout_text(task.get("run"))),
            ("Concurrency", task.get("concurrency")),
            ("On Crash", task.get("onCrash")),
            ("Next Run", next_run_text(task)),
            ("Last Run", short_date(task.get("lastExecutionDate"))),
            ("Last Finish", short_date(task.get("lastFinishDate"))),
            ("Last Success", short_date(task.get("lastSuccessDate"))),
            ("Created", short_date(task.get("creationDate"))),
            ("Modified", short_date(task.get("lastModified"))),
            ("Attempt", task.get("attempt")),
            ("Failures", task.get("failureCount")),
            ("Successes", task.get("successCount")),
            ("Max Retries", _overridden(task.get("maxRetries"), "maxRetries" in overrides)),
            ("Retry Delay", _overridden(None if retry_delay is None else duration_text(retry_delay / 1000), "retryDelay" in overrides)),
            ("Lease", None if not lease else f"{lease['owner']} until {short_date(lease['until'])} (fence {lease['fence']})"),
            ("Current Step", task.get("currentStep")),
            ("Status Details", task.get("statusDetails")),
            ("Last Error", task.get("lastError")),
            ("Parameters", task.get("parameters")),
            ("Checkpoint", task.get("checkpointData")),
            ("Declared By", declarations_text(declared)),
        ]
    )
    if not runs:
        return view + "\n\nNo runs yet."
    rows = [_run_cells(r) for r in runs]
    text = view + "\n\nRecent runs (newest first):\n" + table(RUN_HEADERS, rows, right=(1, 4, 5), shrink=(2, 6), width=width)
    newest = runs[0]
    if newest.get("output"):
        tail = "\n".join("  " + line for line in newest["output"].rstrip("\n").splitlines()[-10:])
        text += f"\n\nOutput of the newest run ({newest.get('runId')}), last lines:\n{tail}"
    return text


RUN_HEADERS = ("Started", "Attempt", "Node", "Outcome", "Duration", "Exit", "Error")


def _run_cells(run: dict[str, Any]) -> tuple[Any, ...]:
    """A run record as the cells of ``RUN_HEADERS``."""
    return (
        short_date(run.get("startedAt")),
        run.get("attempt", ""),
        run.get("node", ""),
        run.get("outcome") or "running",
        "-" if run.get("durationMs") is None else duration_text(run["durationMs"] / 1000),
        "-" if run.get("exitCode") is None else run["exitCode"],
        run.get("error") or "",
    )


def run_table(item_id: str, page: dict[str, Any], width: int | None = None) -> str:
    """``task-runs``: a page of run records, newest first, numbered as ``task-logs`` takes them (1: the newest)."""
    runs, offset, total = page["list"], page["offset"], page["totalSize"]
    if not runs:
        return f"No runs recorded for task {item_id}" + (f" from #{offset + 1} on ({total} in all)" if total else "")
    rows = [(offset + i + 1, short_date(r.get("scheduledFor")), *_run_cells(r)) for i, r in enumerate(runs)]
    headers = ("#", "Slot", *RUN_HEADERS)
    lines = [
        table(headers, rows, right=(0, 3, 6, 7), shrink=(4, 8), width=width),
        f"Showing runs #{offset + 1}-#{offset + len(runs)} of {total}, newest first; "
        f"scheduler task-logs {item_id} N prints the output of run #N",
    ]
    return "\n".join(lines)


def next_text(doc: dict[str, Any], width: int | None = None) -> str:
    """``scheduler next``: a task's schedule, then its next fire times in its time zone and in UTC, and notes."""
    title = f"{doc['itemId']}: {schedule_text(doc.get('schedule'))}"
    if not doc["list"]:
        return f"{title}\nNo next run: {doc.get('reason') or 'none'}"
    zone = doc.get("timezone") or "UTC"
    local = zone != "UTC"
    rows = []
    for index, entry in enumerate(doc["list"], 1):
        cells = [index, _local_time(entry, zone)] if local else [index]
        rows.append([*cells, short_date(entry["fireTime"]), entry.get("note") or ""])
    headers = ["#", zone, "UTC", "Note"] if local else ["#", "UTC", "Note"]
    if any(entry.get("note") for entry in doc["list"]):
        return f"{title}\n" + table(headers, rows, right=(0,), shrink=(len(headers) - 1,), width=width)
    return f"{title}\n" + table(headers[:-1], [row[:-1] for row in rows], right=(0,), width=width)


def _local_time(entry: dict[str, Any], zone: str) -> str:
    """``2027-03-28 03:00:00 CEST``: the zone's abbreviation when this machine knows the zone, else the offset."""
    moment = parse_date(entry["local"])
    if moment is None:
        return entry["local"]
    try:
        moment = moment.astimezone(ZoneInfo(zone))
    except (ZoneInfoNotFoundError, ValueError):
        return moment.strftime("%Y-%m-%d %H:%M:%S %z")
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


def suspended_text(task: dict[str, Any]) -> str | None:
    if not task.get("suspended"):
        return None
    return (f"since {short_date(task.get('suspendedAt'))}: nothing runs it until "
            f"`scheduler task-unsuspend {task.get('itemId')}`")


def unsuspended_text(task: dict[str, Any]) -> str:
    """What follows an unsuspend: when the task runs next, and what becomes of the slots it missed."""
    if task.get("enabled") is False:
        return "it is still disabled (enabled: false in its spec): nothing runs it until its spec enables it"
    due = parse_date(task.get("nextScheduledExecution"))
    now = parse_date(task.get("lastModified"))  # the node's time of the unsuspend
    if due is None:
        return f"status {task.get('status')}, nothing to run"
    schedule = task.get("schedule") or {}
    if "afterSuccessOf" in schedule:
        return f"it runs once {schedule['afterSuccessOf']} has succeeded since its last run (at once if it has)"
    if task.get("waitingOnTasks"):
        return f"status {task.get('status')}: it waits for {', '.join(task['waitingOnTasks'])} (dependsOn), then runs"
    if now is None or due > now:
        return f"next run {short_date(task['nextScheduledExecution'])}"
    since = short_date(task["nextScheduledExecution"])
    missed = schedule.get("missedRuns", "runOnce")
    if task.get("status") != "SCHEDULED" or "at" in schedule or "after" in schedule:
        return f"it was due at {since}: it runs now"
    if missed == "runAll":
        return f"every slot missed since {since} runs now, oldest first (missedRuns: runAll)"
    if missed == "skip" and _too_late(schedule, due, now):
        return f"the slot of {since} is skipped, too late (missedRuns: skip); then it keeps to its schedule"
    return f"the slot of {since} runs now, once for all the slots missed (missedRuns: {missed})"


def _too_late(schedule: dict[str, Any], due: datetime, now: datetime) -> bool:
    """Whether the node skips a slot due at ``due`` when it claims it at ``now`` (``schedule.is_missed``)."""
    try:
        return is_missed(Schedule.from_dict(schedule), due, now)
    except SpecError:  # a schedule this client cannot read (a newer node): say it runs, as most do
        return False


def runnable_text(task: dict[str, Any]) -> str | None:
    """Whether a live node can run the task, and what it waits for when none can."""
    if task.get("runnable") is None:
        return None
    reason = unrunnable_reason(task)
    return "yes" if reason is None else f"no: {reason}"


def unrunnable_reason(task: dict[str, Any]) -> str | None:
    """Why no live node can run the task (it waits), or None when one can (or the answer does not say)."""
    if task.get("runnable") is not False:
        return None
    if task.get("executorType"):
        return f"no live node has an executor for type {task['executorType']} (the task waits for one)"
    return "none of the nodes it may run on is live (the task waits for one)"


def declarations_text(declared: dict[str, Any] | None) -> list[str] | None:
    """One line per node declaring the task: the spec it holds (hash prefix), in force or not, since when."""
    if not declared or not declared.get("declarations"):
        return None
    lines = []
    for d in declared["declarations"]:
        source = d.get("source") or {}
        where = f"{source.get('path')}:{source.get('line')}" if source else "?"
        state = "in force" if d.get("inForce") else "NOT in force"
        live = "" if d.get("live", True) else ", node not live"
        lines.append(f"{d['node']}: spec {d['specHash'][:12]} ({state}{live}) since {short_date(d.get('since'))}, {where}")
    if declared.get("diverged"):
        lines.append("the live nodes disagree: the version in force is the newest (see README, Reload rules)")
    return lines


def retry_settings_text(task: dict[str, Any]) -> str:
    """``task-config``: the retry settings in force, and which of them are overrides."""
    delay = duration_text(task["retryDelay"] / 1000)
    text = f"Task {task['itemId']}: maxRetries {task['maxRetries']}, retryDelay {delay}"
    overridden = [name for name in ("maxRetries", "retryDelay") if name in (task.get("overrides") or {})]
    if not overridden:
        return text + " (as declared: no override)"
    return text + f" (set by task-config: {', '.join(overridden)}; kept when its file is reloaded)"


def _timeout_text(run: dict[str, Any] | None) -> str | None:
    if not run:
        return None
    return "none" if run.get("timeout") is None else duration_text(run["timeout"] / 1000)


def _yes_no(value: Any) -> str | None:
    return None if value is None else ("yes" if value else "no")


def _overridden(value: Any, overridden: bool) -> Any:
    return f"{value} (set by task-config)" if overridden and value is not None else value


NODE_COLUMNS = (
    Column("Node", lambda n, date: n.get("nodeId", "")),
    Column("Executor", lambda n, date: "yes" if n.get("executor") else "no"),
    Column("Heartbeat", lambda n, date: date(n.get("heartbeat"))),
    Column("Running", lambda n, date: n.get("running", 0), right=True),
    Column("Stuck", lambda n, date: n.get("stuck", 0), right=True),
    Column("Started", lambda n, date: date(n.get("startedAt"))),
    Column("Version", lambda n, date: n.get("version") or ""),
    Column("Listen", lambda n, date: n.get("listen") or ""),
    Column("Task Types", lambda n, date: ", ".join(n.get("taskTypes") or ()) or "-"),
)


def node_table(nodes: list[dict[str, Any]], width: int | None = None, with_headers: bool = True) -> str:
    """``node-list``: node ids are never cut; listen addresses and task types are, then columns go."""
    text = columns_table(
        NODE_COLUMNS, nodes, short_date, shrink=("Listen", "Task Types"), drop=("Version", "Started", "Listen"),
        width=width, with_headers=with_headers,
    )
    return text + f"\n{len(nodes)} node(s)" if with_headers else text


def reload_text(report: dict[str, Any]) -> str:
    """The reload summary, then each problem as ``path:line:col: message`` (as ``scheduler validate``)."""
    lines = [
        f"Reloaded: {report['created']} created, {report['updated']} updated, {report['removed']} removed, "
        f"{report['rejectedFiles']} file(s) rejected"
    ]
    for state in report.get("files", []):
        if state.get("status") == "rejected" and state.get("tasks"):
            lines.append(f"{state['path']}: rejected; its last good version stays in force ({', '.join(state['tasks'])})")
        for other in state.get("superseded", []):
            lines.append(
                f"{state['path']}: not in force: task {other['task']} runs the version of {other['source'] or '?'}"
                f" (spec {other['specHash'][:12]})"
            )
        lines.extend(f"{e['location']}: {e['message']}" for e in state.get("errors", []))
    lines.extend(report.get("errors", []))
    return "\n".join(lines)


def dump(data: Any, output: str) -> str:
    """``json`` or ``yaml`` text of API data, for scripts."""
    if output == "yaml":
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip()
    return json.dumps(data, indent=2, ensure_ascii=False)


def fields(pairs: Iterable[tuple[str, Any]]) -> str:
    """Aligned ``Key: value`` lines, absent values left out; nested data as indented YAML, text of
    several lines (a shell script) indented under its key."""
    present = [(k, v) for k, v in pairs if v not in (None, {}, [])]
    width = max((len(k) for k, _ in present), default=0)
    lines = []
    for key, value in present:
        if isinstance(value, (dict, list)) or (isinstance(value, str) and "\n" in value.rstrip("\n")):
            nested = value if isinstance(value, str) else yaml.safe_dump(value, sort_keys=False, allow_unicode=True)
            lines.append(f"{key}:")
            lines.extend("  " + line for line in nested.rstrip().splitlines())
        else:
            lines.append(f"{key + ':':<{width + 1}} {value}")
    return "\n".join(lines)
