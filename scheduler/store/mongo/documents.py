"""How tasks, run records and nodes look as MongoDB documents, and back.

Everything a user supplies (parameters, labels, checkpoints, step details) is
stored as a *value*, never as part of an update path or a query key, so that
keys holding ``$`` or ``.`` are kept as they are and cannot become operators.
Labels are additionally stored as ``labelPairs``, a list of JSON-encoded
``[key, value]`` strings, so that a label filter is an exact string match whatever
the key contains.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

from ...model import Claim, ExpiredLease, NodeInfo, Outcome, RunRecord, Status, Task, is_file_source, truncate_ms
from ...spec import Source, TaskSpec, document_hash, thaw
from ..common import readable_spec

# 2: ``executorType`` on tasks (and in the claim index), ``taskTypes`` on nodes.
SCHEMA_VERSION = 2

# The leases of deleted tasks whose run may still be stopping, ``{_id: itemId, lease: {owner,
# until, fence}}``: a task created again under that id takes its lease over (``tasks.delete_task``).
REMOVED_LEASES = "removedLeases"


def aware(moment: datetime | None) -> datetime | None:
    """A stored date as an aware UTC datetime: drivers hand back naive UTC or a fixed offset."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def stored(moment: datetime | None) -> datetime | None:
    """A datetime as BSON will keep it (milliseconds, UTC); naive values are refused."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: the store needs aware UTC times")
    return truncate_ms(moment.astimezone(timezone.utc))


def current_slot(doc: Mapping[str, Any]) -> datetime | None:
    """The slot of a task's next or running run: ``scheduledFor``, or its due
    time when a transition left ``scheduledFor`` empty."""
    return aware(doc.get("scheduledFor")) or aware(doc.get("nextScheduledExecution"))


def expired_lease(doc: Mapping[str, Any]) -> ExpiredLease:
    """The lease a task's document (or a deleted task's lease) holds, as ``recover_expired(only=...)`` names it."""
    return ExpiredLease(doc["_id"], doc["lease"]["fence"], aware(doc["lease"]["until"]))


def label_pairs(labels: Mapping[str, str]) -> list[str]:
    return [json.dumps([key, value]) for key, value in sorted(labels.items())]


# -- tasks -------------------------------------------------------------------


def spec_fields(spec: TaskSpec, node: str | None, spec_version: float) -> dict[str, Any]:
    """The part of a task document that a spec update replaces.

    Top-level copies of a few spec fields (``taskType``, ``executorType``,
    ``enabled``, ``nodes``...) exist for the claim filter and the indexes; they
    are rewritten with the spec."""
    source = spec.source
    document = spec.to_dict()
    return {
        "spec": document,
        "source": None if source is None else {"path": source.path, "line": source.line},
        "specHash": document_hash(document),
        "specVersion": float(spec_version),
        "taskType": spec.type,
        "executorType": spec.executor_type,
        "dependsOn": list(spec.waits_for) or None,
        "dependenciesReady": False,  # a new spec, a new check (its dependencies may have changed)
        "enabled": spec.enabled,
        "persistent": spec.persistent,
        "originFile": is_file_source(source),
        "labelPairs": label_pairs(spec.labels),
        "nodes": list(spec.nodes),
        "onCrash": spec.on_crash,
        "node": node,
    }


def new_task_document(
    item_id: str, spec: TaskSpec, node: str | None, first_due: datetime | None, spec_version: float, now: datetime,
    lease: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``lease``: the one a deleted task of that id still held, or its last fence (``tasks._lease_of_removed``)."""
    first_due = stored(first_due)
    return {
        "_id": item_id,
        **spec_fields(spec, node, spec_version),
        "status": Status.SCHEDULED.value,
        "nextScheduledExecution": first_due,
        "scheduledFor": first_due,
        "attempt": 1,
        "interruptions": 0,
        "lastExecutionDate": None,
        "lastFinishDate": None,
        "failureCount": 0,
        "successCount": 0,
        "currentStep": None,
        "statusDetails": {},
        "checkpointData": None,
        "lastError": None,
        # Always a sub-document (never null) so that "lease.owner" can be $set.
        "lease": {"owner": None, "until": None, "fence": 0, **(lease or {})},
        "maxRetriesOverride": None,
        "retryDelayOverrideMs": None,
        "history": [],
        "creationDate": now,
        "lastModified": now,
        "expireAt": None,
        "suspendedAt": None,  # missing in documents written before suspensions: read as None
    }


def task_from_document(doc: Mapping[str, Any]) -> Task:
    source = doc.get("source")
    lease = doc.get("lease") or {}
    retry_delay_ms = doc.get("retryDelayOverrideMs")
    return Task(
        item_id=doc["_id"],
        spec=readable_spec(
            doc["_id"], doc["specHash"], lambda: doc["spec"], None if source is None else Source(**source)
        ),
        spec_hash=doc["specHash"],
        status=Status(doc["status"]),
        node=doc.get("node"),
        next_scheduled_execution=aware(doc.get("nextScheduledExecution")),
        scheduled_for=aware(doc.get("scheduledFor")),
        attempt=doc.get("attempt", 1),
        interruptions=doc.get("interruptions", 0),  # absent from tasks written before hand-backs were free
        last_execution_date=aware(doc.get("lastExecutionDate")),
        last_finish_date=aware(doc.get("lastFinishDate")),
        last_success_date=aware(doc.get("lastSuccessDate")),
        failure_count=doc.get("failureCount", 0),
        success_count=doc.get("successCount", 0),
        current_step=doc.get("currentStep"),
        status_details=dict(doc.get("statusDetails") or {}),
        checkpoint_data=doc.get("checkpointData"),
        last_error=doc.get("lastError"),
        lease_owner=lease.get("owner"),
        lease_until=aware(lease.get("until")),
        fence=lease.get("fence", 0),
        max_retries_override=doc.get("maxRetriesOverride"),
        retry_delay_override=None if retry_delay_ms is None else timedelta(milliseconds=retry_delay_ms),
        history=[dict(entry) for entry in doc.get("history") or ()],
        spec_version=doc.get("specVersion", 0.0),
        creation_date=aware(doc.get("creationDate")),
        last_modified=aware(doc.get("lastModified")),
        expires_at=aware(doc.get("expireAt")),
        waiting_on=tuple(doc.get("waitingOnTasks") or ()),
        dependencies_ready=bool(doc.get("dependenciesReady")),
        dependencies_seen={item_id: aware(ms) for item_id, ms in (doc.get("dependenciesSeen") or {}).items()},
        suspended_at=aware(doc.get("suspendedAt")),
    )


def plain(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """User data as plain dicts and lists, ready for BSON (frozen mappings are not)."""
    return None if value is None else thaw(value)


# -- run records -------------------------------------------------------------


def new_run_document(claim: Claim) -> dict[str, Any]:
    return {
        "_id": claim.run_id,
        "taskId": claim.item_id,
        "scheduledFor": claim.scheduled_for,
        "attempt": claim.attempt,
        "nodeId": claim.node_id,
        "fence": claim.fence,
        "startedAt": claim.started_at,
        "finishedAt": None,
        "outcome": None,
        "exitCode": None,
        "output": "",
        "error": None,
        "expireAt": None,
    }


def run_from_document(doc: Mapping[str, Any]) -> RunRecord:
    outcome = doc.get("outcome")
    return RunRecord(
        run_id=doc["_id"],
        task_id=doc["taskId"],
        scheduled_for=aware(doc["scheduledFor"]),
        attempt=doc["attempt"],
        node_id=doc["nodeId"],
        fence=doc["fence"],
        started_at=aware(doc["startedAt"]),
        finished_at=aware(doc.get("finishedAt")),
        outcome=None if outcome is None else Outcome(outcome),
        exit_code=doc.get("exitCode"),
        output=doc.get("output") or "",
        error=doc.get("error"),
        expires_at=aware(doc.get("expireAt")),
    )


# -- nodes -------------------------------------------------------------------


def node_document(node: NodeInfo) -> dict[str, Any]:
    return {
        "_id": node.node_id,
        "executor": node.executor,
        "heartbeat": stored(node.heartbeat),
        "running": node.running,
        "startedAt": stored(node.started_at),
        "version": node.version,
        "listen": node.listen,
        "taskTypes": list(node.task_types),
        "stuck": node.stuck,
    }


def node_from_document(doc: Mapping[str, Any]) -> NodeInfo:
    return NodeInfo(
        node_id=doc["_id"],
        executor=doc["executor"],
        heartbeat=aware(doc["heartbeat"]),
        running=doc.get("running", 0),
        started_at=aware(doc.get("startedAt")),
        version=doc.get("version", ""),
        listen=doc.get("listen", ""),
        task_types=tuple(doc.get("taskTypes") or ()),
        stuck=doc.get("stuck", 0),
    )


# ``Task`` attributes a ``policy.Change`` may write -> (document field, encoder): the inverse of
# ``task_from_document``.
TASK_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "status": ("status", lambda status: Status(status).value),
    "next_scheduled_execution": ("nextScheduledExecution", stored),
    "scheduled_for": ("scheduledFor", stored),
    "attempt": ("attempt", int),
    "interruptions": ("interruptions", int),
    "failure_count": ("failureCount", int),
    "success_count": ("successCount", int),
    "last_error": ("lastError", lambda error: error),
    "expires_at": ("expireAt", stored),
    "last_execution_date": ("lastExecutionDate", stored),
    "last_finish_date": ("lastFinishDate", stored),
    "last_success_date": ("lastSuccessDate", stored),
    "waiting_on": ("waitingOnTasks", lambda ids: list(ids) or None),
    "dependencies_ready": ("dependenciesReady", bool),
    "dependencies_seen": ("dependenciesSeen", lambda seen: {k: stored(v) for k, v in seen.items()}),
    "lease_owner": ("lease.owner", lambda owner: owner),
    "lease_until": ("lease.until", stored),
    "checkpoint_data": ("checkpointData", plain),
    "status_details": ("statusDetails", plain),
    "suspended_at": ("suspendedAt", stored),
}
