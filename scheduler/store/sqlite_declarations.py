"""Declarations on SQLite: what each node declares in its files, and the version put in force.

A declaration keeps its spec only when the task does not hold it: ``spec`` is NULL
while its hash is the task's, and every change or deletion of a task's spec first
copies the old one into such declarations (``sqlite_tasks.keep_declared_specs``).

Each function runs inside one transaction opened by ``SQLiteStore`` (``BEGIN
IMMEDIATE`` for writes), so reading the declarations of a task, deciding, and
writing the task are one atomic step: a node withdrawing a task and another
declaring it at the same time cannot both act on what they read before.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import datetime
from typing import Any, Sequence

from ..model import Declaration, UpsertResult, declaration_version, epoch_ms, from_epoch_ms
from ..schedule import first_slot
from ..spec import Source, TaskSpec
from .sqlite_schema import ms_or_none, to_json
from .sqlite_tasks import _CURRENT_SPEC, json_hash, remove, upsert

logger = logging.getLogger(__name__)

_MAX_PARAMETERS = 500
# A declaration counts while its node's heartbeat, or the declaration itself, is recent enough.
_LIVE = "(d.declared_at >= :after OR COALESCE(n.heartbeat, 0) >= :after OR d.node_id = :me)"


def declare(
    conn: sqlite3.Connection, now: datetime, node_id: str, spec: TaskSpec, item_id: str, pinned: str | None
) -> UpsertResult:
    document = spec.to_dict()
    spec_json = to_json(document)
    spec_hash = json_hash(spec_json)
    source = spec.source
    values = {
        "item_id": item_id, "node_id": node_id, "spec_hash": spec_hash, "declared_at": epoch_ms(now),
        "source_path": None if source is None else source.path,
        "source_line": None if source is None else source.line, "pinned": pinned,
    }
    # The task's declarations are few (one per node): one read gives this node's and the others'.
    others = conn.execute(
        "SELECT node_id, spec_hash, since, source_path, source_line, pinned FROM declarations WHERE item_id = ?",
        (item_id,),
    ).fetchall()
    mine = next((row for row in others if row["node_id"] == node_id), None)
    if mine is not None and mine["spec_hash"] == spec_hash:
        since = mine["since"]
        changed = (mine["source_path"], mine["source_line"], mine["pinned"]) != (
            values["source_path"], values["source_line"], pinned
        )
    else:
        same = [row["since"] for row in others if row["spec_hash"] == spec_hash and row["node_id"] != node_id]
        since = min(same) if same else epoch_ms(now)
        changed = True
    version = declaration_version(from_epoch_ms(since))
    task = conn.execute(_CURRENT_SPEC, (item_id,)).fetchone()
    if task is not None and task["spec_hash"] == spec_hash:
        result = UpsertResult.UNCHANGED
    elif task is not None and (task["spec_version"], task["spec_hash"]) > (version, spec_hash):
        result = UpsertResult.SUPERSEDED
    else:
        result = upsert(
            conn, now, spec, item_id, pinned, first_slot(spec.schedule, now), version,
            document=document, spec_json=spec_json, spec_hash=spec_hash, current=task,
        )
    if changed:
        # The spec only when the task does not hold it: most declarations are the one in force, and a
        # second copy of every spec made a cold start on 10,000 files slower.
        in_force = result is not UpsertResult.SUPERSEDED
        _write(conn, {**values, "since": since, "spec": None if in_force else spec_json})
    return result


def _write(conn: sqlite3.Connection, values: dict[str, Any]) -> None:
    columns = ", ".join(values)
    placeholders = ", ".join(f":{column}" for column in values)
    conn.execute(f"INSERT OR REPLACE INTO declarations ({columns}) VALUES ({placeholders})", values)


def withdraw(
    conn: sqlite3.Connection, now: datetime, node_id: str, item_ids: Sequence[str], live_after: datetime
) -> list[str]:
    removed = []
    for item_id in item_ids:
        conn.execute("DELETE FROM declarations WHERE item_id = ? AND node_id = ?", (item_id, node_id))
        left = _declarations_of(conn, item_id, node_id, live_after)
        live = [row for row in left if row["live"]]
        if not live:
            conn.execute("DELETE FROM declarations WHERE item_id = ?", (item_id,))
            if remove(conn, now, item_id):
                removed.append(item_id)
            continue
        task = conn.execute("SELECT spec_hash FROM tasks WHERE item_id = ?", (item_id,)).fetchone()
        # Those left hold their spec: only a declaration of the spec in force leaves it to the task.
        candidates = [row for row in live if row["spec"] is not None]
        if candidates and (task is None or all(row["spec_hash"] != task["spec_hash"] for row in left)):
            _put_in_force(conn, now, item_id, max(candidates, key=lambda row: (row["since"], row["spec_hash"])))
    return removed


def _declarations_of(conn: sqlite3.Connection, item_id: str, me: str, live_after: datetime) -> list[sqlite3.Row]:
    return conn.execute(
        f"SELECT d.*, {_LIVE} AS live FROM declarations d LEFT JOIN nodes n ON n.node_id = d.node_id"
        " WHERE d.item_id = :item",
        {"item": item_id, "after": epoch_ms(live_after), "me": me},
    ).fetchall()


def _put_in_force(conn: sqlite3.Connection, now: datetime, item_id: str, row: sqlite3.Row) -> None:
    """The declaration ``row`` in force, whatever the version the task held (its declarer withdrew)."""
    source = None if row["source_path"] is None else Source(row["source_path"], row["source_line"] or 0)
    document = json.loads(row["spec"])
    spec = TaskSpec.from_dict(document, source=source)
    upsert(
        conn, now, spec, item_id, row["pinned"], first_slot(spec.schedule, now),
        declaration_version(from_epoch_ms(row["since"])), document=document, spec_json=row["spec"],
        spec_hash=row["spec_hash"], force=True,
    )
    logger.info("task %s: the version declared by %s is in force", item_id, row["node_id"])


def drop_stale(conn: sqlite3.Connection, now: datetime, node_id: str, live_after: datetime) -> list[str]:
    stale = conn.execute(
        f"SELECT d.item_id, d.node_id FROM declarations d LEFT JOIN nodes n ON n.node_id = d.node_id"
        f" WHERE NOT {_LIVE} ORDER BY d.item_id",
        {"after": epoch_ms(live_after), "me": node_id},
    ).fetchall()
    if not stale:
        return []
    removed = []
    for item_id in dict.fromkeys(row["item_id"] for row in stale):
        nodes = [row["node_id"] for row in stale if row["item_id"] == item_id]
        conn.execute(
            f"DELETE FROM declarations WHERE item_id = ? AND node_id IN ({', '.join('?' * len(nodes))})",
            (item_id, *nodes),
        )
        logger.info("task %s: dropped the declarations of %s (no heartbeat)", item_id, ", ".join(nodes))
        left = conn.execute("SELECT 1 FROM declarations WHERE item_id = ? LIMIT 1", (item_id,)).fetchone()
        if left is None and remove(conn, now, item_id):
            removed.append(item_id)
    return removed


def list_declarations(
    conn: sqlite3.Connection, now: datetime, node_id: str | None, item_ids: Sequence[str] | None,
    diverged: bool, live_after: datetime | None, with_documents: bool,
) -> list[Declaration]:
    conditions = []
    params: dict[str, Any] = {"after": ms_or_none(live_after) or 0, "me": None}
    if node_id is not None:
        conditions.append("d.node_id = :node")
        params["node"] = node_id
    wanted = None if item_ids is None else set(item_ids)
    if wanted is not None and len(wanted) <= _MAX_PARAMETERS:  # more: every row is read, then filtered here
        names = {f"i{n}": item_id for n, item_id in enumerate(sorted(wanted))}
        conditions.append(f"d.item_id IN ({', '.join(':' + name for name in names) or 'NULL'})")
        params.update(names)
    if diverged:
        conditions.append(
            "d.item_id IN (SELECT d2.item_id FROM declarations d2 LEFT JOIN tasks t2 ON t2.item_id = d2.item_id"
            " GROUP BY d2.item_id"
            " HAVING COUNT(DISTINCT d2.spec_hash) > 1 OR SUM(t2.spec_hash IS NULL OR t2.spec_hash != d2.spec_hash) > 0)"
        )
    where = " AND ".join(conditions) or "1"
    spec = ", COALESCE(d.spec, t.spec) AS spec" if with_documents else ""
    rows = conn.execute(
        f"SELECT d.item_id, d.node_id, d.spec_hash, d.since, d.declared_at, d.source_path, d.source_line,"
        f" d.pinned, t.spec_hash AS in_force, {_LIVE} AS live{spec}"
        " FROM declarations d LEFT JOIN tasks t ON t.item_id = d.item_id"
        " LEFT JOIN nodes n ON n.node_id = d.node_id"
        f" WHERE {where} ORDER BY d.item_id, d.node_id",
        params,
    ).fetchall()
    return [
        Declaration(
            item_id=row["item_id"],
            node_id=row["node_id"],
            spec_hash=row["spec_hash"],
            since=from_epoch_ms(row["since"]),
            declared_at=from_epoch_ms(row["declared_at"]),
            source=None if row["source_path"] is None else Source(row["source_path"], row["source_line"] or 0),
            pinned=row["pinned"],
            in_force=row["in_force"],
            live=bool(row["live"]),
            document=json.loads(row["spec"]) if with_documents else None,
        )
        for row in rows
        if wanted is None or row["item_id"] in wanted
    ]
