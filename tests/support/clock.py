"""A clock that moves only when a test says so: lease boundaries tested to the millisecond."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

DEFAULT_START = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


class ManualClock:
    """Callable like ``system_clock``: returns an aware UTC datetime that only ``advance``/``set`` change."""

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        self._now = _aware(start)

    def __call__(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now

    def set(self, moment: datetime) -> None:
        self._now = _aware(moment)

    def __repr__(self) -> str:
        return f"ManualClock({self._now.isoformat()})"


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"ManualClock needs an aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(timezone.utc)
