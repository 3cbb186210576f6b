"""The same workloads on this project and on its Python peers, APScheduler 3.11 and 4.0, all on SQLite.

    python bench/peers.py                         # 10,000 one-shots, 1,000 tasks/s for 10 s, 2 rounds
    python bench/peers.py --count 2000 --seconds 5 --rounds 1 --shapes spread
    python bench/peers.py --only ours,apscheduler3

Workloads, each measured in a fresh process and a fresh temporary directory:

- throughput: N no-op one-shots due now, registered in the store beforehand (not timed); the time from
  the scheduler's start until all N have run. Ours: bench/engine.py's throughput (after: 0s tasks).
  APScheduler 3: date-trigger jobs. APScheduler 4: one DateTrigger schedule per task.
- lateness: 1,000 no-op tasks every second; each run's start minus its slot, over the slots of a window of
  `--seconds` that opens one second after both the first slot and the scheduler's start (warm-up), with
  2 s more for late runs to start. Slots spread evenly over the second (`spread`), or all at the same
  instant (`instant`). A slot of the window that did not run by then counts as not run, and is reported.

The sides run interleaved (ours, APScheduler 3, APScheduler 4, ours, ...) so that the machine's other
work falls on each alike; the summary gives the median over the rounds and the ratios ours / peer.

How each side is configured (the same no-op coroutine everywhere; every side keeps its store's and
library's defaults otherwise, and gets the settings that make "a persisted task, late runs still run,
one run at a time" mean the same thing):

- ours: bench/peers_ours.py, the engine in process as bench/engine.py runs it: SQLite store (WAL,
  synchronous=NORMAL, its own settings), `maxConcurrentRuns` 64 (throughput, the default) or 2,000
  (lateness), task defaults (`concurrency: forbid`, `missedRuns: runOnce`), the GC tuned as `scheduler run`
  tunes it for the lateness workload.
- apscheduler3 (3.11.3): bench/peers_apscheduler3.py. AsyncIOScheduler, its default AsyncIOExecutor
  (a coroutine job runs as a task on the loop, no pool limit), SQLAlchemyJobStore on a SQLite file
  (SQLite's defaults: rollback journal, synchronous=FULL), `misfire_grace_time=None`, `coalesce=True`,
  `max_instances=1`.
- apscheduler4 (4.0.0a6): bench/peers_apscheduler4.py. AsyncScheduler (role both), the "async"
  executor, `max_concurrent_jobs` 64 / 2,000 as ours, SQLAlchemyDataStore on `sqlite+aiosqlite` (SQLite's
  defaults), LocalEventBroker; one task per schedule (`max_running_jobs=1`), `misfire_grace_time=None`,
  `coalesce=latest`.

APScheduler 3 and 4 are both the `apscheduler` package, so they cannot share an environment: each peer
lives in its own virtual environment, created on first use with the exact versions pinned below, under
`$XDG_CACHE_HOME/scheduler/bench-peers/<peer>` (default `~/.cache/...`; needs PyPI once) and kept.
Ours runs with the interpreter that runs this script (the checkout's virtual environment).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import machine  # noqa: E402  (bench/engine.py)

BENCH = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Side:
    name: str
    worker: str  # the script, beside this one, that runs the workloads and prints JSON
    pins: tuple[str, ...] = ()  # the whole environment, exactly; empty: this interpreter (ours)


SIDES = (
    Side("ours", "peers_ours.py"),
    Side("apscheduler3", "peers_apscheduler3.py", (
        "APScheduler==3.11.3", "SQLAlchemy==2.1.9", "typing_extensions==4.16.0", "tzlocal==5.4.5",
    )),
    Side("apscheduler4", "peers_apscheduler4.py", (
        "APScheduler==4.0.0a6", "SQLAlchemy==2.1.9", "aiosqlite==0.22.1", "anyio==4.16.0", "attrs==26.1.0",
        "greenlet==3.5.6", "idna==3.20", "tenacity==9.2.1", "typing_extensions==4.16.0", "tzlocal==5.4.5",
        # Its SQLAlchemy store imports sniffio without requiring it; anyio 4.16 no longer brings it.
        "sniffio==1.3.1",
    )),
)
SHAPES = {"spread": 1.0, "instant": 0.0}  # seconds over which each second's slots are spread


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "scheduler" / "bench-peers"


def interpreter(side: Side) -> str:
    """The Python that runs ``side``: this one for ours, else the side's own environment, made once."""
    if not side.pins:
        return sys.executable
    venv = cache_dir() / side.name
    wanted = "\n".join(side.pins) + "\n"
    marker = venv / "bench-pins.txt"
    if not (marker.is_file() and marker.read_text() == wanted):  # absent, or made with other pins
        shutil.rmtree(venv, ignore_errors=True)
        print(f"installing {side.name} into {venv}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [venv / "bin/python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *side.pins],
            check=True,
        )
        marker.write_text(wanted)
    return str(venv / "bin/python")


def run_worker(python: str, side: Side, workload: str, options: list[str], timeout: float) -> dict:
    """One measurement: a fresh process in a fresh directory; its JSON answer, or why there is none."""
    with tempfile.TemporaryDirectory(prefix=f"peers-{side.name}-") as tmp:
        command = [python, str(BENCH / side.worker), workload, *options, "--dir", tmp]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"no answer within {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(done.stdout)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def slots_in_window(count: int, first: float, spread: float, start: float, end: float) -> int:
    """How many slots ``first + spread * i / count + k`` (k = 0, 1, ...) of the ``count`` tasks fall in [start, end)."""
    total = 0
    for i in range(count):
        phase = first + spread * i / count
        k_start = max(0, _ceil(start - phase))
        k_end = max(0, _ceil(end - phase))
        total += k_end - k_start
    return total


def _ceil(x: float) -> int:
    return -int(-x // 1)


def lateness_summary(result: dict, count: int, seconds: float, spread: float) -> dict:
    """p50, p99 and max lateness in ms over the window's slots, and how many of them ran."""
    opened = max(result["first"], result["started"]) + 1  # one second of warm-up
    closed = opened + seconds - 1
    lateness = [late for slot, late in result["samples"] if opened <= slot < closed]
    summary = {
        "ran": len(lateness), "slots": slots_in_window(count, result["first"], spread, opened, closed),
        "seeding": result["started"] - result["first"] + 2,
    }
    if lateness:
        summary.update(p50=percentile(lateness, 0.5) * 1000, p99=percentile(lateness, 0.99) * 1000,
                       max=max(lateness) * 1000)
    return summary


def ratio(ours: float | None, peer: float | None) -> str:
    """ours / peer, as the table shows it."""
    if ours is None or peer is None:
        return "n/a"
    if peer == 0:
        return "n/a" if ours else "1.00"
    value = ours / peer
    return f"{value:,.0f}" if value >= 100 else f"{value:#.3g}"  # three significant digits: 0.00152, 3.00, 19.1


def median_of(results: list[dict], key: str) -> float | None:
    values = [result[key] for result in results if key in result]
    return statistics.median(values) if values else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000, help="one-shots of the throughput workload")
    parser.add_argument("--tasks", type=int, default=1000, help="periodic tasks of the lateness workload")
    parser.add_argument("--seconds", type=float, default=10, help="lateness window, after 1 s of warm-up")
    parser.add_argument("--shapes", default="spread,instant", help="lateness shapes: spread, instant or both")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default=",".join(side.name for side in SIDES), help="sides to run")
    parser.add_argument("--workloads", default="throughput,lateness")
    args = parser.parse_args(argv)
    for option, known in (("shapes", SHAPES), ("only", [s.name for s in SIDES]),
                          ("workloads", ["throughput", "lateness"])):
        chosen = [name for name in getattr(args, option).split(",") if name]
        unknown = set(chosen) - set(known)
        if unknown or not chosen:
            parser.error(f"--{option}: choose among {', '.join(known)}")
        setattr(args, option, chosen)
    if args.seconds < 2 or args.count < 1 or args.tasks < 1 or args.rounds < 1:
        parser.error("--seconds must be at least 2, --count, --tasks and --rounds at least 1")
    return args


def load() -> float:
    return os.getloadavg()[0]


def main() -> None:
    args = parse_args()
    sides = [side for side in SIDES if side.name in args.only]
    pythons = {side.name: interpreter(side) for side in sides}
    print(machine())
    print("peers: " + ", ".join(f"{side.name} = {' '.join(side.pins)}" for side in sides if side.pins))
    measurements = [("throughput", None)] if "throughput" in args.workloads else []
    if "lateness" in args.workloads:
        measurements += [("lateness", shape) for shape in args.shapes]
    results: dict[tuple[str, str | None, str], list[dict]] = {}
    loads = [load()]
    for round_ in range(1, args.rounds + 1):
        for workload, shape in measurements:
            for side in sides:
                loads.append(load())
                if workload == "throughput":
                    raw = run_worker(pythons[side.name], side, workload, ["--count", str(args.count)], timeout=1800)
                    summary = dict(raw)
                    if "elapsed" in raw:
                        summary["rate"] = raw["runs"] / raw["elapsed"]
                        line = f"{raw['runs']:,} runs in {raw['elapsed']:6.2f} s: {summary['rate']:7,.0f} runs/s"
                else:
                    options = ["--count", str(args.tasks), "--seconds", str(args.seconds), "--spread",
                               str(SHAPES[shape])]
                    raw = run_worker(pythons[side.name], side, workload, options, timeout=args.seconds + 600)
                    summary = raw if "error" in raw else lateness_summary(raw, args.tasks, args.seconds, SHAPES[shape])
                    if "ran" in summary:
                        line = (f"ran {summary['ran']:,} of {summary['slots']:,} slots"
                                f" (registered in {summary['seeding']:.1f} s)")
                        if "p50" in summary:
                            line = (f"p50 {summary['p50']:7.1f} ms, p99 {summary['p99']:7.1f} ms, max"
                                    f" {summary['max']:7.1f} ms; " + line)
                if "error" in summary:
                    line = f"FAILED: {summary['error']}"
                elif raw.get("problems"):
                    line += f"; problems: {raw['problems']}"
                label = workload + (f" {shape}" if shape else "")
                print(f"round {round_}  {label:<18} {side.name:<13} {line}", flush=True)
                results.setdefault((workload, shape, side.name), []).append(summary)
    loads.append(load())
    print(f"load average (1 min) during the run: {min(loads):.2f}-{max(loads):.2f}")
    print_summary(results, measurements, [side.name for side in sides], args.rounds)


def print_summary(results: dict, measurements: list, names: list[str], rounds: int) -> None:
    peers = [name for name in names if name != "ours"]
    header = f"{'median of ' + str(rounds) + ' round(s)':<32}" + "".join(f"{name:>14}" for name in names)
    if "ours" in names:
        header += "".join(f"{'ours/' + peer:>20}" for peer in peers)
    print(header)
    rows = []
    for workload, shape in measurements:
        if workload == "throughput":
            rows.append(("throughput, runs/s (higher: better)", (workload, shape), "rate", "{:,.0f}"))
        else:
            rows.append((f"lateness {shape}: slots run", (workload, shape), "ran", "{:,.0f}"))
            rows.append((f"lateness {shape}: p50 ms (lower)", (workload, shape), "p50", "{:.1f}"))
            rows.append((f"lateness {shape}: p99 ms (lower)", (workload, shape), "p99", "{:.1f}"))
    for label, (workload, shape), key, fmt in rows:
        medians = {name: median_of(results.get((workload, shape, name), []), key) for name in names}
        line = f"{label:<32}" + "".join(f"{'-' if medians[n] is None else fmt.format(medians[n]):>14}" for n in names)
        if "ours" in names:
            line += "".join(f"{ratio(medians['ours'], medians[peer]):>20}" for peer in peers)
        print(line)


if __name__ == "__main__":
    main()
