"""Task files to ``TaskSpec`` objects, or to problems located at ``path:line:col``.

A file goes through three gates, each reporting every problem it can:

1. ``yamlsafe``: size limit, YAML syntax, tags, duplicate keys, alias bombs;
2. ``schema``: the structure of ``schemas/task.schema.json``;
3. ``TaskSpec.from_dict``: cron, time zones, durations, ``at`` with a zone...;

then the loader's own checks: an executor for every task, names unique in a file
and (``load_directory``) across the files of a directory.

Results of single files stand alone: the reconciler keeps the last good version
of a task whose file turned bad, so it needs each file's verdict on its own.
"""

from __future__ import annotations

import bisect
import codecs
import errno
import hashlib
import logging
import os
import stat
from collections import Counter
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Union

from . import schema, yamlsafe
from .errors import SpecError
from .spec import Source, TaskSpec

log = logging.getLogger(__name__)

TASK_SUFFIXES = (".yaml", ".yml")
# Editors, package managers and Ansible (".ansible_tmp*") leave these beside real files.
IGNORED_NAMES = (".*", "*~", "*.swp", "*.tmp", "*.dpkg-*")
EXECUTOR_GROUP = "scheduler.executors"
READ_CHUNK = 64 * 1024
# Opening never waits: a FIFO with no writer would block the open (and the node) forever.
# O_NOCTTY: a terminal device named like a task file never becomes the node's terminal.
OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass(frozen=True, order=True)
class Problem:
    """One located problem; ``str()`` gives ``path:line:col: message``. Line 0: the whole file."""

    path: str
    line: int
    col: int
    pointer: str
    message: str

    def __str__(self) -> str:
        if not self.line:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}:{self.col}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "col": self.col, "pointer": self.pointer, "message": self.message}


@dataclass(frozen=True)
class FileResult:
    """What one file declares. ``ok`` only when it has no problem at all.

    ``specs`` holds the tasks that passed every check even when others in the same
    file did not; whoever applies them decides what a partly bad file is worth.
    ``io_error`` is set when the file could not be read at all.
    """

    path: str
    sha256: str
    specs: tuple[TaskSpec, ...] = ()
    problems: tuple[Problem, ...] = ()
    io_error: str | None = None
    # Task name -> (line, col, pointer) of its ``dependsOn`` key (or its chain's ``afterSuccessOf``):
    # where a dependency cycle is reported.
    dependency_keys: Mapping[str, tuple[int, int, str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class DirectoryResult:
    """The task files of a directory, and the problems between them (duplicate names)."""

    path: str
    files: tuple[FileResult, ...]
    problems: tuple[Problem, ...] = ()
    # Names whose later declaration lost to an earlier file: (path, name) pairs.
    shadowed: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    known_types: frozenset[str] = frozenset()  # the executor types the files were checked against
    index: NameIndex | None = field(default=None, compare=False, repr=False)  # made from ``files`` when None

    @property
    def names(self) -> NameIndex:
        """What the checks between files look at: the index kept file by file, or one made from ``files``."""
        return self.index if self.index is not None else NameIndex.of(self.files)

    @property
    def specs(self) -> tuple[TaskSpec, ...]:
        """Every task of the directory, each name once (the file that sorts first keeps it)."""
        return tuple(s for f in self.files for s in f.specs if (f.path, s.name) not in self.shadowed)

    @property
    def all_problems(self) -> tuple[Problem, ...]:
        return tuple(sorted([p for f in self.files for p in f.problems] + list(self.problems)))

    @property
    def ok(self) -> bool:
        return not self.all_problems


# Task name -> the declaration that holds it (see ``check_names``), or what makes that map when it is needed.
Holders = Union[Mapping[str, Source], Callable[[], Mapping[str, Source]]]


@dataclass(frozen=True)
class NameIndex:
    """What the checks between the files of a directory look at, kept up to date file by file:
    a load of a few changed files among 10,000 does not go over every file for it."""

    counts: Mapping[str, int]  # task name -> how many declarations of it the files hold
    rejected: frozenset[str]  # the paths of the files with problems of their own
    waiting: Mapping[str, FileResult]  # path -> the file, for the files holding tasks that wait for others

    @classmethod
    def of(cls, files: Collection[FileResult]) -> NameIndex:
        return cls(EMPTY_INDEX.counts, frozenset(), {}).replaced((), files)

    def replaced(self, old: Collection[FileResult], new: Collection[FileResult]) -> NameIndex:
        """The index once the files ``old`` are gone and the files ``new`` are there."""
        counts = Counter(self.counts)
        gone = [spec.name for result in old for spec in result.specs]
        counts.subtract(gone)
        counts.update(spec.name for result in new for spec in result.specs)
        for name in gone:
            if counts.get(name, 0) <= 0:
                counts.pop(name, None)  # counted down to nothing: not a name of the directory
        waiting = dict(self.waiting)
        for result in old:
            waiting.pop(result.path, None)
        waiting.update((result.path, result) for result in new if result.dependency_keys)
        rejected = (self.rejected - {r.path for r in old}) | {r.path for r in new if not r.ok}
        return NameIndex(counts, frozenset(rejected), waiting)


EMPTY_INDEX = NameIndex(Counter(), frozenset(), {})


def is_task_file(name: str) -> bool:
    """Whether a directory scan reads the file ``name`` (a base name, not a path)."""
    return name.endswith(TASK_SUFFIXES) and not any(fnmatchcase(name, p) for p in IGNORED_NAMES)


def registered_types() -> frozenset[str]:
    """Task types with an executor registered under the ``scheduler.executors`` entry points."""
    return frozenset(ep.name for ep in entry_points(group=EXECUTOR_GROUP))


def load_bytes(data: bytes, path: str, known_types: Collection[str] | None = None) -> FileResult:
    """Check the raw bytes of a task file; ``path`` only names it in messages."""
    digest = hashlib.sha256(data).hexdigest()
    if len(data) > yamlsafe.MAX_FILE_BYTES:
        message = f"file too large: {len(data)} bytes (the limit is {yamlsafe.MAX_FILE_BYTES})"
        return FileResult(path, digest, problems=(Problem(path, 0, 0, "", message),))
    body = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = body[: exc.start].decode("utf-8")
        line, col = yamlsafe.position(before, len(before))
        message = f"not UTF-8 text: byte 0x{body[exc.start]:02x} cannot be decoded"
        return FileResult(path, digest, problems=(Problem(path, line, col, "", message),))
    specs, problems, dependency_keys = _load_text(text, path, known_types)
    return FileResult(path, digest, specs, problems, dependency_keys=dependency_keys)


def load_text(text: str, path: str, known_types: Collection[str] | None = None) -> FileResult:
    """Check the text of a task file; ``path`` only names it in messages."""
    return load_bytes(text.encode("utf-8", "surrogatepass"), path, known_types)


def load_file(path: str | os.PathLike[str], known_types: Collection[str] | None = None) -> FileResult:
    """Read and check one file, whatever its name. An unreadable file is a result, not an exception."""
    return _load_file(path, known_types, None)


def _load_file(
    path: str | os.PathLike[str], known_types: Collection[str] | None, earlier: FileResult | None
) -> FileResult:
    """``load_file``, or ``earlier`` as it is when the file still holds the bytes it was made from."""
    name = str(path)
    try:
        data = read_regular_file(name, yamlsafe.MAX_FILE_BYTES + 1)  # one byte over tells "too large"
    except OSError as exc:
        reason = _unreadable(name, exc)
        return FileResult(name, "", problems=(Problem(name, 0, 0, "", f"cannot read: {reason}"),), io_error=reason)
    if earlier is not None and earlier.sha256 == hashlib.sha256(data).hexdigest():
        return earlier
    return load_bytes(data, name, known_types)


class NotRegularFile(OSError):
    """A path that names a FIFO, a socket, a device or a directory: never read as a task file."""


def read_regular_file(path: str, limit: int) -> bytes:
    """The first ``limit`` bytes of the regular file at ``path``; ``OSError`` for anything else.

    The open cannot block (``O_NONBLOCK``: a FIFO opens at once) and the type is
    checked on the open descriptor, so a file swapped for a FIFO between a listing
    and the open is refused too. Read in chunks: one ``read(limit)`` allocates
    ``limit`` bytes (1 MiB) for every file, which took longer than reading 10,000
    small files.
    """
    fd = os.open(path, OPEN_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, f"not a regular file: {_file_kind(mode)}")
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            chunk = os.read(fd, min(READ_CHUNK, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "an unknown kind of file"


def _unreadable(path: str, exc: OSError) -> str:
    """Why ``path`` could not be read, in words an operator can act on."""
    if isinstance(exc, NotRegularFile):
        return exc.strerror
    if exc.errno == errno.ENXIO:  # opening a socket
        try:
            return f"not a regular file: {_file_kind(os.stat(path).st_mode)}"
        except OSError:
            pass
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (too many levels of symbolic links)"
    if exc.errno == errno.ENOENT and os.path.islink(path):
        try:
            return f"dangling symbolic link to {os.readlink(path)}"
        except OSError:
            pass
    return exc.strerror or str(exc)


def load_directory(
    path: str | os.PathLike[str],
    known_types: Collection[str] | None = None,
    previous: DirectoryResult | None = None,
    holders: Holders | None = None,
    changed: Collection[str] | None = None,
) -> DirectoryResult:
    """Every task file of a directory (not its subdirectories), in name order.

    ``previous``, an earlier result for the same directory, saves the parsing of
    the files whose bytes are still those it was made from (checked against the
    same executor types): a rescan after one file changed reads every file but
    parses one, where parsing them all takes about a millisecond per file.
    ``changed``, the names of the entries that changed since ``previous`` (what a
    watch of the directory saw), saves the reading too: only those files are read
    again (or dropped when gone), the others are ``previous``'s as they are. The
    checks between files (names, dependency cycles) always cover every file.
    ``holders``: see ``check_names``.

    Raises ``OSError`` when the directory itself cannot be listed.
    """
    known = frozenset(registered_types() if known_types is None else known_types)
    base = str(Path(path))  # joined as strings: a Path per file costs more than reading the file
    reusable = previous is not None and previous.known_types == known
    if changed is not None and reusable and previous.path == str(path):
        files, index = _load_changed(base, changed, known, previous)
    else:
        # An unreadable file's empty digest never matches.
        earlier = {f.path: f for f in previous.files} if reusable else {}
        # By name alone, without looking at what the entries are: a FIFO, a directory, a dangling
        # link or a link loop named like a task file is that file's problem, found when it is read,
        # and never hides the other files.
        with os.scandir(path) as entries:
            names = sorted(e.name for e in entries if is_task_file(e.name))
        paths = [os.path.join(base, name) for name in names]
        files = tuple(_load_file(p, known, earlier.get(p)) for p in paths)
        index = NameIndex.of(files)
    directory = DirectoryResult(str(path), files, known_types=known, index=index)
    directory = check_names(directory, {} if holders is None else holders)
    if log.isEnabledFor(logging.DEBUG):  # all_problems builds and sorts a list
        log.debug(
            "%s: %d task(s) in %d file(s), %d problem(s)",
            path,
            len(directory.specs),
            len(files),
            len(directory.all_problems),
        )
    return directory


def _load_changed(
    base: str, changed: Collection[str], known: frozenset[str], previous: DirectoryResult
) -> tuple[tuple[FileResult, ...], NameIndex]:
    """``previous``'s files (in path order) with the task files named in ``changed`` read again, or
    dropped when no entry has their name any more (a dangling link is still an entry, reported);
    and their index."""
    files = list(previous.files)
    old, new = [], []
    for name in changed:
        if not is_task_file(name):
            continue
        path = os.path.join(base, name)
        at = bisect.bisect_left(files, path, key=_path_of)
        found = at < len(files) and files[at].path == path
        if found:
            old.append(files[at])
        if os.path.lexists(path):
            result = _load_file(path, known, files[at] if found else None)
            new.append(result)
            if found:
                files[at] = result
            else:
                files.insert(at, result)
        elif found:
            del files[at]
    index = previous.names
    return tuple(files), index.replaced(old, new)


def _path_of(result: FileResult) -> str:
    return result.path


def locate_key(data: bytes, document_line: int, pointer: str) -> tuple[int, int]:
    """Line and column of the key at ``pointer`` in the document of ``data`` that starts at
    ``document_line`` (a spec's ``source.line``), for checks made once the file is loaded; the
    document's own line when it cannot be found (the file changed meanwhile)."""
    try:
        text = data.removeprefix(codecs.BOM_UTF8).decode("utf-8")
    except UnicodeDecodeError:
        return document_line, 1
    for document in yamlsafe.parse(text).documents:
        if document.line == document_line:
            return yamlsafe.locate(document.root, pointer, key=True)
    return document_line, 1


def check_names(directory: DirectoryResult, holders: Holders) -> DirectoryResult:
    """``directory`` with its problems between files: a task name declared by two files.

    A name belongs to the file that holds it: ``holders`` maps names to the
    declaration in force (a running node's last good versions); it may be a function
    making that map, called only when a name is contested or a file rejected. The holder keeps
    its name while it is there and still declares it, or is itself rejected (its
    last good version, which declares the name, stays in force); any other file
    declaring the name is the duplicate, whatever the name order, and its error
    names the holder. Names nobody holds go to the file that sorts first.
    """
    # Only a name declared twice, or once beside its rejected holder, needs a keeper: usually
    # none, and a reload of a directory of 10,000 files must not look at every name's holder.
    index = directory.names
    declared = index.counts
    contested = {name for name, count in declared.items() if count > 1}
    rejected = index.rejected
    if callable(holders) and (rejected or contested):
        holders = holders()
    if rejected:
        contested.update(name for name, source in holders.items() if source.path in rejected and name in declared)
    if not contested:
        directory = replace(directory, problems=(), shadowed=frozenset())
        return replace(directory, problems=dependency_cycles(directory))
    present = {f.path: f for f in directory.files}
    keepers: dict[str, Source] = {}
    for name, source in holders.items():
        if name not in contested:
            continue
        holder = present.get(source.path)
        if holder is None:
            continue  # the holder went: the name is free
        declared = next((s.source for s in holder.specs if s.name == name and s.source is not None), None)
        if declared is not None:
            keepers[name] = declared
        elif not holder.ok:
            keepers[name] = source
    problems: list[Problem] = []
    shadowed: set[tuple[str, str]] = set()
    for result in directory.files:
        for spec in result.specs:
            if spec.name not in contested:
                continue
            keeper = keepers.setdefault(spec.name, spec.source or Source(result.path, 0))
            if keeper.path != result.path:
                shadowed.add((result.path, spec.name))
                line = spec.source.line if spec.source else 0
                message = f"task name '{spec.name}' is already defined in {keeper}"
                problems.append(Problem(result.path, line, 1, "/name", message))
    directory = replace(directory, problems=tuple(problems), shadowed=frozenset(shadowed))
    return replace(directory, problems=directory.problems + dependency_cycles(directory))


def dependency_cycles(directory: DirectoryResult) -> tuple[Problem, ...]:
    """A problem at the ``dependsOn`` key (or ``afterSuccessOf``) of every task of the directory that
    is part of a cycle of dependencies (a -> b -> a): none of them could ever run. Names no file
    declares are not followed."""
    waiting = directory.names.waiting
    where = {name: (path, waiting[path].dependency_keys[name]) for path in sorted(waiting)
             for name in waiting[path].dependency_keys if (path, name) not in directory.shadowed}
    # Every task of a cycle waits for another: the others need not be followed (nor mapped).
    specs = {spec.name: spec for path in sorted(waiting) for spec in waiting[path].specs if spec.name in where
             and (path, spec.name) not in directory.shadowed}
    problems = []
    for name in sorted(where):
        cycle = _cycle_through(name, specs)
        if cycle:
            path, (line, col, pointer) = where[name]
            message = f"dependency cycle: {' -> '.join(cycle)}: none of these tasks could ever run"
            problems.append(Problem(path, line, col, pointer, message))
    return tuple(problems)


def _cycle_through(start: str, specs: Mapping[str, TaskSpec]) -> list[str] | None:
    """The shortest path of dependencies from ``start`` back to itself, if there is one."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for name in frontier:
            spec = specs.get(name)
            for dependency in () if spec is None else spec.waits_for:
                if dependency == start:
                    return paths[name] + [start]
                if dependency not in paths:
                    paths[dependency] = paths[name] + [dependency]
                    following.append(dependency)
        frontier = following
    return None


def _load_text(
    text: str, path: str, known_types: Collection[str] | None
) -> tuple[tuple[TaskSpec, ...], tuple[Problem, ...], dict[str, tuple[int, int, str]]]:
    known = registered_types() if known_types is None else known_types
    parsed = yamlsafe.parse(text)
    specs: list[TaskSpec] = []
    dependency_keys: dict[str, tuple[int, int, str]] = {}
    problems = [Problem(path, i.line, i.col, i.pointer, i.message) for i in parsed.issues]
    names: dict[str, int] = {}
    for document in parsed.documents:
        if document.empty:
            continue
        found = [Problem(path, i.line, i.col, i.pointer, i.message) for i in document.issues]
        spec = None if found else _task(document, path, known, found)
        if spec is not None and spec.name in names:
            line, col = yamlsafe.locate(document.root, "/name")
            message = f"task name '{spec.name}' is already defined at line {names[spec.name]}"
            found.append(Problem(path, line, col, "/name", message))
        elif spec is not None:
            names[spec.name] = document.line
            specs.append(spec)
            if spec.waits_for:
                key = "/dependsOn" if spec.depends_on else "/schedule/afterSuccessOf"
                dependency_keys[spec.name] = (*yamlsafe.locate(document.root, key, key=True), key)
        problems.extend(found)
    return tuple(specs), tuple(sorted(problems)), dependency_keys


def _task(document: yamlsafe.Document, path: str, known: Collection[str], found: list[Problem]) -> TaskSpec | None:
    """The spec of one document, or ``None`` with its problems appended to ``found``."""

    def problem(pointer: str, message: str, *, at_key: bool = False) -> None:
        line, col = yamlsafe.locate(document.root, pointer, key=at_key)
        found.append(Problem(path, line, col, pointer, message))

    issues = schema.check(document.data, "task")
    for issue in issues:
        problem(issue.pointer, issue.message, at_key=issue.at_key)
    if issues:
        return None
    try:
        spec = TaskSpec.from_dict(document.data, Source(path, document.line))
    except SpecError as exc:
        where = schema.field_name(exc.pointer)
        named = not where or exc.message.startswith(where.rsplit(".", 1)[-1])  # "maxRetries must be..."
        problem(exc.pointer, exc.message if named else f"{where}: {exc.message}")
        return None
    if spec.run is None and spec.type not in known:
        problem(
            "/type" if "type" in document.data else "/name",
            f"task '{spec.name}' has no run and no executor is registered for type '{spec.type}': "
            "add a run with one of command, shell, http or python",
        )
        return None
    return spec
