"""The Store contract: the domain verbs every backend implements, with their rules.

A *task* is a ``TaskSpec`` plus its runtime state (``Task`` below). The store is
the single source of truth shared by every node; all mutual exclusion comes
from conditional updates here, never from a node's memory.

Time: every verb reads the time from the store's own ``clock`` (``Store.now``).
On SQLite that is the host clock; on MongoDB it is the server's clock estimated
from the ``hello`` reply. Stored times have millisecond precision on every
backend; verbs return aware UTC datetimes truncated to the millisecond.

Boundaries: a stored instant ``T`` (a lease's ``until``, an ``expires_at``) *has
passed* when ``T < now``. A lease therefore still holds at exactly its
``until`` and is expired from ``until + 1 ms``; a task is due when
``nextScheduledExecution <= now``.

The claim protocol (see DESIGN.md):

1. ``claim_due`` sets ``status=RUNNING`` and a lease ``{owner, until, fence+1}``
   in one compare-and-set per task; the returned ``Claim.fence`` is the run's token.
2. ``renew_leases`` extends ``lease.until`` only where owner, fence and
   ``status == RUNNING`` still match; anything else is reported lost.
3. ``finish_run`` and ``save_progress`` write only where owner and fence match
   and the task is still RUNNING: a stale node's late write changes nothing.
4. ``recover_expired`` applies the crash rule to expired leases under the same
   fence condition, keeping ``checkpointData``. The engine recovers a lease only
   once it has seen it expired for a grace period (``lease_expiries``), so that
   an owner paused with its whole machine can stop the command first.
   A lease outlives its run's status: a task cancelled (or deleted) while it
   runs keeps it until its node says the run stopped (``release_lease``) or it
   is recovered like any other, and no claim takes a task that carries one.
5. Each claim inserts a run record, unique on ``(taskId, scheduledFor, attempt)``.

Every change of a task's state is decided by ``scheduler.policy`` (the status
machine, pure functions) and applied by a backend with one compare-and-set on
the state it was decided from: backends write rules down nowhere else. A
change that sets the attempt of a run still to come is moved past the run
records of that slot, so the same slot and attempt never start twice.
"""

from __future__ import annotations

import abc
from datetime import datetime, timedelta
from typing import Any, Collection, Mapping, Sequence

from ..model import (
    SORT_FIELDS, Claim, Clock, Declaration, ExpiredLease, LeaseExpiries, NodeInfo, Page, PurgeCounts, Requirement,
    Retention, RunRecord, RunResult, Settled, Status, Task, TaskQuery, Transition, UpsertResult, system_clock,
    truncate_ms,
)
from ..spec import TaskSpec


class Store(abc.ABC):
    """The task store shared by the nodes. Every verb is atomic on its own."""

    def __init__(self, clock: Clock = system_clock) -> None:
        self._clock = clock

    def now(self) -> datetime:
        """The store's notion of the current time (millisecond precision, UTC)."""
        return truncate_ms(self._clock())

    # -- lifecycle ---------------------------------------------------------

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect, create the schema or indexes, check the schema version."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads. Idempotent."""

    @abc.abstractmethod
    async def check(self) -> None:
        """Raise ``StoreError`` saying why this store cannot serve this node now; return if it can.

        A cheap probe for ``GET /readyz``, run every poll interval: one read on
        the connection the verbs use, plus what the backend can tell about that
        connection (SQLite: the file at the configured path is still the file it
        has open). It writes nothing: whether writes succeed is what the node's
        heartbeat shows. ``StoreError`` too when the store is not started or closed.
        """

    async def __aenter__(self) -> Store:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- specs -------------------------------------------------------------

    @abc.abstractmethod
    async def upsert_spec(
        self,
        spec: TaskSpec,
        *,
        item_id: str | None = None,
        node: str | None = None,
        first_due: datetime | None,
        spec_version: float = 0.0,
    ) -> UpsertResult:
        """Insert a task or update its spec, keeping its runtime state.

        ``item_id`` defaults to ``spec.name``; ``node`` pins the task to one node
        (``runOn: all`` copies, non-persistent tasks). ``first_due`` is the first
        fire time computed by the caller from the spec (None: never due).

        - New task: status SCHEDULED, ``nextScheduledExecution = scheduledFor =
          first_due``, attempt 1, counters 0.
        - Same spec hash: nothing is written (UNCHANGED), so several nodes
          reconciling the same file write once.
        - Stored ``spec_version`` greater than ``spec_version``: nothing is written
          (SUPERSEDED): during a rollout a node with an older file never
          overwrites a newer one, so nodes converge instead of flip-flopping.
        - Otherwise the spec, hash and version are replaced (UPDATED); counters,
          history, checkpoint, overrides and lease stay. The next run is set to
          ``first_due`` only when the schedule changed and the task is not RUNNING
          (``scheduledFor = first_due``, attempt 1); a COMPLETED or FAILED task whose
          schedule changed to one with a ``first_due`` becomes SCHEDULED again (a
          new plan), while CANCELLED and CRASHED wait for an operator action.
        """

    @abc.abstractmethod
    async def remove_spec(self, item_id: str) -> bool:
        """Delete a task (its run records stay until purged). A run in progress
        notices at its next renewal and is stopped; its open run record is closed
        as ``cancelled`` now, since its node will write nothing. False if there
        was no task."""

    # -- declarations: the tasks the nodes declare in their files ------------

    @abc.abstractmethod
    async def declare_spec(
        self, node_id: str, spec: TaskSpec, *, item_id: str | None = None, node: str | None = None
    ) -> UpsertResult:
        """Record that ``node_id`` declares ``spec`` (from one of its files), and
        put the newest declaration of the task in force. Atomic for the task.

        The declaration ``(item_id, node_id)`` keeps the spec document, its hash,
        the source and ``node`` (the pin of ``runOn: all`` copies), and ``since``:
        kept while the node declares the same spec hash; for a new hash, the
        ``since`` of another node's declaration of that same hash (the content
        first appeared there), else now. ``declared_at`` is now whenever the
        declaration is written (an unchanged one writes nothing).

        The version in force is the declaration with the greatest ``since``, then
        the greatest spec hash: deterministic, and it only moves forward, so
        nodes holding different versions during a rollout converge and never
        flip back. ``spec`` goes in force through ``upsert_spec`` (same rules for
        runtime state; ``first_due`` from the spec's schedule and now) with
        ``since`` in epoch seconds as its version, and the result is
        ``upsert_spec``'s, or SUPERSEDED when the task holds a version of a greater
        (version, hash): another declaration's, or one written before.
        """

    @abc.abstractmethod
    async def withdraw_specs(self, node_id: str, item_ids: Sequence[str], *, live_after: datetime) -> list[str]:
        """``node_id`` no longer declares these tasks: delete its declarations.

        A task no live node declares any more is deleted as ``remove_spec`` does
        (with every declaration left of it); the ids of those are returned. A
        node is live while its heartbeat, or its declaration of the task, is not
        older than ``live_after``. A task other live nodes still declare stays;
        if none of the declarations left holds the version in force, the newest
        live one (greatest ``since``, then hash) is put in force. A task that had
        no declaration at all (stored before declarations existed) is deleted.
        Atomic per task: a node declaring the task meanwhile keeps it.
        """

    @abc.abstractmethod
    async def drop_stale_declarations(self, node_id: str, *, live_after: datetime) -> list[str]:
        """Forget the declarations of nodes that are not live (see
        ``withdraw_specs``; ``node_id``'s own always count), and delete the tasks
        left with no declaration, returning their ids. A task some live node
        still declares keeps the version it holds: a node that stopped counting
        never makes the version in force go back. Tasks that never had a
        declaration are not touched."""

    @abc.abstractmethod
    async def list_declarations(
        self,
        *,
        node_id: str | None = None,
        item_ids: Sequence[str] | None = None,
        diverged: bool = False,
        live_after: datetime | None = None,
        with_documents: bool = False,
    ) -> list[Declaration]:
        """Declarations by task id, then node id, with the hash the task holds
        (``in_force``). Filters: one node's, some tasks', and ``diverged``: those of
        tasks whose declarations hold different hashes, or one that the task does
        not hold. ``live`` is computed against ``live_after`` (True when None);
        ``with_documents`` adds each declared spec document."""

    # -- reads -------------------------------------------------------------

    @abc.abstractmethod
    async def get_task(self, item_id: str) -> Task:
        """The task, or ``TaskNotFound``."""

    @abc.abstractmethod
    async def known_ids(self, item_ids: Collection[str]) -> set[str]:
        """Those of ``item_ids`` that are tasks of this store (any number of ids, looked up in batches)."""

    async def query_tasks(self, query: TaskQuery) -> Page:
        """Tasks matching every given filter, sorted by ``query.sort_by`` (ties
        broken by itemId in the same direction, so descending is the exact reverse
        of ascending; missing values sort first ascending, as MongoDB does),
        paged; ``Page.total`` counts all matches. ``node`` matches the pinned
        ``Task.node``; ``label_requirements()`` the spec's labels (``!=`` and
        ``!exists`` match a task without the label); ``copies_of`` the ids in
        ``copies_range``; ``id_prefix`` the ids in ``prefix_range``. Filter
        values are compared as plain values, never interpreted as query operators. An unknown ``sort_by`` or a negative
        offset or limit is a ``ValueError``. Listed tasks carry only the
        newest entry of their ``history``, all a listing shows (its outcome);
        ``get_task`` has the rest: a page of a thousand tasks (the metrics'
        snapshot) decoded twenty entries each, 14 MB of dicts at every scrape."""
        if query.sort_by not in SORT_FIELDS:
            raise ValueError(f"cannot sort by {query.sort_by!r}: use one of {', '.join(sorted(SORT_FIELDS))}")
        check_count("offset", query.offset)
        check_count("limit", query.limit)
        return await self._query_tasks(query)

    @abc.abstractmethod
    async def _query_tasks(self, query: TaskQuery) -> Page:
        """``query_tasks`` with its arguments checked."""

    async def list_runs(self, item_id: str, offset: int = 0, limit: int = 50) -> Page:
        """Run records of a task, newest ``started_at`` first (``Page.items`` of
        ``RunRecord``). Records outlive their task, so an unknown id is an empty
        page, not ``TaskNotFound``."""
        check_count("offset", offset)
        check_count("limit", limit)
        return await self._list_runs(item_id, offset, limit)

    @abc.abstractmethod
    async def _list_runs(self, item_id: str, offset: int, limit: int) -> Page:
        """``list_runs`` with its arguments checked."""

    async def runs_in_window(
        self, item_ids: Sequence[str], start: datetime, end: datetime, limit: int
    ) -> dict[str, list[RunRecord]]:
        """For each task of ``item_ids``, its runs that overlap ``[start, end)``, newest first, at most
        ``limit`` each (the newest): those started in the window, and the one started before it if it
        was still going at ``start`` (a task has one run at a time, so no other older one can overlap),
        each without its output (``""``: ``get_run`` has it).
        Each task is two bounded reads of its runs by start time, whatever its history holds: the
        console's timeline loads only what it draws. A task without runs there maps to ``[]``."""
        check_count("limit", limit)
        if end < start:
            raise ValueError(f"the window ends ({end}) before it starts ({start})")
        return await self._runs_in_window(list(dict.fromkeys(item_ids)), start, end, limit)

    @abc.abstractmethod
    async def _runs_in_window(
        self, item_ids: list[str], start: datetime, end: datetime, limit: int
    ) -> dict[str, list[RunRecord]]:
        """``runs_in_window`` with its arguments checked and ``item_ids`` without duplicates."""

    @abc.abstractmethod
    async def get_run(self, item_id: str, run_id: str) -> RunRecord | None:
        """The run record ``run_id`` of task ``item_id``, or None (a run of another task is None too)."""

    async def next_due_time(self, node_id: str, *, task_types: Collection[str] | None = None) -> datetime | None:
        """The earliest instant at which ``claim_due`` would find work for this
        node, or None if there is none.

        That is the earliest ``nextScheduledExecution`` among tasks this node could
        claim (as ``claim_due`` defines eligibility, with the same ``task_types``,
        ignoring the time) that carry no lease. A task that still carries one (a
        cancelled run being retried) waits for ``release_lease`` or for its
        recovery, and expiring leases are ``lease_expiries``'s."""
        return await self._next_due_time(node_id, _frozen(task_types))

    @abc.abstractmethod
    async def _next_due_time(self, node_id: str, task_types: frozenset[str] | None) -> datetime | None:
        """``next_due_time`` with its task types frozen."""

    @abc.abstractmethod
    async def count_waiting(self) -> dict[Requirement, int]:
        """Tasks waiting to be claimed (enabled, not suspended; SCHEDULED, or CRASHED with
        ``onCrash: resume``; with a ``nextScheduledExecution``, due or not),
        counted by what a node needs to claim them: the executor type of their
        spec, their pinned ``node`` and the spec's ``nodes``. The metrics tell
        from it how many no live node can run."""

    # -- the claim protocol ------------------------------------------------

    async def claim_due(
        self,
        node_id: str,
        limit: int,
        lease_duration: timedelta,
        *,
        horizon: timedelta = timedelta(0),
        task_types: Collection[str] | None = None,
    ) -> list[Claim]:
        """Claim up to ``limit`` due tasks for ``node_id``, earliest due first.

        Eligible: enabled; not suspended; status SCHEDULED, or CRASHED with ``onCrash: resume``;
        ``nextScheduledExecution <= now + horizon`` (a node may claim a little
        ahead, in one batch, and start each run at its due time: ``Claim.started_at``
        is ``max(now, nextScheduledExecution)`` and the run record says so); ``node`` is null or ``node_id``; the
        spec's ``nodes`` list is empty or contains ``node_id``; the node can run
        it: the spec has a ``run:`` section (its stored executor type is null), or
        its type is one of ``task_types``, the types the node has an executor for
        (None: every type, for callers that run whatever they claim, such as
        tests; an engine always passes its own); no lease. A lease that expired
        does not do: it is released by ``recover_expired`` first, after the
        engine's grace. ``limit`` 0 claims
        nothing; a negative limit or a non-positive lease is a ``ValueError``.

        Each claim is one compare-and-set: status RUNNING, ``lease = {owner:
        node_id, until: now + lease_duration, fence: fence + 1}``,
        ``lastExecutionDate = now``, ``currentStep``/``statusDetails`` kept. The
        run record ``(taskId, scheduledFor, attempt)`` is inserted in the same
        atomic step; if it already exists the task is not claimed this time and
        its attempt is moved past the existing records. Two concurrent callers
        never both obtain the same task.
        """
        check_count("claim limit", limit)
        check_lease(lease_duration)
        if horizon < timedelta(0):
            raise ValueError(f"a claim horizon must not be negative, got {horizon}")
        if limit == 0:
            return []
        return await self._claim_due(node_id, limit, lease_duration, horizon, _frozen(task_types))

    @abc.abstractmethod
    async def _claim_due(
        self, node_id: str, limit: int, lease_duration: timedelta, horizon: timedelta, task_types: frozenset[str] | None
    ) -> list[Claim]:
        """``claim_due`` with its arguments checked."""

    async def renew_leases(self, node_id: str, claims: Sequence[Claim], lease_duration: timedelta) -> set[str]:
        """Extend to ``now + lease_duration`` the lease of each claim whose task
        still has ``lease.owner == node_id`` and ``lease.fence == claim.fence``.
        Returns the run ids of the claims whose task is no longer RUNNING under
        that lease: cancelled, deleted, taken over or finished (run ids, not task
        ids: a run still stopping and the next run of its task are two claims). The caller must
        stop those runs and write nothing. A lease still held by a task that is
        no longer RUNNING (a cancel, then a retry or a run-now), or by a task
        deleted since, is extended all the same: its run is still stopping, and
        nothing may start the task (or a task created again under its id)
        beside it until its node calls ``release_lease``."""
        check_lease(lease_duration)
        if not claims:
            return set()
        return await self._renew_leases(node_id, list(claims), lease_duration)

    @abc.abstractmethod
    async def _renew_leases(self, node_id: str, claims: list[Claim], lease_duration: timedelta) -> set[str]:
        """``renew_leases`` with its arguments checked."""

    @abc.abstractmethod
    async def release_lease(self, claim: Claim) -> bool:
        """The run of ``claim`` has stopped after its task left RUNNING (cancel,
        then maybe retry or run-now) or was deleted: clear the lease where owner
        and fence still match and the task is not RUNNING, so that the task can
        be claimed at once instead of after the lease's recovery. False when
        there was nothing to release."""

    @abc.abstractmethod
    async def save_progress(
        self,
        claim: Claim,
        *,
        checkpoint: Mapping[str, Any] | None = None,
        step: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> bool:
        """Store a checkpoint and/or the current step and its details, fenced like
        ``renew_leases``. ``details`` replaces ``statusDetails`` (as Unomi's
        ``updateStep`` does); an argument left None leaves its field as it is.
        False (and nothing written) when the claim is stale."""

    async def finish_run(self, claim: Claim, result: RunResult, transition: Transition) -> bool:
        """Record a run's end, fenced: only where ``lease.owner``, ``lease.fence``
        match the claim and status is RUNNING. Applies ``transition``, clears the
        lease, appends a history entry (``runId``, ``scheduledFor``, ``attempt``,
        ``node``, ``startedAt``, ``finishedAt``, ``outcome``, ``exitCode``,
        ``error``; at most HISTORY_LIMIT kept), completes the run record. The claim
        wrote the planned start; ``result.started_at``, when set, replaces it in the
        record, the history entry and ``lastExecutionDate``. Returns False
        when fenced out: a cancel, delete or takeover that happened meanwhile wins.
        Checkpoint data is cleared on success and kept otherwise; ``currentStep``
        and ``statusDetails`` are kept. ``transition.status`` RUNNING is a
        ``ValueError``."""
        if transition.status == Status.RUNNING:
            raise ValueError(f"a finished run cannot leave {claim.item_id} RUNNING")
        return await self._finish_run(claim, result, transition)

    @abc.abstractmethod
    async def _finish_run(self, claim: Claim, result: RunResult, transition: Transition) -> bool:
        """``finish_run`` with its arguments checked."""

    @abc.abstractmethod
    async def lease_expiries(self) -> LeaseExpiries:
        """The leases that have expired (``until < now``), whichever node holds them,
        each with its task, fence and expiry: of RUNNING tasks, of tasks cancelled
        while they ran, and of tasks deleted while they ran; and the first instant
        at which a lease not yet expired will count as expired (``until + 1 ms``),
        or None. A read: the engine decides from it which leases to recover, and
        when to look again."""

    async def recover_expired(
        self, node_id: str, retention: Retention = Retention(), *, only: Collection[ExpiredLease] | None = None
    ) -> list[Task]:
        """Apply ``policy.crash`` to every RUNNING task whose lease expired before
        now (fenced on the fence read and on the lease still being expired): a
        history entry, the run record closed as crashed, ``statusDetails.crashTime``
        and ``crashedNode``, the lease cleared, the checkpoint kept; then CRASHED
        and due now while the slot has attempts left (``onCrash: resume`` tasks
        are claimable again at once, ``manual`` ones wait for ``resume``), else
        the next slot or FAILED. ``node_id`` is the recovering node, written in
        the history. The other expired leases (a cancelled or deleted task's run
        whose node never said it stopped) are released. With ``only``, just those
        of these leases whose task still holds that very lease, fence and expiry
        (a lease renewed or taken again since is left alone). Returns the
        recovered RUNNING tasks."""
        return await self._recover_expired(node_id, retention, None if only is None else frozenset(only))

    @abc.abstractmethod
    async def _recover_expired(
        self, node_id: str, retention: Retention, only: frozenset[ExpiredLease] | None
    ) -> list[Task]:
        """``recover_expired`` with ``only`` frozen."""

    @abc.abstractmethod
    async def settle_dependencies(self) -> Settled:
        """Check the dependencies (``spec.waits_for``) of every due dependent whose slot has not been
        checked, and of every WAITING task, with ``policy.settle_dependencies``: a task whose
        dependencies are met becomes claimable (SCHEDULED, ``dependencies_ready``, the successes it
        consumes in ``dependencies_seen``); one whose are not is WAITING on them (``waiting_on``). Each
        write is a compare-and-set on the state read. Returns the tasks made claimable and how many
        still wait."""

    async def abandon_runs(self, claims: Sequence[Claim], reason: str, retention: Retention = Retention()) -> list[str]:
        """Hand back the given claims of a node that is shutting down and whose runs
        started and were stopped (``policy.interrupt``): each task is CRASHED with its
        checkpoint, its run recorded as ``interrupted`` and ``reason`` (e.g. "Interrupted
        by scheduler shutdown") as ``lastError``, but the attempt does not count against
        ``maxRetries`` (up to ``policy.FREE_INTERRUPTIONS`` per slot): a rolling restart
        is not the task's failure. Fenced; returns the ids it marked."""
        if not claims:
            return []
        return await self._abandon_runs(list(claims), reason, retention)

    @abc.abstractmethod
    async def _abandon_runs(self, claims: list[Claim], reason: str, retention: Retention) -> list[str]:
        """``abandon_runs`` with its arguments checked."""

    async def release_claims(self, claims: Sequence[Claim]) -> list[str]:
        """Hand back claims whose runs never started (``policy.release``): each
        task is SCHEDULED again as it was before its claim, same slot and
        attempt, lease cleared, no history entry, and its run record deleted so
        that the attempt can start later. Fenced; returns the ids released."""
        if not claims:
            return []
        return await self._release_claims(list(claims))

    @abc.abstractmethod
    async def _release_claims(self, claims: list[Claim]) -> list[str]:
        """``release_claims`` with its arguments checked."""

    # -- operator actions (the API) ---------------------------------------

    @abc.abstractmethod
    async def cancel(self, item_id: str) -> Task:
        """``policy.cancel``: any unfinished status -> CANCELLED. A RUNNING task
        keeps its lease: its node's next renewal reports it lost, the run is
        stopped, and the node then calls ``release_lease``. ``InvalidState``
        when already final."""

    @abc.abstractmethod
    async def retry(self, item_id: str, reset_failure_count: bool = False) -> Task:
        """``policy.retry``: FAILED or CANCELLED -> SCHEDULED, due now, one more
        attempt of the same slot (a new slot with ``reset_failure_count``);
        ``expires_at`` cleared. ``InvalidState`` otherwise."""

    @abc.abstractmethod
    async def resume(self, item_id: str) -> Task:
        """``policy.resume``: CRASHED -> SCHEDULED, due now, checkpoint kept. ``InvalidState`` otherwise."""

    @abc.abstractmethod
    async def run_now(self, item_id: str) -> Task:
        """``policy.run_now``: due now as a new slot, from any status but
        RUNNING (``InvalidState``)."""

    @abc.abstractmethod
    async def suspend(self, item_id: str) -> Task:
        """``policy.suspend``: from now on no claim takes the task, whatever its status, until
        ``unsuspend``; a run in progress finishes normally. Spec updates keep the suspension
        (an override, like ``update_config``'s); it goes with the task. ``InvalidState`` when
        already suspended."""

    @abc.abstractmethod
    async def unsuspend(self, item_id: str) -> Task:
        """``policy.unsuspend``: claims take the task again; its kept slot is due as it was, so
        the slots missed meanwhile go by its ``missedRuns``. ``InvalidState`` when not suspended."""

    async def update_config(
        self, item_id: str, *, max_retries: int | None = None, retry_delay: timedelta | None = None, clear: bool = False
    ) -> Task:
        """Set the operator overrides of the spec's retry policy (None leaves a
        value as it is). Overrides survive spec updates from files. ``clear``
        removes both overrides first, in the same write: the spec's values are in
        force again except those given. A negative value is a ``ValueError``; an
        unknown task ``TaskNotFound``."""
        check_count("maxRetries", max_retries)
        if retry_delay is not None and retry_delay < timedelta(0):
            raise ValueError(f"retryDelay must be >= 0, got {retry_delay}")
        return await self._update_config(item_id, max_retries, retry_delay, clear)

    @abc.abstractmethod
    async def _update_config(
        self, item_id: str, max_retries: int | None, retry_delay: timedelta | None, clear: bool
    ) -> Task:
        """``update_config`` with its arguments checked."""

    # -- nodes ---------------------------------------------------------------

    @abc.abstractmethod
    async def heartbeat(self, node: NodeInfo) -> None:
        """Register or refresh a node: every field as given (``heartbeat``, the
        ``task_types`` it has an executor for...)."""

    @abc.abstractmethod
    async def list_nodes(self) -> list[NodeInfo]:
        """Every registered node, by node id."""

    # -- retention -----------------------------------------------------------

    async def purge(
        self,
        *,
        finished_before: datetime | None = None,
        keep_history: int | None = None,
        retention: Retention | None = None,
    ) -> PurgeCounts:
        """Delete tasks in a final status and run records whose ``expires_at``
        has passed. With ``finished_before``, also every task in a final status
        (COMPLETED, FAILED, CANCELLED) last modified before it (for a finished
        run that is its end; for a cancel, the cancel), and run records that
        ended before it (the CLI's ``task-purge --days``). With ``retention``,
        also API and builder tasks in a final status last modified longer ago
        than that status's TTL (a cancel sets no ``expires_at``), and run records
        that ended longer ago than ``retention.runs``. Tasks declared in files are
        only deleted with their file (a purged one-shot would be created again
        by the next reload, and run twice), except by ``finished_before``, an
        operator's explicit request. Open run records are never deleted, nor is
        a task that still holds a lease (cancelled while it ran, its run still
        stopping): a later purge takes it once the lease is released. Always,
        whatever the other arguments: the finished run records of a task whose
        spec has ``keepRuns`` beyond its limits, newest ``started_at`` first
        among its ``success`` records and among its others (counted apart, in
        ``runs_beyond_keep_runs``); the limits only ever delete sooner than the
        time rules. With
        ``keep_history``, trim each task's history list to that many newest
        entries (not counted). Never touches other tasks."""
        check_count("keep_history", keep_history)
        return await self._purge(finished_before, keep_history, retention)

    @abc.abstractmethod
    async def _purge(self, finished_before: datetime | None, keep_history: int | None, retention: Retention | None) -> PurgeCounts:
        """``purge`` with its arguments checked."""


def check_count(name: str, value: int | None) -> None:
    """A count or position given to a verb: None (not given) or an integer >= 0."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def check_lease(lease_duration: timedelta) -> None:
    if lease_duration <= timedelta(0):
        raise ValueError(f"a lease duration must be positive, got {lease_duration}")


def _frozen(task_types: Collection[str] | None) -> frozenset[str] | None:
    """The caller's types as they are now: a backend's worker thread reads them later."""
    return None if task_types is None else frozenset(task_types)
