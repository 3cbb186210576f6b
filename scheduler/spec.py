"""TaskSpec: the declarative, immutable part of a task.

A spec comes from a YAML file (through ``loader``) or from the Python builder.
``TaskSpec.from_dict`` takes the camelCase document of the file format (already
checked against ``task.schema.json`` when it comes from a file) and performs the
checks a schema cannot express: durations, cron expressions, time zones, the
choice of exactly one schedule kind. Errors are ``SpecError`` carrying the JSON
pointer of the field, which the loader turns into ``path:line:col``.

``TaskSpec.to_dict`` gives the canonical document (durations in seconds, times in
ISO 8601 UTC) that the store keeps; ``from_dict(to_dict(spec)) == spec``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping  # not typing's: its isinstance checks were a sixth of a parse
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError

from .cronwords import explain as explain_cron
from .errors import SpecError
from .redact import redact_url

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# What dependsOn names: a task (its name), or the copy of a runOn: all task one node keeps (name@node).
TASK_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}(@[^\s@/]{1,255})?$")
MAX_DEPENDENCIES = 32
SCHEDULE_KINDS = ("cron", "every", "at", "after", "afterSuccessOf")
MISSED_RUNS = ("skip", "runOnce", "runAll")
CONCURRENCY = ("forbid", "replace")
ON_CRASH = ("resume", "manual")
RUN_ON = ("any", "all")
BACKOFF = ("fixed", "exponential")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# ``missedRunGrace``: below a second, a slot started late only by a busy node would be skipped;
# beyond a week, ``missedRuns: runOnce`` says what is meant.
MIN_MISSED_GRACE = timedelta(seconds=1)
MAX_MISSED_GRACE = timedelta(days=7)
KEEP_RUNS_KINDS = ("successful", "failed")
EMPTY: Mapping[str, Any] = MappingProxyType({})

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")


def parse_duration(value: Any, pointer: str = "") -> timedelta:
    """``90s``, ``5m``, ``1h30m``, ``7d``, ``250ms`` or a non-negative number of seconds."""
    if isinstance(value, bool):
        raise SpecError(f"expected a duration such as 90s, 5m or 1h30m, got {value!r}", pointer)
    if isinstance(value, (int, float)):
        if value < 0 or value != value or value in (float("inf"), float("-inf")):
            raise SpecError(f"a duration must be a finite number >= 0, got {value!r}", pointer)
        try:
            return timedelta(seconds=value)
        except OverflowError:
            raise SpecError(f"duration {value!r} is too large", pointer) from None
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match and any(match.groups()):
            days, hours, minutes, seconds, millis = (int(g or 0) for g in match.groups())
            try:
                return timedelta(
                    days=days, hours=hours, minutes=minutes, seconds=seconds, milliseconds=millis
                )
            except OverflowError:
                pass
            raise SpecError(f"duration {value!r} is too large", pointer)
    raise SpecError(f"expected a duration such as 90s, 5m, 1h30m or 7d, got {value!r}", pointer)


def format_seconds(delta: timedelta) -> int | float:
    """Seconds as an int when whole: the canonical form of a duration in documents."""
    seconds = delta.total_seconds()
    return int(seconds) if seconds.is_integer() else seconds


def freeze(value: Any) -> Any:
    """Deep-freeze plain JSON-like data (dicts become read-only, lists tuples)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of ``freeze``: plain dicts and lists, ready for JSON."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def utc_iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, seconds precision kept exact (milliseconds when present)."""
    if moment.tzinfo is not timezone.utc:  # the store's clock and the store's dates already are
        moment = moment.astimezone(timezone.utc)
    # isoformat ends in "+00:00" here; it is twice as fast as strftime, and every finish writes three of these.
    return moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")[:-6] + "Z"


def _timezone(name: str, pointer: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SpecError(f"unknown time zone {name!r} (expected an IANA name such as Europe/Paris)", pointer) from None


def _parse_at(value: Any, pointer: str) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise SpecError(f"expected an ISO 8601 time such as 2026-12-01T03:00:00Z, got {value!r}", pointer) from None
    else:
        raise SpecError(f"expected an ISO 8601 time such as 2026-12-01T03:00:00Z, got {value!r}", pointer)
    if moment.tzinfo is None:
        raise SpecError(f"time {value!s} has no time zone: add Z or an offset such as +01:00", pointer)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise SpecError(f"time {value!s} is out of range", pointer) from None


def _invalid_cron(expression: str, pointer: str) -> SpecError:
    """croniter refused ``expression``: say which field is wrong and why, when that can be told."""
    return SpecError(f"invalid cron expression {expression!r}: {explain_cron(expression)}", pointer)


def _check_cron_fires(expression: str, tz: str) -> None:
    """Refuse an expression that parses but never matches a date (``0 0 30 2 *``)."""
    from .schedule import cron_after  # schedule builds on this module

    cron_after(Schedule(cron=expression, timezone=tz), datetime.now(timezone.utc))


@dataclass(frozen=True)
class Schedule:
    """When a task runs: exactly one of ``cron``, ``every``, ``at``, ``after`` or ``afterSuccessOf``."""

    cron: str | None = None
    timezone: str = "UTC"
    every: timedelta | None = None
    fixed_rate: bool = True
    initial_delay: timedelta = timedelta(0)
    at: datetime | None = None
    after: timedelta | None = None
    jitter: timedelta = timedelta(0)
    missed_runs: str = "runOnce"
    after_success_of: str | None = None  # a chain: one run after each success of that task
    # How late a ``missedRuns: skip`` slot may start before it is skipped (``startingDeadlineSeconds``
    # in Kubernetes); None: the default grace of ``schedule.is_missed``.
    missed_run_grace: timedelta | None = None

    @property
    def kind(self) -> str:
        if self.after_success_of is not None:
            return "afterSuccessOf"
        for kind in SCHEDULE_KINDS[:-1]:
            if getattr(self, kind) is not None:
                return kind
        raise AssertionError("a Schedule always has a kind")

    @property
    def one_shot(self) -> bool:
        return self.kind in ("at", "after")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], pointer: str = "/schedule") -> Schedule:
        kinds = [k for k in SCHEDULE_KINDS if k in doc]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise SpecError(
                f"a schedule needs exactly one of cron, every, at, after, afterSuccessOf (found: {found})", pointer
            )
        kind = kinds[0]
        tz = doc.get("timezone", "UTC")
        _timezone(tz, f"{pointer}/timezone")
        options: dict[str, Any] = {"timezone": tz}
        if kind == "cron":
            expression = str(doc["cron"]).strip()
            if len(expression.split()) not in (1, 5):
                raise _invalid_cron(expression, f"{pointer}/cron")
            try:  # parses the expression once: computing its next slot is the validity check
                _check_cron_fires(expression, tz)
            except CroniterError:
                raise _invalid_cron(expression, f"{pointer}/cron") from None
            options["cron"] = expression
        elif kind == "every":
            every = parse_duration(doc["every"], f"{pointer}/every")
            if every <= timedelta(0):
                raise SpecError("every must be a positive duration", f"{pointer}/every")
            options["every"] = every
        elif kind == "at":
            options["at"] = _parse_at(doc["at"], f"{pointer}/at")
        elif kind == "after":
            options["after"] = parse_duration(doc["after"], f"{pointer}/after")
        else:
            parent = doc["afterSuccessOf"]
            if not isinstance(parent, str) or not TASK_ID_PATTERN.match(parent):
                raise SpecError(f"afterSuccessOf: {parent!r} is not a task name (or name@node)",
                                f"{pointer}/afterSuccessOf")
            options["after_success_of"] = parent
        for key in ("fixedRate", "initialDelay"):
            if key in doc and kind != "every":
                raise SpecError(f"{key} only applies to an 'every' schedule", f"{pointer}/{key}")
        if "timezone" in doc and kind != "cron":
            raise SpecError("timezone only applies to a cron schedule", f"{pointer}/timezone")
        if "fixedRate" in doc:
            options["fixed_rate"] = bool(doc["fixedRate"])
        if "initialDelay" in doc:
            options["initial_delay"] = parse_duration(doc["initialDelay"], f"{pointer}/initialDelay")
        if "jitter" in doc:
            options["jitter"] = parse_duration(doc["jitter"], f"{pointer}/jitter")
        missed = doc.get("missedRuns", "runOnce")
        if missed not in MISSED_RUNS:
            raise SpecError(f"missedRuns must be one of {', '.join(MISSED_RUNS)}", f"{pointer}/missedRuns")
        options["missed_runs"] = missed
        if "missedRunGrace" in doc:
            options["missed_run_grace"] = _missed_run_grace(doc["missedRunGrace"], kind, missed, pointer)
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.cron is not None:
            doc["cron"] = self.cron
            doc["timezone"] = self.timezone
        elif self.every is not None:
            doc["every"] = format_seconds(self.every)
            doc["fixedRate"] = self.fixed_rate
            doc["initialDelay"] = format_seconds(self.initial_delay)
        elif self.at is not None:
            doc["at"] = utc_iso(self.at)
        elif self.after_success_of is not None:
            doc["afterSuccessOf"] = self.after_success_of
        else:
            assert self.after is not None
            doc["after"] = format_seconds(self.after)
        doc["jitter"] = format_seconds(self.jitter)
        doc["missedRuns"] = self.missed_runs
        if self.missed_run_grace is not None:  # absent by default: specs written before it keep their hash
            doc["missedRunGrace"] = format_seconds(self.missed_run_grace)
        return doc


def _missed_run_grace(value: Any, kind: str, missed: str, pointer: str) -> timedelta:
    pointer = f"{pointer}/missedRunGrace"
    if kind in ("at", "after"):
        raise SpecError("missedRunGrace does not apply to a one-shot (at, after): a one-shot is never missed", pointer)
    if kind == "afterSuccessOf":
        raise SpecError("missedRunGrace does not apply to afterSuccessOf: a chained run is never missed", pointer)
    if missed != "skip":
        raise SpecError(
            f"missedRunGrace only applies with missedRuns: skip (missedRuns is {missed}, whose late slots still run)",
            pointer,
        )
    grace = parse_duration(value, pointer)
    if not MIN_MISSED_GRACE <= grace <= MAX_MISSED_GRACE:
        raise SpecError(f"missedRunGrace must be between 1s and 7d, got {value!r}", pointer)
    return grace


@dataclass(frozen=True)
class HttpRequest:
    """An HTTP call; success is a status in ``expect_status`` (any 2xx when empty)."""

    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    body: Any = None
    timeout: timedelta = timedelta(seconds=30)
    expect_status: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], pointer: str) -> HttpRequest:
        url = str(doc.get("url", ""))
        if not re.match(r"^https?://[^\s/]+", url):
            raise SpecError(f"http.url must be an http:// or https:// URL, got {redact_url(url)!r}", f"{pointer}/url")
        method = str(doc.get("method", "GET")).upper()
        if method not in HTTP_METHODS:
            raise SpecError(f"http.method must be one of {', '.join(HTTP_METHODS)}", f"{pointer}/method")
        expect = doc.get("expectStatus", ())
        if isinstance(expect, int):
            expect = (expect,)
        return cls(
            url=url,
            method=method,
            headers=freeze({str(k): str(v) for k, v in doc.get("headers", {}).items()}),
            body=freeze(doc.get("body")),
            timeout=parse_duration(doc.get("timeout", 30), f"{pointer}/timeout"),
            expect_status=tuple(int(s) for s in expect),
        )

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"method": self.method, "url": self.url}
        if self.headers:
            doc["headers"] = thaw(self.headers)
        if self.body is not None:
            doc["body"] = thaw(self.body)
        doc["timeout"] = format_seconds(self.timeout)
        if self.expect_status:
            doc["expectStatus"] = list(self.expect_status)
        return doc


@dataclass(frozen=True)
class RunSpec:
    """What a run executes: exactly one of ``command``, ``shell``, ``http``, ``python``."""

    command: tuple[str, ...] | None = None
    shell: str | None = None
    http: HttpRequest | None = None
    python: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    working_dir: str | None = None
    timeout: timedelta | None = None

    @property
    def kind(self) -> str:
        if self.command is not None or self.shell is not None:
            return "command"
        return "http" if self.http is not None else "python"

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], pointer: str = "/run") -> RunSpec:
        kinds = [k for k in ("command", "shell", "http", "python") if k in doc]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise SpecError(f"run needs exactly one of command, shell, http, python (found: {found})", pointer)
        options: dict[str, Any] = {}
        if "command" in doc:
            argv = doc["command"]
            if isinstance(argv, str):
                argv = [argv]
            if not argv or not str(argv[0]):
                raise SpecError("command must name a program", f"{pointer}/command")
            options["command"] = tuple(str(a) for a in argv)
        elif "shell" in doc:
            options["shell"] = str(doc["shell"])
        elif "http" in doc:
            options["http"] = HttpRequest.from_dict(doc["http"], f"{pointer}/http")
        else:
            target = str(doc["python"])
            if not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", target):
                raise SpecError(f"python must be 'module:function', got {target!r}", f"{pointer}/python")
            options["python"] = target
        for key in ("env", "workingDir"):
            if key in doc and options.get("command") is None and options.get("shell") is None:
                raise SpecError(f"{key} only applies to command and shell runs", f"{pointer}/{key}")
        if "env" in doc:
            options["env"] = freeze({str(k): str(v) for k, v in doc["env"].items()})
        if "workingDir" in doc:
            options["working_dir"] = str(doc["workingDir"])
        if doc.get("timeout") is not None:
            timeout = parse_duration(doc["timeout"], f"{pointer}/timeout")
            if timeout <= timedelta(0):
                raise SpecError("timeout must be a positive duration", f"{pointer}/timeout")
            options["timeout"] = timeout
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.command is not None:
            doc["command"] = list(self.command)
        elif self.shell is not None:
            doc["shell"] = self.shell
        elif self.http is not None:
            doc["http"] = self.http.to_dict()
        else:
            doc["python"] = self.python
        if self.env:
            doc["env"] = thaw(self.env)
        if self.working_dir is not None:
            doc["workingDir"] = self.working_dir
        if self.timeout is not None:
            doc["timeout"] = format_seconds(self.timeout)
        return doc


@dataclass(frozen=True)
class RetryPolicy:
    """How failures are retried (Unomi's defaults: 3 retries, 60 s apart)."""

    max_retries: int = 3
    retry_delay: timedelta = timedelta(seconds=60)
    backoff: str = "fixed"
    max_delay: timedelta | None = None

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], pointer: str = "/retry") -> RetryPolicy:
        max_retries = doc.get("maxRetries", 3)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise SpecError(f"maxRetries must be an integer >= 0, got {max_retries!r}", f"{pointer}/maxRetries")
        backoff = doc.get("backoff", "fixed")
        if backoff not in BACKOFF:
            raise SpecError(f"backoff must be one of {', '.join(BACKOFF)}", f"{pointer}/backoff")
        max_delay = doc.get("maxDelay")
        return cls(
            max_retries=max_retries,
            retry_delay=parse_duration(doc.get("retryDelay", 60), f"{pointer}/retryDelay"),
            backoff=backoff,
            max_delay=None if max_delay is None else parse_duration(max_delay, f"{pointer}/maxDelay"),
        )

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "maxRetries": self.max_retries,
            "retryDelay": format_seconds(self.retry_delay),
            "backoff": self.backoff,
        }
        if self.max_delay is not None:
            doc["maxDelay"] = format_seconds(self.max_delay)
        return doc

    def delay(self, failure_count: int) -> timedelta:
        """The wait before retry number ``failure_count`` (1 for the first retry)."""
        delay = self.retry_delay
        if self.backoff == "exponential":
            delay = self.retry_delay * (2 ** min(max(failure_count - 1, 0), 40))
        if self.max_delay is not None:
            delay = min(delay, self.max_delay)
        return delay


@dataclass(frozen=True)
class KeepRuns:
    """How many finished run records of the task the purge keeps, newest first, by outcome
    (Kubernetes' ``successfulJobsHistoryLimit`` / ``failedJobsHistoryLimit``); None: no limit.

    ``successful`` counts the runs whose outcome is ``success``; ``failed`` every other
    outcome (failure, timeout, crashed, interrupted, cancelled, lease_lost, skipped)."""

    successful: int | None = None
    failed: int | None = None

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], pointer: str = "/keepRuns") -> KeepRuns:
        if not isinstance(doc, Mapping) or not doc:
            raise SpecError("keepRuns needs successful and/or failed, each a number of run records", pointer)
        for key, value in doc.items():
            if key not in KEEP_RUNS_KINDS:
                raise SpecError(f"unknown field {key!r} in keepRuns (allowed: successful, failed)", f"{pointer}/{key}")
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SpecError(f"keepRuns.{key} must be an integer >= 0, got {value!r}", f"{pointer}/{key}")
        return cls(successful=doc.get("successful"), failed=doc.get("failed"))

    def to_dict(self) -> dict[str, int]:
        return {key: value for key, value in (("successful", self.successful), ("failed", self.failed))
                if value is not None}


@dataclass(frozen=True)
class Source:
    """Where a spec was declared: a file and the line of its document, or ``<api>``/``<builder>``."""

    path: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


@dataclass(frozen=True)
class TaskSpec:
    """A task as declared. Immutable; ``name`` becomes the ``itemId``."""

    name: str
    schedule: Schedule
    type: str = ""
    description: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    enabled: bool = True
    run: RunSpec | None = None
    parameters: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    retry: RetryPolicy = RetryPolicy()
    concurrency: str = "forbid"
    persistent: bool = True
    run_on: str = "any"
    nodes: tuple[str, ...] = ()
    on_crash: str = "resume"
    depends_on: tuple[str, ...] = ()  # task ids whose success each run waits for (README: Dependencies)
    keep_runs: KeepRuns | None = None  # None: run records go by time only (the purge's retention)
    source: Source | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.type:
            object.__setattr__(self, "type", self.name)

    @property
    def task_type(self) -> str:
        return self.type

    @property
    def waits_for(self) -> tuple[str, ...]:
        """The tasks whose success each run waits for: ``dependsOn``, and the task a chain follows."""
        parent = self.schedule.after_success_of
        if parent is None or parent in self.depends_on:
            return self.depends_on
        return (*self.depends_on, parent)

    @property
    def executor_type(self) -> str | None:
        """The task type a node needs an executor registered for to run this task, or
        None when it has a ``run:`` section, which any executor node runs."""
        return None if self.run is not None else self.type

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], source: Source | None = None) -> TaskSpec:
        """Build and check a spec from its camelCase document (``apiVersion``/``kind`` optional)."""
        if not isinstance(doc, Mapping):
            raise SpecError("a task must be a mapping")
        name = doc.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise SpecError(
                f"name must match [a-z0-9][a-z0-9_-]{{0,62}}, got {name!r}", "/name" if "name" in doc else ""
            )
        if "schedule" not in doc:
            raise SpecError("a task needs a schedule (one of cron, every, at, after)", "")
        if isinstance(doc["schedule"], Mapping) and doc["schedule"].get("afterSuccessOf") == name:
            raise SpecError(f"task {name!r} cannot follow itself", "/schedule/afterSuccessOf")
        checks = {"concurrency": CONCURRENCY, "runOn": RUN_ON, "onCrash": ON_CRASH}
        for key, allowed in checks.items():
            if key in doc and doc[key] not in allowed:
                raise SpecError(f"{key} must be one of {', '.join(allowed)}, got {doc[key]!r}", f"/{key}")
        return cls(
            name=name,
            type=str(doc.get("type") or name),
            description=str(doc.get("description", "")),
            labels=freeze({str(k): str(v) for k, v in doc.get("labels", {}).items()}),
            enabled=bool(doc.get("enabled", True)),
            schedule=Schedule.from_dict(doc["schedule"]),
            run=RunSpec.from_dict(doc["run"]) if doc.get("run") is not None else None,
            parameters=freeze(dict(doc.get("parameters", {}))),
            retry=RetryPolicy.from_dict(doc.get("retry", {})),
            concurrency=doc.get("concurrency", "forbid"),
            persistent=bool(doc.get("persistent", True)),
            run_on=doc.get("runOn", "any"),
            nodes=tuple(str(n) for n in doc.get("nodes", ())),
            on_crash=doc.get("onCrash", "resume"),
            depends_on=dependencies(name, doc.get("dependsOn", ())),
            keep_runs=KeepRuns.from_dict(doc["keepRuns"]) if doc.get("keepRuns") is not None else None,
            source=source,
        )

    def placement(self, node_id: str) -> tuple[str, str | None]:
        """The item id and pinned node of the copy node ``node_id`` keeps of this task.

        A shared task is one unpinned document named after the task; ``runOn: all``
        gives each node its own copy ``<name>@<nodeId>``; a non-persistent task
        lives in each declaring node's memory store, pinned to that node.
        """
        if self.persistent and self.run_on == "all":
            return f"{self.name}@{node_id}", node_id
        return self.name, None if self.persistent else node_id

    @property
    def node_local(self) -> bool:
        """Kept per node (``persistent: false`` or ``runOn: all``): only executor nodes hold a copy."""
        return not self.persistent or self.run_on == "all"

    def to_dict(self) -> dict[str, Any]:
        """The canonical document: every default spelled out, durations in seconds."""
        doc: dict[str, Any] = {
            "apiVersion": "scheduler/v1",
            "kind": "Task",
            "name": self.name,
            "type": self.type,
            "description": self.description,
            "labels": thaw(self.labels),
            "enabled": self.enabled,
            "schedule": self.schedule.to_dict(),
        }
        if self.run is not None:
            doc["run"] = self.run.to_dict()
        doc.update(
            parameters=thaw(self.parameters),
            retry=self.retry.to_dict(),
            concurrency=self.concurrency,
            persistent=self.persistent,
            runOn=self.run_on,
            nodes=list(self.nodes),
            onCrash=self.on_crash,
        )
        if self.depends_on:  # only when set: the hash of every spec without dependencies stays what it was
            doc["dependsOn"] = list(self.depends_on)
        if self.keep_runs is not None:  # absent by default: specs written before it keep their hash
            doc["keepRuns"] = self.keep_runs.to_dict()
        return doc

    def spec_hash(self) -> str:
        """A stable digest of the canonical document: equal specs, equal hashes."""
        return document_hash(self.to_dict())


def dependencies(name: str, ids: Any) -> tuple[str, ...]:
    """``dependsOn`` checked: task ids, none twice, never the task itself."""
    if not isinstance(ids, (list, tuple)) or not all(isinstance(i, str) for i in ids):
        raise SpecError("dependsOn must be a list of task names", "/dependsOn")
    for index, item_id in enumerate(ids):
        if not TASK_ID_PATTERN.match(item_id):
            raise SpecError(f"dependsOn: {item_id!r} is not a task name (or name@node)", f"/dependsOn/{index}")
        if item_id == name or item_id.partition("@")[0] == name:
            raise SpecError(f"task {name!r} cannot depend on itself", f"/dependsOn/{index}")
        if item_id in ids[:index]:
            raise SpecError(f"dependsOn names {item_id!r} twice", f"/dependsOn/{index}")
    if len(ids) > MAX_DEPENDENCIES:
        raise SpecError(f"dependsOn names {len(ids)} tasks, at most {MAX_DEPENDENCIES}", "/dependsOn")
    return tuple(ids)


def document_hash(document: Mapping[str, Any]) -> str:
    """``TaskSpec.spec_hash`` of a spec whose canonical document the caller already holds."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
