"""``scheduler validate --check-imports``: import ``python:`` targets as a node would, before any run does.

Importing a module runs its code, which may hang, exit or crash: each module is
imported in a child process of its own (``python -m scheduler.importcheck
MODULE ATTRIBUTE...``), in the current directory, with the environment of
``validate`` (so ``PYTHONPATH`` and the installed packages count, as for a node
started here), and killed with whatever it started once the timeout passes.
The child answers with one JSON line on a descriptor of its own: what the module
prints goes to its standard error, never into the answer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from .targets import split_target

DEFAULT_TIMEOUT = 10.0


def check(targets: Iterable[str], timeout: float = DEFAULT_TIMEOUT) -> dict[str, str | None]:
    """Each target (``module:function``) with why a node could not run it, or None when it imports."""
    by_module: dict[str, list[str]] = {}
    for target in targets:
        module, attribute = split_target(target)
        by_module.setdefault(module, []).append(attribute)
    with ThreadPoolExecutor(max_workers=max(1, min(len(by_module), os.cpu_count() or 1))) as pool:
        answers = list(pool.map(lambda item: (item[0], _check_module(item[0], item[1], timeout)), by_module.items()))
    errors: dict[str, str | None] = {}
    for module, answer in answers:
        for attribute in by_module[module]:
            target = f"{module}:{attribute}"
            errors[target] = _verdict(target, attribute, answer)
    return errors


def _check_module(module: str, attributes: list[str], timeout: float) -> dict | str:
    """The child's answer, or why there is none (a timeout, a crash)."""
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "scheduler.importcheck", str(write_end), module, *attributes]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        pass_fds=(write_end,), start_new_session=True,  # its own group: a timeout kills what it started too
    )
    os.close(write_end)
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        os.close(read_end)
        return f"importing module {module!r} took more than {timeout:g}s (--import-timeout): its import-time code blocks"
    with os.fdopen(read_end, "rb") as reader:
        answer = reader.read()
    if answer:
        return json.loads(answer)
    last = (stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
    return f"importing module {module!r} ended the process (exit code {process.returncode}): {last}"


def _verdict(target: str, attribute: str, answer: dict | str) -> str | None:
    if isinstance(answer, str):
        return f"python target {target!r}: {answer}"
    if answer["import"] is not None:
        return f"python target {target!r} cannot be imported: {answer['import']}"
    problem = answer["attributes"].get(attribute)
    return None if problem is None else f"python target {target!r}: {problem}"


def _child(answer_fd: int, module_name: str, attributes: list[str]) -> None:
    """In the child: import, look up each attribute, check that a node could call it; answer on ``answer_fd``."""
    os.dup2(2, 1)  # whatever the module prints, even from C code, goes to standard error
    answer: dict = {"import": None, "attributes": {}}
    try:
        import importlib

        module = importlib.import_module(module_name)
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt at import are its failures too
        answer["import"] = f"{type(exc).__name__}: {exc}"
    else:
        from .executors.python import executor_from_callable  # the node's own check, once the module is in
        from .targets import attribute_of

        for attribute in attributes:
            try:
                executor_from_callable(attribute_of(module, attribute))
            except AttributeError as exc:
                answer["attributes"][attribute] = str(exc)
            except TypeError as exc:  # not callable, a class...
                answer["attributes"][attribute] = f"a node cannot run it: {exc}"
    with os.fdopen(answer_fd, "w") as out:
        json.dump(answer, out)
    # At once: threads the module started, or its atexit handlers, must not keep the check waiting.
    os._exit(0)


if __name__ == "__main__":
    _child(int(sys.argv[1]), sys.argv[2], sys.argv[3:])
