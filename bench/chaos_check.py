"""The invariants of the chaos soak, checked on what the tasks wrote and on what the store holds.

Pure functions: records of the tasks' own log (``jobs/lifelog.py``) and the store's task and
run documents (as the HTTP API shows them) in, ``Violation``s out, each with its evidence.
``bench/chaos.py`` runs them after the clean stop of every node; the unit tests feed them
made-up lives to prove that each one can fail.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    from jobs.lifelog import Record

ENDED = ("end", "term", "stop")  # the last words of a run that was not killed with SIGKILL


def clock(at: float) -> str:
    """A ``time.time()`` as the nodes' logs show it (local time), to the millisecond."""
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at % 1 * 1000):03d}"


@dataclass(frozen=True)
class Violation:
    invariant: str
    evidence: str


@dataclass(frozen=True)
class RunLife:
    """One process (or thread) running one run: from its start to the last thing it wrote."""

    run: str
    task: str
    node: str
    pid: int
    via: str
    started: float
    last: float
    last_event: str

    def describe(self) -> str:
        return (f"{self.run} on {self.node} (pid {self.pid}, {self.via}) "
                f"from {clock(self.started)} to {clock(self.last)} ({self.last_event})")


@dataclass(frozen=True)
class Overlap:
    task: str
    earlier: RunLife
    later: RunLife

    @property
    def seconds(self) -> float:
        return self.earlier.last - self.later.started

    def describe(self) -> str:
        return (f"{self.task}: {self.earlier.describe()} still ran {self.seconds:.3f}s after "
                f"{self.later.describe()} started")


def lives(records: Iterable[Record]) -> list[RunLife]:
    """The life of every run that started, by (run, node, pid): a run started twice has two lives."""
    first: dict[tuple, Record] = {}
    last: dict[tuple, Record] = {}
    for record in records:
        key = (record.run, record.node, record.pid)
        if record.event == "start":
            first.setdefault(key, record)
        if key in first:
            last[key] = record
    return sorted(
        (RunLife(r.run, r.task, r.node, r.pid, r.via, r.at, last[key].at, last[key].event) for key, r in first.items()),
        key=lambda life: life.started,
    )


# -- 1. no (task, slot, attempt) started twice --------------------------------------------------


def duplicate_starts(records: Iterable[Record]) -> list[Violation]:
    starts: dict[tuple, list[Record]] = defaultdict(list)
    for record in records:
        if record.event == "start":
            starts[(record.task, record.slot, record.attempt)].append(record)
    return [
        Violation("started twice", f"{task} slot {slot} attempt {attempt} started "
                  + ", ".join(f"on {r.node} (pid {r.pid}) at {clock(r.at)}" for r in found))
        for (task, slot, attempt), found in starts.items() if len(found) > 1
    ]


# -- 2. no two runs of a forbid task at once ------------------------------------------------------


def overlaps(all_lives: Sequence[RunLife]) -> list[Overlap]:
    """Runs of one task alive at the same time: each run that started before an earlier one's last sign of life."""
    found = []
    latest: dict[str, RunLife] = {}  # by task, the earlier run that lived longest so far
    for life in all_lives:  # in start order
        earlier = latest.get(life.task)
        if earlier is not None and earlier.last > life.started:
            found.append(Overlap(life.task, earlier, life))
        if earlier is None or life.last > earlier.last:
            latest[life.task] = life
    return found


@dataclass(frozen=True)
class Freeze:
    node: str
    began: float
    ended: float


def frozen_callable(overlap: Overlap, freezes: Iterable[Freeze], lease: float) -> bool:
    """The documented limit: a Python callable runs inside its node and freezes with it, so a peer may
    start the task while it is frozen, and it runs on after the thaw until it sees its cancel. A
    command has no such excuse (the node's watchdog stops it at its lease deadline), nor a callable
    that started after the freeze began: its node should have seen that its lease had run out."""
    earlier = overlap.earlier
    return earlier.via != "command" and any(
        f.node == earlier.node and earlier.started <= f.began <= overlap.later.started <= f.ended + lease
        for f in freezes
    )


def forbid_overlaps(all_lives: Sequence[RunLife], forbid: Iterable[str], freezes: Sequence[Freeze],
                    lease: float) -> tuple[list[Violation], list[Overlap]]:
    """Overlapping runs of ``forbid`` tasks: the violations, and those the documented limit explains."""
    forbid = set(forbid)
    found = [overlap for overlap in overlaps(all_lives) if overlap.task in forbid]
    excused = [overlap for overlap in found if frozen_callable(overlap, freezes, lease)]
    violations = [Violation("forbid overlap", overlap.describe()) for overlap in found if overlap not in excused]
    return violations, excused


# -- 3. every periodic task ran again after the last fault ----------------------------------------


def started_after(records: Sequence[Record], task: str, since: float) -> bool:
    """``task`` started a run after ``since``: the cluster schedules it again (a long run need not have
    ended by the clean stop, which hands it back)."""
    return any(r.task == task and r.event == "start" and r.at > since for r in records)


def liveness(records: Sequence[Record], periodic: Iterable[str], since: float) -> list[Violation]:
    return [
        Violation("no run after the last fault", f"{task} started no run after {clock(since)}")
        for task in periodic if not started_after(records, task, since)
    ]


# -- 4. the checkpointing task finished, resuming from its checkpoints ----------------------------


@dataclass(frozen=True)
class Resume:
    run: str
    node: str
    resumed_from: int
    saved_before: int  # the last checkpoint earlier runs had written when this one started


def resumes(records: Sequence[Record], task: str) -> list[Resume]:
    """Every start of ``task`` after its first, with where it resumed and what had been saved before.

    A checkpoint written by a run after another run of the task started does not count: that run had
    lost its lease (frozen with its node, it went on after the thaw) and the store refused it."""
    starts = [r for r in records if r.task == task and r.event == "start"]
    began = {start.run: start.at for start in starts}
    storable = [
        r for r in records if r.task == task and r.event == "checkpoint"
        and not any(s.run != r.run and began[r.run] < s.at <= r.at for s in starts)
    ]
    return [
        Resume(start.run, start.node, start.extra["resumedFrom"],
               max((r.extra["done"] for r in storable if r.at <= start.at and r.run != start.run), default=0))
        for start in starts[1:]
    ]


def checkpointing(records: Sequence[Record], task: str, steps: int, stored: Mapping[str, Any] | None) -> list[Violation]:
    """Each resume starts from the last checkpoint written, give or take the one its node may not
    have stored yet when it died; every step was done; the run ended and the store says COMPLETED."""
    violations = []
    for resume in resumes(records, task):
        if resume.resumed_from > resume.saved_before:
            violations.append(Violation("resumed from a checkpoint nobody wrote",
                                        f"{resume.run} on {resume.node} resumed from {resume.resumed_from}, "
                                        f"the last checkpoint written was {resume.saved_before}"))
        elif resume.resumed_from < resume.saved_before - 1:
            violations.append(Violation("resumed behind its checkpoints",
                                        f"{resume.run} on {resume.node} resumed from {resume.resumed_from} although "
                                        f"checkpoint {resume.saved_before} was written before it started"))
    done = {r.extra["done"] for r in records if r.task == task and r.event == "checkpoint"}
    missing = sorted(set(range(1, steps + 1)) - done)
    if missing:
        violations.append(Violation("checkpointed work not done", f"{task}: steps {_ranges(missing)} never done"))
    if not any(r.task == task and r.event == "end" for r in records):
        violations.append(Violation("checkpointed work not finished", f"{task} never wrote its end"))
    status = (stored or {}).get("status")
    if status != "COMPLETED":
        violations.append(Violation("checkpointed work not finished",
                                    f"{task} is {status} in the store: {(stored or {}).get('lastError')}"))
    return violations


def _ranges(numbers: list[int]) -> str:
    return f"{numbers[0]}-{numbers[-1]} ({len(numbers)})" if len(numbers) > 3 else ", ".join(map(str, numbers))


# -- 5. nothing RUNNING once every node stopped cleanly ---------------------------------------


def left_running(tasks: Iterable[Mapping[str, Any]], runs: Iterable[Mapping[str, Any]]) -> list[Violation]:
    violations = [
        Violation("left RUNNING", f"{task['itemId']} is {task['status']}, lease {task.get('lease')}")
        for task in tasks if task["status"] == "RUNNING" or task.get("lease")
    ]
    violations += [
        Violation("left RUNNING", f"run {run['runId']} on {run['node']} has no outcome")
        for run in runs if run["outcome"] is None
    ]
    return violations


# -- the store agrees with the tasks ---------------------------------------------------------------


def store_agrees(records: Sequence[Record], runs: Iterable[Mapping[str, Any]]) -> list[Violation]:
    """Every run that started has its run record, and every run recorded as a success wrote its end."""
    runs = list(runs)
    recorded = {run["runId"] for run in runs}
    ended = {r.run for r in records if r.event == "end"}
    started = {r.run: r for r in records if r.event == "start"}
    violations = [
        Violation("run missing from the store", f"{run} started on {record.node} at {clock(record.at)}")
        for run, record in started.items() if run not in recorded
    ]
    violations += [
        Violation("success the task never finished", f"{run['runId']} recorded a success by {run['node']}, "
                  "but the task never wrote its end")
        for run in runs if run["outcome"] == "success" and run["runId"] not in ended
    ]
    return violations


# -- 6. memory ----------------------------------------------------------------------------------


def rss_growth(samples: Mapping[str, Sequence[tuple[float, int]]], warmup: float, factor: float,
               margin_kb: int) -> list[Violation]:
    """For each process that lived past ``warmup`` seconds: its RSS (kB) never went above
    ``factor`` times what it was at ``warmup``, plus ``margin_kb``."""
    violations = []
    for process, series in samples.items():
        after = [(at, kb) for at, kb in series if at >= warmup]
        if len(after) < 2:
            continue
        base = after[0][1]
        at, peak = max(after, key=lambda sample: sample[1])
        if peak > factor * base + margin_kb:
            violations.append(Violation("memory grew", f"{process}: {peak / 1024:.0f} MB at {at:.0f}s, "
                                        f"{base / 1024:.0f} MB at {after[0][0]:.0f}s"))
    return violations
