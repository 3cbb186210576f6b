"""Declarations on MongoDB (blocking functions, run on the driver thread).

A declaration is a document of the ``declarations`` collection, ``{task, node}``
unique. Reading a task's declarations and then deleting the task cannot be one
atomic step without a transaction, so the task document carries ``declRev``, a
counter that moves on whenever a node records a new declaration of it (after
writing the declaration): a node withdrawing the last live declaration deletes
the task only where ``declRev`` is still the one it read before looking at the
declarations. A node declaring the task in between makes that delete match
nothing, and the withdrawing node looks again.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Mapping, Sequence

from pymongo.database import Database

from ...model import Declaration, UpsertResult, declaration_version
from ...schedule import first_slot
from ...spec import Source, TaskSpec, document_hash
from .documents import aware, stored
from .tasks import _busy, delete_task, upsert_spec

log = logging.getLogger(__name__)

_ROUNDS = 5


def declare(db: Database, node_id: str, spec: TaskSpec, item_id: str, pinned: str | None, now: datetime) -> UpsertResult:
    declarations = db["declarations"]
    document = spec.to_dict()
    spec_hash = document_hash(document)
    source = None if spec.source is None else {"path": spec.source.path, "line": spec.source.line}
    mine = declarations.find_one({"task": item_id, "node": node_id}, projection=["specHash", "since", "source", "pinned"])
    changed = True
    if mine is not None and mine["specHash"] == spec_hash:
        since = aware(mine["since"])
        changed = (mine.get("source"), mine.get("pinned")) != (source, pinned)
    else:
        earlier = declarations.find_one(
            {"task": item_id, "specHash": spec_hash, "node": {"$ne": node_id}}, projection=["since"],
            sort=[("since", 1)],
        )
        since = now if earlier is None else aware(earlier["since"])
    if changed:
        declarations.update_one(
            {"task": item_id, "node": node_id},
            {"$set": {"spec": document, "specHash": spec_hash, "since": stored(since), "declaredAt": now,
                      "source": source, "pinned": pinned}},
            upsert=True,
        )
    version = declaration_version(since)
    task = db["tasks"].find_one({"_id": item_id}, projection=["specHash", "specVersion"])
    if task is not None and task["specHash"] != spec_hash and (task.get("specVersion", 0.0), task["specHash"]) > (
        version, spec_hash
    ):
        if changed:
            db["tasks"].update_one({"_id": item_id}, {"$inc": {"declRev": 1}})
        return UpsertResult.SUPERSEDED
    return upsert_spec(db, spec, item_id, pinned, first_slot(spec.schedule, now), version, now, declared=changed)


def withdraw(db: Database, node_id: str, item_ids: Sequence[str], live_after: datetime, now: datetime) -> list[str]:
    live_nodes = _live_nodes(db, live_after)
    removed = []
    for item_id in item_ids:
        for _ in range(_ROUNDS):
            task = db["tasks"].find_one({"_id": item_id}, projection=["specHash", "declRev"])
            db["declarations"].delete_one({"task": item_id, "node": node_id})
            left = list(db["declarations"].find({"task": item_id}))
            live = [doc for doc in left if _is_live(doc, node_id, live_nodes, live_after)]
            if not live:
                if task is None:
                    db["declarations"].delete_many({"task": item_id})
                    break
                if _delete_task(db, item_id, task.get("declRev"), now):
                    removed.append(item_id)
                    break
                continue  # declared meanwhile: look again
            if task is None or all(doc["specHash"] != task["specHash"] for doc in left):
                newest = max(live, key=lambda doc: (aware(doc["since"]), doc["specHash"]))
                _put_in_force(db, item_id, newest, None if task is None else task["specHash"], now)
            break
        else:
            raise _busy(item_id, "its declarations were being withdrawn")
    return removed


def drop_stale(db: Database, node_id: str, live_after: datetime, now: datetime) -> list[str]:
    live_nodes = _live_nodes(db, live_after) | {node_id}
    stale: dict[str, list[str]] = {}
    for doc in db["declarations"].find(
        {"node": {"$nin": sorted(live_nodes)}, "declaredAt": {"$lt": stored(live_after)}}, projection=["task", "node"]
    ).sort([("task", 1), ("node", 1)]):
        stale.setdefault(doc["task"], []).append(doc["node"])
    removed = []
    for item_id, nodes in stale.items():
        for _ in range(_ROUNDS):
            task = db["tasks"].find_one({"_id": item_id}, projection=["declRev"])
            db["declarations"].delete_many({"task": item_id, "node": {"$in": nodes}})
            if db["declarations"].find_one({"task": item_id}, projection=[]) is not None or task is None:
                break
            if _delete_task(db, item_id, task.get("declRev"), now):
                removed.append(item_id)
                break
        log.info("task %s: dropped the declarations of %s (no heartbeat)", item_id, ", ".join(nodes))
    return removed


def list_declarations(
    db: Database, node_id: str | None, item_ids: Sequence[str] | None, diverged: bool,
    live_after: datetime | None, with_documents: bool,
) -> list[Declaration]:
    criteria: dict[str, Any] = {}
    if node_id is not None:
        criteria["node"] = {"$eq": node_id}
    if item_ids is not None:
        criteria["task"] = {"$in": list(item_ids)}
    projection = None if with_documents else {"spec": False}
    docs = list(db["declarations"].find(criteria, projection=projection).sort([("task", 1), ("node", 1)]))
    in_force = {
        doc["_id"]: doc["specHash"]
        for doc in db["tasks"].find({"_id": {"$in": sorted({d["task"] for d in docs})}}, projection=["specHash"])
    }
    if diverged:
        hashes: dict[str, set[str | None]] = {}
        for doc in docs:
            hashes.setdefault(doc["task"], {in_force.get(doc["task"])}).add(doc["specHash"])
        docs = [doc for doc in docs if len(hashes[doc["task"]]) > 1]
    live_nodes = None if live_after is None else _live_nodes(db, live_after)
    return [
        Declaration(
            item_id=doc["task"],
            node_id=doc["node"],
            spec_hash=doc["specHash"],
            since=aware(doc["since"]),
            declared_at=aware(doc["declaredAt"]),
            source=None if doc.get("source") is None else Source(**doc["source"]),
            pinned=doc.get("pinned"),
            in_force=in_force.get(doc["task"]),
            live=live_nodes is None or _is_live(doc, None, live_nodes, live_after),
            document=doc["spec"] if with_documents else None,
        )
        for doc in docs
    ]


def _live_nodes(db: Database, live_after: datetime) -> set[str]:
    return {doc["_id"] for doc in db["nodes"].find({"heartbeat": {"$gte": stored(live_after)}}, projection=[])}


def _is_live(doc: Mapping[str, Any], me: str | None, live_nodes: set[str], live_after: datetime | None) -> bool:
    return doc["node"] == me or doc["node"] in live_nodes or aware(doc["declaredAt"]) >= live_after


def _delete_task(db: Database, item_id: str, rev: int | None, now: datetime) -> bool:
    """Delete the task if no declaration was recorded since ``declRev`` was ``rev``, with its declarations."""
    if not delete_task(db, {"_id": item_id, "declRev": rev}, now):
        return False
    db["declarations"].delete_many({"task": item_id})
    return True


def _put_in_force(db: Database, item_id: str, doc: Mapping[str, Any], withdrawn: str | None, now: datetime) -> None:
    """The declaration ``doc`` in force in place of the spec ``withdrawn`` (whose declarer withdrew),
    whatever the version: unless another node put a newer declaration in force meanwhile."""
    source = None if doc.get("source") is None else Source(**doc["source"])
    spec = TaskSpec.from_dict(doc["spec"], source=source)
    since = aware(doc["since"])
    result = upsert_spec(db, spec, item_id, doc.get("pinned"), first_slot(spec.schedule, now),
                         declaration_version(since), now, force=True, replacing=withdrawn)
    if result is not UpsertResult.SUPERSEDED:
        log.info("task %s: the version declared by %s is in force", item_id, doc["node"])
