"""A module whose import fails, as a python: target's module might."""

raise RuntimeError("broken at import")
