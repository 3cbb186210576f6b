"""What the chaos soak found: every invariant checked at once, then said in plain text and in JSON.

``evaluate`` takes what the soak gathered (the tasks' log, the faults, the store read after the
clean stop, the memory samples) and runs the checks of ``chaos_check``; the ``Report`` prints
the faults by kind, the runs per task, the checkpoint resumes, memory, and every violation with
its evidence.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import chaos_check as check
from chaos_check import Violation

if TYPE_CHECKING:
    from chaos_faults import Done
    from jobs.lifelog import Record


@dataclass(frozen=True)
class Plan:
    """What the soak asked of the cluster, as the checks need it."""

    periodic: tuple[str, ...]
    forbid: tuple[str, ...]
    checkpointed: str
    steps: int
    lease: float
    rss_warmup: float = 15.0  # seconds after a node's start its memory is taken as the baseline
    rss_factor: float = 2.0
    rss_margin_kb: int = 30 * 1024


@dataclass
class Gathered:
    """What the soak saw: faults done, trouble met along the way, the clean stop, the store after it."""

    began: float
    faults: list[Done] = field(default_factory=list)
    incidents: list[Violation] = field(default_factory=list)  # nodes that died on their own, did not come back
    stopped: dict[str, tuple[int | None, float]] = field(default_factory=dict)
    tasks: list[dict] = field(default_factory=list)
    runs: dict[str, list[dict]] = field(default_factory=dict)
    memory: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    @property
    def last_fault_end(self) -> float:
        return max((done.ended for done in self.faults), default=self.began)


@dataclass
class Report:
    faults: Counter
    runs: dict[str, dict[str, int]]
    resumes: list[check.Resume]
    excused: list[check.Overlap]
    memory: dict[str, dict[str, float]]
    stopped: dict[str, tuple[int | None, float]]
    violations: list[Violation]

    def text(self) -> str:
        lines = [f"faults: {sum(self.faults.values())} ({', '.join(f'{k} {n}' for k, n in sorted(self.faults.items()))})"]
        lines.append("runs per task (started; ended, stopped, killed; successes the store recorded):")
        for task, count in sorted(self.runs.items()):
            lines.append(f"  {task:16} {count['started']:5} started; {count['ended']} ended, {count['stopped']} stopped, "
                         f"{count['killed']} killed; {count['successes']} successes")
        if self.resumes:
            behind = sum(r.resumed_from < r.saved_before for r in self.resumes)
            lines.append(f"checkpointed task: resumed {len(self.resumes)} times, from steps "
                         f"{', '.join(str(r.resumed_from) for r in self.resumes[:12])}{' ...' if len(self.resumes) > 12 else ''}"
                         f" ({behind} from the checkpoint before the last one written, not yet stored when its node stopped)")
        if self.excused:
            longest = max(overlap.seconds for overlap in self.excused)
            lines.append(f"documented limit, not a violation: {len(self.excused)} Python run(s) frozen with their node "
                         f"ran on beside the run a peer started, up to {longest:.2f}s")
        lines.append("memory (VmRSS MB of each node's longest-lived process: first, after warm-up, last, max):")
        for node, processes in sorted(_by_node(self.memory).items()):
            process, rss = max(processes.items(), key=lambda item: item[1]["lived"])
            lines.append(f"  {process:18} lived {rss['lived']:4.0f}s: {rss['first']:4.0f} {rss['warm']:4.0f} "
                         f"{rss['last']:4.0f} {rss['max']:4.0f}   (of {len(processes)} processes of the node, the "
                         f"largest reached {max(r['max'] for r in processes.values()):.0f} MB)")
        lines.append("clean stop: " + ", ".join(f"{node} exit {code} in {seconds:.1f}s"
                                                for node, (code, seconds) in sorted(self.stopped.items())))
        lines.append(f"violations: {len(self.violations)}")
        lines += [f"  [{v.invariant}] {v.evidence}" for v in self.violations]
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        """The report as JSON data, for a test or a script to look at."""
        return {
            "faults": dict(self.faults),
            "runs": self.runs,
            "resumes": [{"run": r.run, "node": r.node, "resumedFrom": r.resumed_from, "savedBefore": r.saved_before}
                        for r in self.resumes],
            "excusedOverlaps": [overlap.seconds for overlap in self.excused],
            "memory": self.memory,
            "stopped": {node: {"exitCode": code, "seconds": s} for node, (code, s) in self.stopped.items()},
            "violations": [{"invariant": v.invariant, "evidence": v.evidence} for v in self.violations],
        }


def evaluate(records: Sequence[Record], gathered: Gathered, plan: Plan) -> Report:
    tasks = {task["itemId"]: task for task in gathered.tasks}
    runs = [run for task_runs in gathered.runs.values() for run in task_runs]
    freezes = [check.Freeze(d.node, d.began, d.ended) for d in gathered.faults if d.fault.kind == "freeze"]
    all_lives = check.lives(records)
    overlapping, excused = check.forbid_overlaps(all_lives, plan.forbid, freezes, plan.lease)
    violations = [
        *gathered.incidents,
        *(Violation("fault", done.describe(gathered.began)) for done in gathered.faults if done.outcome),
        *check.duplicate_starts(records),
        *overlapping,
        *check.liveness(records, plan.periodic, gathered.last_fault_end),
        *check.checkpointing(records, plan.checkpointed, plan.steps, tasks.get(plan.checkpointed)),
        *_unclean_stops(gathered.stopped),
        *check.left_running(gathered.tasks, runs),
        *check.store_agrees(records, runs),
        *check.rss_growth(gathered.memory, plan.rss_warmup, plan.rss_factor, plan.rss_margin_kb),
    ]
    return Report(
        faults=Counter(done.fault.kind for done in gathered.faults),
        runs=_runs_per_task(all_lives, tasks),
        resumes=check.resumes(records, plan.checkpointed),
        excused=excused,
        memory={process: _rss(series, plan.rss_warmup) for process, series in gathered.memory.items() if series},
        stopped=gathered.stopped,
        violations=violations,
    )


def _unclean_stops(stopped: Mapping[str, tuple[int | None, float]]) -> list[Violation]:
    return [Violation("unclean stop", f"{node} exited with {code} on SIGTERM" if code is not None
                      else f"{node} did not stop within {seconds:.0f}s of SIGTERM")
            for node, (code, seconds) in stopped.items() if code != 0]


def _runs_per_task(all_lives: Sequence[check.RunLife], tasks: Mapping[str, Mapping]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {
        task: {"started": 0, "ended": 0, "stopped": 0, "killed": 0, "successes": detail.get("successCount", 0)}
        for task, detail in tasks.items()
    }
    for life in all_lives:
        count = counts.setdefault(life.task, {"started": 0, "ended": 0, "stopped": 0, "killed": 0, "successes": 0})
        count["started"] += 1
        count["ended" if life.last_event == "end" else "stopped" if life.last_event in check.ENDED else "killed"] += 1
    return counts


def _by_node(memory: Mapping[str, dict[str, float]]) -> dict[str, dict[str, dict[str, float]]]:
    nodes: dict[str, dict[str, dict[str, float]]] = {}
    for process, rss in memory.items():  # "node-1 pid 42"
        nodes.setdefault(process.split()[0], {})[process] = rss
    return nodes


def _rss(series: Sequence[tuple[float, int]], warmup: float) -> dict[str, float]:
    warm = next((kb for at, kb in series if at >= warmup), series[-1][1])
    return {"first": series[0][1] / 1024, "warm": warm / 1024, "last": series[-1][1] / 1024,
            "max": max(kb for _, kb in series) / 1024, "lived": series[-1][0]}
