"""The tasks directory watch follows its configured path through chains of links and re-creations."""

from __future__ import annotations

import asyncio
import os

from scheduler.dirwatch import DirectoryWatch, _targets
from scheduler.loader import is_task_file


def relink(link, target) -> None:
    """``ln -sfn``, atomically: a new link renamed over the old one."""
    temp = link.with_name(f".{link.name}.new")
    os.symlink(target, temp)
    os.replace(temp, link)


def test_the_targets_are_every_link_on_the_way_and_the_directory(tmp_path):
    (tmp_path / "srv" / "r1").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    os.symlink("r1", tmp_path / "srv" / "current")
    os.symlink(tmp_path / "srv" / "current", tmp_path / "etc" / "tasks.d")

    targets = _targets(str(tmp_path / "etc" / "tasks.d"))

    assert targets.directory == str(tmp_path / "srv" / "r1")
    assert targets.entries == {
        str(tmp_path / "etc" / "tasks.d"), str(tmp_path / "srv" / "current"), str(tmp_path / "srv" / "r1")
    }
    assert targets.watched == (str(tmp_path / "etc"), str(tmp_path / "srv"), str(tmp_path / "srv" / "r1"))


def test_a_missing_directory_is_watched_for_from_its_parent(tmp_path):
    targets = _targets(str(tmp_path / "tasks.d"))
    assert targets.directory is None and targets.watched == (str(tmp_path),)


async def test_a_switch_of_a_link_further_down_the_chain_is_followed(tmp_path):
    for release in ("r1", "r2"):
        (tmp_path / "srv" / release).mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    os.symlink("r1", tmp_path / "srv" / "current")
    os.symlink(tmp_path / "srv" / "current", tmp_path / "etc" / "tasks.d")
    watch = DirectoryWatch(tmp_path / "etc" / "tasks.d", is_task_file)
    changes = watch.changes()
    try:
        relink(tmp_path / "srv" / "current", "r2")
        await asyncio.wait_for(anext(changes), 10)  # the switch: watches set again on r2
        (tmp_path / "srv" / "r1" / "old.yaml").write_text("")
        (tmp_path / "srv" / "r2" / "new.yaml").write_text("")
        await asyncio.wait_for(anext(changes), 10)
        assert watch._targets.directory == str(tmp_path / "srv" / "r2")
    finally:
        await changes.aclose()
        watch.close()
