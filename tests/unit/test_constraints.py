"""constraints.txt pins what CI tests: every dependency of the scheduler and its tests, at the installed version."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints.txt"


def pins() -> dict[str, str]:
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            found[canonicalize_name(name)] = version.strip()
    return found


def installed_closure(root: str, extras: set[str]) -> dict[str, str]:
    """Every distribution ``root[extras]`` needs here (markers evaluated), with its installed version."""
    versions: dict[str, str] = {}
    pending = [(root, extras)]
    while pending:
        name, wanted = pending.pop()
        for text in metadata.requires(name) or ():
            requirement = Requirement(text)
            if requirement.marker is not None and not any(
                requirement.marker.evaluate({"extra": extra}) for extra in wanted | {""}
            ):
                continue
            key = canonicalize_name(requirement.name)
            if key not in versions:
                versions[key] = metadata.version(requirement.name)
                pending.append((requirement.name, set(requirement.extras)))
    return versions


def test_every_installed_dependency_is_pinned_at_its_installed_version():
    pinned = pins()
    needed = installed_closure("scheduler", {"test"})
    assert {name for name in needed if name not in pinned} == set(), "unpinned: run scripts/update-constraints"
    assert {name: (version, pinned[name]) for name, version in needed.items() if version != pinned[name]} == {}, (
        "installed != pinned: install with `pip install -c constraints.txt -e '.[test]'`"
    )
