"""The indexes the MongoDB store creates at start, and why each exists.

``start()`` creates them all; creating an index that already exists with the
same keys and options does nothing, so every node may do it on every start.

Collection ``tasks`` (``_id`` is the itemId):

- ``claim_by_type`` ``(status, enabled, executorType, nextScheduledExecution)``:
  the claim's ``find_one_and_update`` and ``next_due_time`` select enabled
  SCHEDULED (or CRASHED) tasks whose executor type the node runs (null or one
  of its types: a few equality points), in due order; the index serves both
  the filter and the sort, the server merging one due-ordered scan per point,
  so that tasks waiting for another node's executor need not be read. It
  replaces schema 1's ``claim`` ``(status, enabled, nextScheduledExecution)``,
  which ``start()`` drops.
- ``leases`` ``(lease.until)``: ``lease_expiries`` and ``recover_expired`` look for
  the leases that have expired or will expire first, whatever the task's status (a
  cancelled run still stopping holds one). Tasks without a lease hold null there,
  which a range on dates never reads. It replaces ``recover`` ``(status,
  lease.until)``, which served RUNNING tasks only; ``start()`` drops it.
- ``status_<field>`` ``(status, <field>, _id)`` for each sortable field, and
  ``status_itemId`` ``(status, _id)``: the API lists tasks of one status sorted
  by any ``SORT_FIELDS`` entry with itemId as the tie-breaker, and pages through
  them without sorting in memory (``GET /cxs/tasks?status=...&sortBy=...``).
- ``taskType`` ``(taskType, _id)``: the API's and CLI's filter by type.
- ``expireAt_ttl`` ``(expireAt)``, ``expireAfterSeconds: 0``: MongoDB's TTL
  monitor deletes finished one-shot tasks once their ``expireAt`` has passed.
  Only finished one-shots carry the field; documents without it never expire.
- ``keepRuns`` ``(spec.keepRuns)``, sparse: the purge reads the tasks whose spec
  bounds their run records; only those carry the field.
- ``enabled`` ``(enabled)`` and ``suspendedAt`` ``(suspendedAt)``: the metrics count
  the held tasks (disabled, suspended) at every scrape; both values rarely change.

Collection ``runs`` (``_id`` is ``<taskId>:<scheduledFor ms>:<attempt>``):

- ``run_key`` ``(taskId, scheduledFor, attempt)``, unique: the same slot and
  attempt can never be started twice, even by a confused node.
- ``runs_by_task`` ``(taskId, startedAt desc)``: ``list_runs`` pages a task's
  runs newest first.
- ``expireAt_ttl`` ``(expireAt)``, ``expireAfterSeconds: 0``: finished run
  records are deleted by the TTL monitor when their retention has passed.

Collection ``declarations`` (what each node declares in its files, see ``declarations``):

- ``task_node`` ``(task, node)``, unique: one declaration per node and task; a
  task's declarations are read together.
- ``node_task`` ``(node, task)``: a node's own declarations, and those of nodes
  that stopped counting.

Collection ``removedLeases`` (the leases of deleted tasks whose run may still be
stopping) has only ``_id``: it holds a document per task deleted while it ran, for
as long as that run takes to stop, and is read whole.

The TTL monitor runs about once a minute (mongomock only hides expired
documents from reads), so ``purge()`` deletes expired documents itself as well.
Only tasks in a final status carry ``expireAt``: every action that schedules a
task again (retry, run now, a new plan from its file) clears it, since a TTL
index cannot look at the status.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import OperationFailure

from ...model import SORT_FIELDS

_INDEX_NOT_FOUND = 27

# Sort fields whose document field differs from the API name, or that the
# status prefix already covers.
_SPECIAL_SORT_FIELDS = {"itemId", "status"}


def _ttl() -> IndexModel:
    return IndexModel([("expireAt", ASCENDING)], name="expireAt_ttl", expireAfterSeconds=0)


def task_indexes() -> list[IndexModel]:
    by_status = [
        IndexModel([("status", ASCENDING), (field, ASCENDING), ("_id", ASCENDING)], name=f"status_{field}")
        for field in sorted(SORT_FIELDS - _SPECIAL_SORT_FIELDS)
    ]
    return [
        IndexModel(
            [
                ("status", ASCENDING),
                ("enabled", ASCENDING),
                ("executorType", ASCENDING),
                ("nextScheduledExecution", ASCENDING),
            ],
            name="claim_by_type",
        ),
        IndexModel([("lease.until", ASCENDING)], name="leases"),
        *by_status,
        IndexModel([("status", ASCENDING), ("_id", ASCENDING)], name="status_itemId"),
        IndexModel([("taskType", ASCENDING), ("_id", ASCENDING)], name="taskType"),
        IndexModel([("spec.keepRuns", ASCENDING)], name="keepRuns", sparse=True),
        IndexModel([("enabled", ASCENDING)], name="enabled"),
        IndexModel([("suspendedAt", ASCENDING)], name="suspendedAt"),
        _ttl(),
    ]


def run_indexes() -> list[IndexModel]:
    return [
        IndexModel(
            [("taskId", ASCENDING), ("scheduledFor", ASCENDING), ("attempt", ASCENDING)], name="run_key", unique=True
        ),
        IndexModel([("taskId", ASCENDING), ("startedAt", DESCENDING)], name="runs_by_task"),
        _ttl(),
    ]


# Indexes of earlier schema versions that nothing uses any more.
RETIRED_TASK_INDEXES = ("claim", "recover")


def declaration_indexes() -> list[IndexModel]:
    return [
        IndexModel([("task", ASCENDING), ("node", ASCENDING)], name="task_node", unique=True),
        IndexModel([("node", ASCENDING), ("task", ASCENDING)], name="node_task"),
    ]


def create_indexes(database: Any) -> None:
    """Create every index and drop retired ones (blocking; idempotent)."""
    database["tasks"].create_indexes(task_indexes())
    database["runs"].create_indexes(run_indexes())
    existing = set(database["tasks"].index_information())
    for name in RETIRED_TASK_INDEXES:
        if name in existing:
            try:
                database["tasks"].drop_index(name)
            except OperationFailure as exc:
                if exc.code != _INDEX_NOT_FOUND:  # another node starting dropped it first
                    raise
    database["declarations"].create_indexes(declaration_indexes())
