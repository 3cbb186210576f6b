"""``python:`` targets (``package.module:function``) to the objects they name.

Kept apart from the executors, which import aiohttp and the rest of the node:
``scheduler validate --check-imports`` imports targets in a child process of
its own with nothing else loaded (``scheduler.importcheck``).
"""

from __future__ import annotations

import importlib
from typing import Any


def split_target(target: str) -> tuple[str, str]:
    """``package.module:attribute`` -> ``(module, attribute)``; ``ValueError`` when a part is missing."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected 'module:function', got {target!r}")
    return module_name, attribute


def attribute_of(module: Any, attribute: str) -> Any:
    """``module.a.b`` for the dotted ``attribute`` ``a.b``."""
    obj = module
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def import_target(target: str) -> Any:
    """``package.module:attribute`` -> the attribute (``attribute`` may be dotted)."""
    module_name, attribute = split_target(target)
    return attribute_of(importlib.import_module(module_name), attribute)
