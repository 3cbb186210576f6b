"""Tables that fit the terminal: columns cut with ``…`` or left out, in an order each list chooses.

Pure functions of the cells and a width, so the layout is tested without a node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

SEPARATOR = " │ "
CROSS = "─┼─"
MIN_SHRUNK = 8  # a text column never shrinks below this (or its header)


def _widths(headers: Sequence[str], cells: list[list[str]]) -> list[int]:
    return [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]


def _total(widths: dict[int, int]) -> int:
    return sum(widths.values()) + len(SEPARATOR) * (len(widths) - 1)


def _shrink(widths: dict[int, int], headers: Sequence[str], shrink: Sequence[int], limit: int, floor: int) -> dict[int, int]:
    """Narrow the widest of the ``shrink`` columns shown first, none below ``floor`` (or its header)."""
    widths = dict(widths)
    overflow = _total(widths) - limit
    while overflow > 0:
        candidates = [i for i in shrink if i in widths and widths[i] > max(len(headers[i]), floor)]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        others = max([max(len(headers[widest]), floor)] + [widths[i] for i in candidates if i != widest])
        cut = min(overflow, widths[widest] - others) or 1
        widths[widest] -= cut
        overflow -= cut
    return widths


def _layout(
    headers: Sequence[str], cells: list[list[str]], shrink: Sequence[int], drop: Sequence[int], width: int | None
) -> dict[int, int]:
    """The columns shown, by index, and their widths: the ``shrink`` columns are narrowed, then the
    ``drop`` columns left out one by one, until the table fits ``width``. The other columns keep
    their width, even when the table then overflows: an ID cut short is of no use."""
    shown = dict(enumerate(_widths(headers, cells)))
    if width is None:
        return shown
    fitted = _shrink(shown, headers, shrink, width, MIN_SHRUNK)
    for column in drop:
        if _total(fitted) <= width:
            break
        del shown[column]
        fitted = _shrink(shown, headers, shrink, width, MIN_SHRUNK)
    return fitted


def fits(headers: Sequence[str], rows: Iterable[Sequence[Any]], width: int | None, shrink: Sequence[int], floor: int) -> bool:
    """Whether the table fits in ``width`` with every column, its ``shrink`` columns no narrower than ``floor``."""
    if width is None:
        return True
    widths = _shrink(dict(enumerate(_widths(headers, [[str(c) for c in r] for r in rows]))), headers, shrink, width, floor)
    return _total(widths) <= width


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    right: Sequence[int] = (),
    shrink: Sequence[int] = (),
    drop: Sequence[int] = (),
    width: int | None = None,
    with_headers: bool = True,
) -> str:
    """A table with ``│`` separators fitted to ``width``: the ``shrink`` columns are cut (with ``…``),
    then the ``drop`` columns left out, in that order; the others are never cut."""
    cells = [[str(c) for c in row] for row in rows]
    widths = _layout(headers, cells, shrink, drop, width)

    def fit(text: str, i: int) -> str:
        if len(text) > widths[i]:
            text = text[: widths[i] - 1] + "…"
        return text.rjust(widths[i]) if i in right else text.ljust(widths[i])

    def line(values: Sequence[str]) -> str:
        return SEPARATOR.join(fit(values[i], i) for i in widths).rstrip()

    lines = [line(headers), CROSS.join("─" * w for w in widths.values())] if with_headers else []
    lines.extend(line(row) for row in cells)
    return "\n".join(lines)


@dataclass(frozen=True)
class Column:
    """A column of a list: its header, its text for one item of the API's list (dates through ``date``)."""

    header: str
    value: Callable[[dict[str, Any], Callable[[str | None], str]], Any]
    right: bool = False


def columns_table(
    columns: Sequence[Column],
    items: list[dict[str, Any]],
    date: Callable[[str | None], str],
    *,
    shrink: Sequence[str] = (),
    drop: Sequence[str] = (),
    width: int | None = None,
    with_headers: bool = True,
) -> str:
    """``table`` of ``items`` by ``columns``; ``shrink`` and ``drop`` name columns by header (absent ones ignored)."""
    return table(
        [c.header for c in columns],
        _cells(columns, items, date),
        right=[i for i, c in enumerate(columns) if c.right],
        shrink=_indices(columns, shrink),
        drop=_indices(columns, drop),
        width=width,
        with_headers=with_headers,
    )


def columns_fit(
    columns: Sequence[Column], items: list[dict[str, Any]], date: Callable[[str | None], str], *,
    shrink: Sequence[str], width: int | None, floor: int,
) -> bool:
    """``fits`` for ``columns_table``: every column shown, the ``shrink`` ones no narrower than ``floor``."""
    return fits([c.header for c in columns], _cells(columns, items, date), width, _indices(columns, shrink), floor)


def _cells(columns: Sequence[Column], items: list[dict[str, Any]], date: Callable[[str | None], str]) -> list[list[str]]:
    return [[str(c.value(item, date)) for c in columns] for item in items]


def _indices(columns: Sequence[Column], headers: Sequence[str]) -> list[int]:
    positions = {c.header: i for i, c in enumerate(columns)}
    return [positions[h] for h in headers if h in positions]
