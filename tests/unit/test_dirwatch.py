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


async def next_change(changes):
    return await asyncio.wait_for(anext(changes), 10)


async def test_a_batch_names_the_task_files_that_changed(tmp_path):
    (tmp_path / "kept.yaml").write_text("1")
    (tmp_path / "gone.yaml").write_text("1")
    watch = DirectoryWatch(tmp_path, is_task_file)
    changes = watch.changes()
    try:
        (tmp_path / "new.yaml").write_text("1")
        next_batch = asyncio.ensure_future(next_change(changes))
        (tmp_path / "gone.yaml").unlink()
        (tmp_path / ".ansible_tmp1kept.yaml").write_text("2")  # Ansible: a temporary file renamed over the task file
        os.replace(tmp_path / ".ansible_tmp1kept.yaml", tmp_path / "kept.yaml")
        seen = set(await next_batch)
        while seen != {"new.yaml", "gone.yaml", "kept.yaml"}:  # the changes may come in more than one batch
            batch = await next_change(changes)
            assert batch is not None, "no rescan of every file for changes of task files"
            seen |= batch
    finally:
        await changes.aclose()
        watch.close()


async def test_a_configmap_update_asks_for_a_rescan_of_every_file(tmp_path):
    """Kubernetes switches the ``..data`` link of a ConfigMap volume; the task files are links through it."""
    (tmp_path / "..2026_1").mkdir()
    (tmp_path / "..2026_1" / "a.yaml").write_text("1")
    os.symlink("..2026_1", tmp_path / "..data")
    os.symlink("..data/a.yaml", tmp_path / "a.yaml")
    watch = DirectoryWatch(tmp_path, is_task_file)
    changes = watch.changes()
    try:
        (tmp_path / "..2026_2").mkdir()
        (tmp_path / "..2026_2" / "a.yaml").write_text("2")
        os.symlink("..2026_2", tmp_path / "..data_tmp")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        assert await next_change(changes) is None
    finally:
        await changes.aclose()
        watch.close()
