"""Bringing documents written by older schedulers up to ``SCHEMA_VERSION`` (blocking, at start).

Every step is idempotent and only fills in what is missing, so several nodes
starting at once may all run it, and it runs at every start: a node of the
previous version still running during a rolling upgrade keeps writing
documents without the new fields, and the next start of a node fills them in.
"""

from __future__ import annotations

from pymongo.database import Database


def fill_missing_fields(db: Database) -> None:
    """Schema 2: ``executorType`` on tasks, the type a node needs an executor for
    (null with a run: section, any executor node runs those; else the task type)."""
    tasks = db["tasks"]
    missing = {"executorType": {"$exists": False}}
    tasks.update_many({**missing, "spec.run": {"$exists": True}}, {"$set": {"executorType": None}})
    for doc in tasks.find(missing, projection=["taskType"]):
        # Conditional: a node updating the spec meanwhile wrote the right value.
        tasks.update_one({"_id": doc["_id"], **missing}, {"$set": {"executorType": doc["taskType"]}})
