"""The domain model: tasks, their statuses, claims, run results and records, retention.

Plain values shared by every layer: the status machine (``policy``), the engine,
the executors, the API and the store backends. Nothing here touches a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, Callable, Iterable, Mapping

from .spec import Source, TaskSpec

Clock = Callable[[], datetime]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_MS = timedelta(milliseconds=1)

HISTORY_LIMIT = 20  # history entries kept on a task document, newest first


def system_clock() -> datetime:
    return datetime.now(timezone.utc)


def truncate_ms(moment: datetime) -> datetime:
    """The precision every backend stores (BSON dates are milliseconds)."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def epoch_ms(moment: datetime) -> int:
    """Exact epoch milliseconds of an aware datetime (sub-millisecond part dropped)."""
    if moment.tzinfo is None:
        raise ValueError(f"expected an aware datetime, got naive {moment.isoformat()}")
    return (moment - EPOCH) // ONE_MS


def from_epoch_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def make_run_id(item_id: str, scheduled_for: datetime, attempt: int) -> str:
    """``<taskId>:<scheduledFor ms>:<attempt>``: the same slot always gets the same id."""
    return run_id_at(item_id, epoch_ms(scheduled_for), attempt)


def run_id_at(item_id: str, scheduled_ms: int, attempt: int) -> str:
    """``make_run_id`` of a slot given in epoch milliseconds, as the stores keep it."""
    return f"{item_id}:{scheduled_ms}:{attempt}"


class Status(StrEnum):
    SCHEDULED = "SCHEDULED"
    WAITING = "WAITING"  # due, but a dependency has not succeeded since its last run (waiting_on says which)
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    CRASHED = "CRASHED"


FINAL_STATUSES = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

SORT_FIELDS = frozenset(
    {
        "nextScheduledExecution",
        "lastExecutionDate",
        "creationDate",
        "taskType",
        "status",
        "itemId",
        "failureCount",
        "successCount",
    }
)


class Outcome(StrEnum):
    """How a run ended, as recorded in its run record and in the history."""

    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"  # stopped because the task was cancelled or replaced
    LEASE_LOST = "lease_lost"  # stopped because another node took the task over
    CRASHED = "crashed"  # the node died or stopped renewing its lease: written by recover
    INTERRUPTED = "interrupted"  # handed back by its node shutting down: written by abandon, uses no attempt
    SKIPPED = "skipped"  # missedRuns: skip, a slot missed while the cluster was down


@dataclass
class Task:
    """A stored task: its spec and its runtime state. Field names follow the API."""

    item_id: str
    spec: TaskSpec
    spec_hash: str
    status: Status
    node: str | None = None  # runOn: all copies and non-persistent tasks: the only node that may claim
    next_scheduled_execution: datetime | None = None  # when it becomes claimable (slot + jitter or retry delay)
    scheduled_for: datetime | None = None  # the nominal slot the next run is for
    attempt: int = 1  # attempt number of the next run of ``scheduled_for`` (1 = first try)
    interruptions: int = 0  # runs of ``scheduled_for`` handed back at a node's shutdown (policy.interrupt)
    last_execution_date: datetime | None = None  # start of the last run
    last_finish_date: datetime | None = None
    last_success_date: datetime | None = None  # end of the last successful run
    failure_count: int = 0  # consecutive failures; 0 after a success
    success_count: int = 0
    current_step: str | None = None
    status_details: dict[str, Any] = field(default_factory=dict)
    checkpoint_data: dict[str, Any] | None = None
    last_error: str | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    fence: int = 0
    max_retries_override: int | None = None  # set through PUT /cxs/tasks/{id}/config
    retry_delay_override: timedelta | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # newest first, bounded
    spec_version: float = 0.0  # see upsert_spec
    creation_date: datetime | None = None
    last_modified: datetime | None = None
    expires_at: datetime | None = None  # finished one-shots: when purge may delete the task
    # Dependencies (spec.waits_for): which of them a WAITING task waits for; whether its current slot
    # passed the check (a claim takes a dependent only then); the successes its last check consumed.
    waiting_on: tuple[str, ...] = ()
    dependencies_ready: bool = False
    dependencies_seen: dict[str, datetime | None] = field(default_factory=dict)
    suspended_at: datetime | None = None  # an operator's suspension (kept across reloads); None: not suspended

    @property
    def suspended(self) -> bool:
        return self.suspended_at is not None

    @property
    def held(self) -> bool:
        """Disabled by its spec (``enabled: false``) or suspended: no claim takes it, whatever its status."""
        return not self.spec.enabled or self.suspended

    @property
    def max_retries(self) -> int:
        return self.spec.retry.max_retries if self.max_retries_override is None else self.max_retries_override

    @property
    def retry_delay(self) -> timedelta:
        return self.spec.retry.retry_delay if self.retry_delay_override is None else self.retry_delay_override

    @property
    def requirement(self) -> Requirement:
        return Requirement(self.spec.executor_type, self.node, self.spec.nodes)


@dataclass(frozen=True)
class Settled:
    """What ``Store.settle_dependencies`` did: the tasks it made claimable, and how many still wait."""

    ready: tuple[str, ...] = ()
    waiting: int = 0


@dataclass(frozen=True)
class DependencyState:
    """What a dependent needs to know of one of its dependencies, as the store holds it now."""

    item_id: str
    status: Status
    last_success_date: datetime | None


@dataclass(frozen=True)
class Claim:
    """A run a node is entitled to execute: the task as claimed plus the fencing token."""

    task: Task
    node_id: str
    fence: int
    run_id: str  # "<taskId>:<scheduledFor ms>:<attempt>"
    scheduled_for: datetime
    attempt: int
    started_at: datetime
    lease_until: datetime
    previous_execution_date: datetime | None = None  # restored if the claim is released before its run starts

    @property
    def item_id(self) -> str:
        return self.task.item_id


@dataclass(frozen=True)
class ExpiredLease:
    """A RUNNING task's lease that has run out, as one look at the store saw it: ``recover_expired(only=...)``
    crashes the task only while it still holds this very lease (a renewal moves ``until``)."""

    item_id: str
    fence: int
    until: datetime


@dataclass(frozen=True)
class LeaseExpiries:
    """What ``Store.lease_expiries`` saw: the leases run out now, and when the next one will."""

    expired: tuple[ExpiredLease, ...] = ()
    next_expiry: datetime | None = None  # the first instant a lease not yet run out counts as expired


@dataclass(frozen=True)
class RunResult:
    """What an executor reports; the engine turns it into a ``Transition``."""

    outcome: Outcome
    finished_at: datetime
    exit_code: int | None = None
    output: str = ""  # tail of the output, capped by the executor
    error: str | None = None
    # When the executor really started; the claim's start is only the planned one
    # (a run claimed ahead, or kept waiting by a busy loop, starts later). None: it
    # never started (a skipped slot).
    started_at: datetime | None = None


@dataclass(frozen=True)
class Transition:
    """The next state of a task after a run, computed by the engine (pure policy)."""

    status: Status
    next_scheduled_execution: datetime | None
    scheduled_for: datetime | None
    attempt: int
    failure_count: int
    success_count: int
    last_error: str | None
    expires_at: datetime | None = None  # set for a one-shot reaching a final status
    run_expires_at: datetime | None = None  # when purge may delete this run's record


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    task_id: str
    scheduled_for: datetime
    attempt: int
    node_id: str
    fence: int
    started_at: datetime
    finished_at: datetime | None = None
    outcome: Outcome | None = None  # None while running
    exit_code: int | None = None
    output: str = ""
    error: str | None = None
    expires_at: datetime | None = None

    @property
    def duration(self) -> timedelta | None:
        return None if self.finished_at is None else self.finished_at - self.started_at


class LabelOperator(StrEnum):
    """How a label selector term matches (``scheduler.selectors`` parses kubectl's syntax)."""

    EQUALS = "="  # has the label with this value
    NOT_EQUALS = "!="  # has not the label with this value (absent counts, as in kubectl)
    EXISTS = "exists"  # has the label, whatever its value
    ABSENT = "!exists"  # has not the label


@dataclass(frozen=True)
class LabelRequirement:
    """One term of a label selector: ``key=value``, ``key!=value``, ``key`` or ``!key``."""

    key: str
    operator: LabelOperator
    value: str | None = None  # for EQUALS and NOT_EQUALS


@dataclass(frozen=True)
class TaskQuery:
    status: Status | None = None
    task_type: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)  # every label equal (the selector's ``key=value``)
    label_selector: tuple[LabelRequirement, ...] = ()  # every requirement met
    copies_of: str | None = None  # only the per-node copies ``<name>@<node>`` of task ``name`` (runOn: all)
    id_prefix: str | None = None  # only the ids starting with it (the console's search box): an index range
    node: str | None = None
    persistent: bool | None = None
    origin_file: bool | None = None  # True: tasks declared in files; False: API/builder tasks
    enabled: bool | None = None  # the spec's ``enabled``
    suspended: bool | None = None  # suspended by an operator
    sort_by: str = "itemId"  # one of SORT_FIELDS
    descending: bool = False
    offset: int = 0
    limit: int = 50

    def label_requirements(self) -> tuple[LabelRequirement, ...]:
        """``labels`` and ``label_selector`` as one list of requirements, all to be met."""
        equal = (LabelRequirement(key, LabelOperator.EQUALS, value) for key, value in self.labels.items())
        return (*equal, *self.label_selector)


def copies_range(name: str) -> tuple[str, str]:
    """The item ids of the per-node copies of task ``name`` are the ids in ``[low, high)``.

    A copy is ``<name>@<node>``; ``A`` follows ``@`` in every encoding the stores
    compare ids in, so the range holds exactly the ids starting with ``<name>@``
    (an index range, where a LIKE or a regex would need escaping)."""
    return f"{name}@", f"{name}A"


def prefix_range(prefix: str) -> tuple[str, str]:
    """The item ids starting with ``prefix`` are the ids in ``[low, high)``: the highest code point
    sorts after every character of an id in the UTF-8 byte order both stores compare ids in."""
    return prefix, prefix + "\U0010ffff"


@dataclass(frozen=True)
class Page:
    items: list[Any]
    offset: int
    total: int


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    executor: bool
    heartbeat: datetime
    running: int = 0
    started_at: datetime | None = None
    version: str = ""
    stuck: int = 0  # stopped runs whose code has not ended (Engine.stuck_count)
    listen: str = ""
    task_types: tuple[str, ...] = ()  # the types it has an executor for; a run: section needs none

    def is_live(self, now: datetime, timeout: timedelta) -> bool:
        """Its last heartbeat is at most ``timeout`` old."""
        return self.heartbeat >= now - timeout


@dataclass(frozen=True)
class Requirement:
    """What a node must have or be to claim a task (``Store.claim_due``, time and lease apart)."""

    executor_type: str | None = None  # an executor for this type; None (a run: section): any executor node
    node: str | None = None  # the pinned node, if any
    nodes: tuple[str, ...] = ()  # the spec's ``nodes``; empty: any node

    def met_by(self, node: NodeInfo) -> bool:
        return (
            node.executor
            and (self.executor_type is None or self.executor_type in node.task_types)
            and (self.node is None or self.node == node.node_id)
            and (not self.nodes or node.node_id in self.nodes)
        )

    def met_by_any(self, nodes: Iterable[NodeInfo], now: datetime, timeout: timedelta) -> bool:
        """Some node alive within ``timeout`` could claim the task."""
        return any(node.is_live(now, timeout) and self.met_by(node) for node in nodes)


@dataclass(frozen=True)
class Declaration:
    """A node declaring a task in one of its files: what the store keeps of it (see ``Store.declare_spec``)."""

    item_id: str
    node_id: str
    spec_hash: str
    since: datetime  # when this content first appeared among the task's declarations
    declared_at: datetime  # when the node last wrote this declaration
    source: Source | None
    pinned: str | None = None  # the task's node (``runOn: all`` copies)
    in_force: str | None = None  # the spec hash the task holds now; None when there is no task
    live: bool = True  # the node counts (see ``Store.list_declarations``)
    document: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)  # the spec, when asked for

    def spec(self) -> TaskSpec:
        """The declared spec (only when listed ``with_documents``)."""
        if self.document is None:
            raise ValueError(f"the declaration of {self.item_id} by {self.node_id} was listed without its spec")
        return TaskSpec.from_dict(self.document, source=self.source)

    @property
    def version(self) -> float:
        """The spec version this declaration puts in force: its ``since``, in epoch seconds."""
        return declaration_version(self.since)


def declaration_version(since: datetime) -> float:
    return (since - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(seconds=1)


class UpsertResult(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SUPERSEDED = "superseded"  # the store holds a newer version of this spec


@dataclass(frozen=True)
class Retention:
    """How long finished things are kept before the purge deletes them."""

    completed: timedelta = timedelta(days=7)
    failed: timedelta = timedelta(days=30)
    cancelled: timedelta = timedelta(days=30)
    runs: timedelta = timedelta(days=30)

    def for_status(self, status: Status) -> timedelta:
        return {
            Status.COMPLETED: self.completed,
            Status.FAILED: self.failed,
            Status.CANCELLED: self.cancelled,
        }[status]


@dataclass(frozen=True)
class PurgeCounts:
    tasks: int = 0
    runs: int = 0  # by time: retention, expiry, ``finished_before``
    runs_beyond_keep_runs: int = 0  # past their task's ``keepRuns``


def is_file_source(source: Source | None) -> bool:
    """True for a spec declared in a file (API and builder sources look like ``<api>``)."""
    return source is not None and bool(source.path) and not source.path.startswith("<")
