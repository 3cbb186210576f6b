"""Why a cron expression is refused, in words that name the field: ``minute 61 is out of range 0-59``.

croniter decides what is valid (``TaskSpec`` asks it); its own messages do not
say which field is wrong, nor why ("[61 * * * *] is not acceptable, out of
range"). ``explain`` reads a refused expression field by field and says what
is wrong with the first field it can fault, or what the fields should be when
it cannot tell. It never accepts or refuses anything itself: an expression
croniter takes is valid whatever this module thinks of it.
"""

from __future__ import annotations

from dataclasses import dataclass

KEYWORDS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
FIELD_ORDER = "minute hour day-of-month month day-of-week"
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
FULL_DAYS = ("SUNDAY", "MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY")
FULL_MONTHS = (
    "JANUARY", "FEBRUARY", "MARCH", "APRIL", "MAY", "JUNE", "JULY", "AUGUST", "SEPTEMBER", "OCTOBER", "NOVEMBER",
    "DECEMBER",
)


@dataclass(frozen=True)
class Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # three-letter names, in value order from ``low``
    full_names: tuple[str, ...] = ()
    special: str = ""  # characters croniter gives a meaning in this field (L, W, #, ?)

    @property
    def range(self) -> str:
        text = f"{self.low}-{self.high}"
        return f"{text} or {self.names[0]}-{self.names[-1]}" if self.names else text


FIELDS = (
    Field("minute", 0, 59),
    Field("hour", 0, 23),
    Field("day of month", 1, 31, special="LW?"),
    Field("month", 1, 12, MONTHS, FULL_MONTHS),
    Field("day of week", 0, 7, DAYS, FULL_DAYS, special="L#?"),
)


def explain(expression: str) -> str:
    """What is wrong with ``expression``, which croniter refused."""
    parts = expression.split()
    if len(parts) == 1:
        if parts[0].startswith("@"):
            return f"unknown shortcut {parts[0]} (expected one of {', '.join(KEYWORDS)})"
        return f"expected 5 fields ({FIELD_ORDER}), got 1"
    if len(parts) == 6:
        return f"expected 5 fields ({FIELD_ORDER}), got 6: a seconds or a year field is not supported"
    if len(parts) != 5:
        return f"expected 5 fields ({FIELD_ORDER}), got {len(parts)}"
    for text, field in zip(parts, FIELDS):
        problem = _field_problem(text, field)
        if problem:
            return problem
    return f"a field is not valid: {FIELD_ORDER}, each a value, a range a-b, a list a,b, * or a step */n"


def _field_problem(text: str, field: Field) -> str | None:
    for item in text.split(","):
        if not item:
            return f"{field.name} {text!r} has an empty item in its list"
        base, slash, step = item.partition("/")
        if slash:
            if not step.isdigit():
                return f"{field.name} step {step!r} in {item!r} is not a whole number"
            if int(step) == 0:
                return f"{field.name} step 0 in {item!r}: a step must be at least 1"
        if base in ("*", "?") and (base == "*" or "?" in field.special):
            continue
        bounds = base.split("-")
        if len(bounds) > 2 or not all(bounds):
            return f"{field.name} {item!r} is not a value, a range a-b, * or a step */n"
        for bound in bounds:
            problem = _value_problem(bound, field)
            if problem:
                return problem
    return None


def _value_problem(value: str, field: Field) -> str | None:
    if value.isdigit():
        if not field.low <= int(value) <= field.high:
            return f"{field.name} {value} is out of range {field.range}"
        return None
    upper = value.upper()
    if upper in field.names or any(mark in upper for mark in field.special):
        return None  # a name, or croniter's L, W, # forms: left to croniter
    if upper in field.full_names:
        short = upper[:3]
        return f"{field.name} {value!r}: write the three-letter name {short} (or its number)"
    for other in FIELDS:
        if other is not field and (upper in other.names or upper in other.full_names):
            return f"{field.name} {value!r} is a {other.name} name: {FIELD_ORDER} is the order of the fields"
    return f"{field.name} {value!r} is not a number in {field.range}"
