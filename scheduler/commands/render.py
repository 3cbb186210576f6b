"""Terminal rendering for the admin commands: Unomi-style tables and key/value views."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from typing import Any, Iterable, Sequence

import yaml

SEPARATOR = " │ "
CROSS = "─┼─"


def short_date(value: str | None) -> str:
    """``2025-02-12T08:31:25Z`` -> ``2025-02-12 08:31:25`` (UTC), ``-`` when absent."""
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, right: Sequence[int] = (), width: int | None = None) -> str:
    """A table with ``│`` separators; the widest text columns shrink (with ``…``) to fit ``width``."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    limit = width or shutil.get_terminal_size((160, 24)).columns
    overflow = sum(widths) + len(SEPARATOR) * (len(widths) - 1) - limit
    while overflow > 0:
        widest = max(range(len(widths)), key=lambda i: widths[i])
        floor = max(len(headers[widest]), 8)
        if widths[widest] <= floor:
            break
        cut = min(overflow, widths[widest] - floor)
        widths[widest] -= cut
        overflow -= cut

    def fit(text: str, i: int) -> str:
        if len(text) > widths[i]:
            text = text[: widths[i] - 1] + "…"
        return text.rjust(widths[i]) if i in right else text.ljust(widths[i])

    lines = [SEPARATOR.join(fit(h, i) for i, h in enumerate(headers)).rstrip()]
    lines.append(CROSS.join("─" * w for w in widths))
    lines.extend(SEPARATOR.join(fit(c, i) for i, c in enumerate(row)).rstrip() for row in cells)
    return "\n".join(lines)


def task_table(tasks: list[dict[str, Any]], width: int | None = None) -> str:
    """Unomi's ``task-list`` table and its footer."""
    rows = [
        (
            t.get("itemId", ""),
            t.get("taskType", ""),
            t.get("status", ""),
            short_date(t.get("nextScheduledExecution")),
            short_date(t.get("lastExecutionDate")),
            t.get("failureCount", 0),
            "Storage" if t.get("persistent", True) else "Memory",
        )
        for t in tasks
    ]
    headers = ("ID", "Type", "Status", "Next Run", "Last Run", "Failures", "Persistent")
    stored = sum(1 for t in tasks if t.get("persistent", True))
    footer = f"Showing {len(tasks)} task(s) ({stored} in storage, {len(tasks) - stored} in memory)"
    return table(headers, rows, right=(5,), width=width) + "\n" + footer


def dump(data: Any, output: str) -> str:
    """``json`` or ``yaml`` text of API data, for scripts."""
    if output == "yaml":
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip()
    return json.dumps(data, indent=2, ensure_ascii=False)


def fields(pairs: Iterable[tuple[str, Any]]) -> str:
    """Aligned ``Key: value`` lines; nested data as indented YAML."""
    pairs = [(k, v) for k, v in pairs if v not in (None, {}, [])]
    width = max((len(k) for k, _ in pairs), default=0)
    lines = []
    for key, value in pairs:
        if isinstance(value, (dict, list)):
            nested = yaml.safe_dump(value, sort_keys=False, allow_unicode=True).rstrip()
            lines.append(f"{key + ':':<{width + 1}}")
            lines.extend("  " + line for line in nested.splitlines())
        else:
            lines.append(f"{key + ':':<{width + 1}} {value}")
    return "\n".join(lines)
