"""Helpers both store backends share: parsed specs, the report of a recovery.

Nothing here touches a database and nothing here decides a task's state (that
is ``scheduler.policy``): these are the storage details both backends agree on.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Callable, Mapping

from ..policy import UNUSABLE_SPEC
from ..spec import Schedule, Source, TaskSpec


_parsed_specs: dict[tuple[str, Source | None], TaskSpec] = {}
# Claims go round the due tasks in turn, so with more tasks than this every claim would parse its
# spec again (the cache is cleared whole when full). 16,384 specs are about 20 MB at most (1.2 kB
# for a small one), only for a node that reads that many.
_PARSED_SPECS_MAX = 16_384


def stored_spec(spec_hash: str, load: Callable[[], Mapping[str, Any]], source: Source | None) -> TaskSpec:
    """The ``TaskSpec`` of a stored canonical document, parsed once per (hash, source).

    Parsing checks cron expressions and time zones; claims and listings read the
    same specs again and again, and specs are immutable. ``load`` gives the
    document, called only on a miss (a hit does not even decode stored JSON).
    """
    key = (spec_hash, source)
    spec = _parsed_specs.get(key)
    if spec is None:
        if len(_parsed_specs) >= _PARSED_SPECS_MAX:
            _parsed_specs.clear()  # a bound, not a policy: misses only cost a parse
        spec = TaskSpec.from_dict(load(), source=source)
        _parsed_specs[key] = spec
    return spec


def readable_spec(
    item_id: str, spec_hash: str, load: Callable[[], Mapping[str, Any]], source: Source | None
) -> TaskSpec:
    """The spec to show for a stored task: ``stored_spec``, or, when the stored document no
    longer parses (written by a newer version, a time zone gone from the system), a disabled
    stand-in whose description says why, so that the task can still be listed, shown, cancelled
    or deleted. Claims parse with ``stored_spec`` and fail such a task instead of running it."""
    try:
        return stored_spec(spec_hash, load, source)
    except Exception as exc:  # whatever the document holds, reading it must not fail
        document = load()
        name = document.get("name") if isinstance(document, Mapping) else None
        return TaskSpec(
            name=name if isinstance(name, str) else item_id,
            schedule=Schedule(after=timedelta(0)),
            type=str(document.get("type") or "") if isinstance(document, Mapping) else "",
            description=f"{UNUSABLE_SPEC}: {exc}",
            enabled=False,
            source=source,
        )



def report_recovery(logger: logging.Logger, node_id: str, recovered: list[str], released: list[str]) -> None:
    """Log what ``recover_expired`` did: tasks recovered as crashed, leases of stopped runs released."""
    if recovered:
        logger.warning("node %s recovered %d task(s) with expired leases: %s", node_id, len(recovered),
                       ", ".join(recovered))
    if released:
        logger.warning(
            "node %s released the expired leases of %d run(s) stopped by a cancel or delete, whose node never"
            " said they had stopped: %s", node_id, len(released), ", ".join(released),
        )
