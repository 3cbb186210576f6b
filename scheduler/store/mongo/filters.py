"""Query filters and sort orders, built from typed values only.

Every user-supplied value is type-checked, then wrapped in ``$eq`` (or ``$ne``,
or used as the bound of a string range; labels as the JSON text of a pair of
strings), so a status or type such as ``{"$ne": null}`` or ``"$where"`` is
compared literally and can never become a query operator.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Collection

from ...model import SORT_FIELDS, Claim, LabelOperator, LabelRequirement, Status, TaskQuery, copies_range, prefix_range
from .documents import label_pairs

# API sort field -> document field. Every other sort field has the same name.
_SORT_DOCUMENT_FIELD = {"itemId": "_id"}


def waiting() -> dict[str, Any]:
    """Tasks waiting to be claimed by some node: enabled, not suspended, SCHEDULED or CRASHED to resume.

    ``suspendedAt: null`` also matches documents written before suspensions existed, which lack the
    field; it is left out of the claim index (a suspended task is rare): the server skips the few."""
    return {
        "enabled": True,
        "suspendedAt": None,
        "$or": [
            {"status": Status.SCHEDULED.value},
            {"status": Status.CRASHED.value, "onCrash": "resume"},
        ],
    }


def claimable_by(node_id: str, task_types: Collection[str] | None = None) -> dict[str, Any]:
    """``claim_due``'s eligibility rules except the due time and the lease.

    ``task_types``: the types the node has an executor for (None: every type);
    tasks with a run: section have a null ``executorType`` and are anyone's."""
    conditions: list[dict[str, Any]] = [
        {"node": {"$in": [None, node_id]}},
        {"$or": [{"nodes": {"$size": 0}}, {"nodes": node_id}]},
        # A task with dependencies once its slot passed the dependency check (settle_dependencies).
        {"$or": [{"dependsOn": None}, {"dependenciesReady": True}]},
    ]
    if task_types is not None:
        conditions.append({"executorType": {"$in": [None, *_texts("task type", task_types)]}})
    return {**waiting(), "$and": conditions}


# No lease. One that expired does not do: it is released by ``recover_expired`` first, after a grace.
NO_LEASE = {"lease.until": None}


def due_and_free(
    node_id: str, now: datetime, skip: list[str], horizon: timedelta = timedelta(0),
    task_types: Collection[str] | None = None,
) -> dict[str, Any]:
    """The claim filter: the whole eligibility and the lease condition, for one compare-and-set."""
    return {
        "$and": [
            claimable_by(node_id, task_types),
            {"nextScheduledExecution": {"$lte": now + horizon}},
            NO_LEASE,
            {"_id": {"$nin": skip}},
        ]
    }


def fenced(item_id: str, node_id: str, fence: int) -> dict[str, Any]:
    """Matches only while the claim identified by ``(node_id, fence)`` is current."""
    return {"_id": item_id, "lease.owner": node_id, "lease.fence": fence, "status": Status.RUNNING.value}


def fenced_claim(claim: Claim) -> dict[str, Any]:
    return fenced(claim.item_id, claim.node_id, claim.fence)


def held(item_id: str, owner: str | None, fence: int) -> dict[str, Any]:
    """Matches while that lease is held, whatever the status (a cancelled run still stopping); on
    ``removedLeases`` too, whose documents carry the lease of a deleted task the same way."""
    return {"_id": item_id, "lease.owner": owner, "lease.fence": fence}


def held_claim(claim: Claim) -> dict[str, Any]:
    return held(claim.item_id, claim.node_id, claim.fence)


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    return str(value)


def _text(name: str, value: Any) -> dict[str, Any]:
    return {"$eq": _string(name, value)}


def _texts(name: str, values: Collection[Any]) -> list[str]:
    for value in values:
        _text(name, value)
    return sorted(set(values))


def _flag(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return {"$eq": value}


def query_filter(query: TaskQuery) -> dict[str, Any]:
    """The filter of ``query_tasks``: every given criterion must match."""
    criteria: dict[str, Any] = {}
    if query.status is not None:
        criteria["status"] = _text("status", query.status)
    if query.task_type is not None:
        criteria["taskType"] = _text("task type", query.task_type)
    if query.node is not None:
        criteria["node"] = _text("node", query.node)
    if query.persistent is not None:
        criteria["persistent"] = _flag("persistent", query.persistent)
    if query.origin_file is not None:
        criteria["originFile"] = _flag("origin_file", query.origin_file)
    labels = [_label_condition(requirement) for requirement in query.label_requirements()]
    if labels:
        criteria["$and"] = labels
    if query.copies_of is not None:
        low, high = copies_range(_string("task name", query.copies_of))
        criteria["_id"] = {"$gte": low, "$lt": high}
    if query.id_prefix is not None:
        low, high = prefix_range(_string("id prefix", query.id_prefix))
        # Both ranges on _id must hold: the narrower bounds of the two.
        bounds = criteria.get("_id", {"$gte": low, "$lt": high})
        criteria["_id"] = {"$gte": max(bounds["$gte"], low), "$lt": min(bounds["$lt"], high)}
    if query.enabled is not None:
        criteria["enabled"] = _flag("enabled", query.enabled)
    if query.suspended is not None:
        _flag("suspended", query.suspended)
        criteria["suspendedAt"] = {"$ne": None} if query.suspended else None  # null: also a missing field
    return criteria


def _label_condition(requirement: LabelRequirement) -> dict[str, Any]:
    """One selector term on ``labelPairs``, the JSON texts ``["key", "value"]`` of the task's labels."""
    key = _string("label key", requirement.key)
    if requirement.operator in (LabelOperator.EQUALS, LabelOperator.NOT_EQUALS):
        [pair] = label_pairs({key: _string(f"label {key!r}", requirement.value)})
        return {"labelPairs": {"$eq" if requirement.operator == LabelOperator.EQUALS else "$ne": pair}}
    # The pairs of this key are the texts from '["key", "' (its value's opening quote) up to, not
    # including, '["key", #': '#' follows '"', and json.dumps escapes any '"' inside the key.
    opening = label_pairs({key: ""})[0][:-2]
    some_pair = {"$elemMatch": {"$gte": opening, "$lt": opening[:-1] + "#"}}
    return {"labelPairs": some_pair if requirement.operator == LabelOperator.EXISTS else {"$not": some_pair}}


def query_sort(query: TaskQuery) -> list[tuple[str, int]]:
    """The sort of ``query_tasks``: a whitelisted field, then itemId in the same direction."""
    if query.sort_by not in SORT_FIELDS:
        raise ValueError(f"cannot sort by {query.sort_by!r}: expected one of {', '.join(sorted(SORT_FIELDS))}")
    direction = -1 if query.descending else 1
    field = _SORT_DOCUMENT_FIELD.get(query.sort_by, query.sort_by)
    if field == "_id":
        return [("_id", direction)]
    return [(field, direction), ("_id", direction)]
