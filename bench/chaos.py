"""A chaos soak: ``scheduler run`` nodes on one store, faults at random nodes, then invariants.

    python bench/chaos.py                                  # 60 s, seed 1, three nodes on one SQLite file
    python bench/chaos.py --duration 3600 --seed 7         # an hour
    python bench/chaos.py --mongo-uri 'mongodb://host:27017/chaos_1?replicaSet=rs0' --lease 3 --poll 0.25
    python bench/chaos.py --scheduler-tree ../old          # the nodes run another checkout's scheduler

Three nodes (``--nodes``) share a SQLite file, or the MongoDB database named in ``--mongo-uri``
(give a throwaway one: it is left as it is). Their ``tasks.d`` holds periodic command tasks, two
of them long runs that a freeze catches in the middle, periodic Python callables (a plain
function and a coroutine), and a one-shot Python task that works in steps and saves a
checkpoint after each one. Every run writes its own life to one log (``bench/jobs/lifelog.py``).

For ``--duration`` seconds, faults drawn from ``--seed`` hit the nodes one after the other
(``bench/chaos_faults.py``): SIGKILL then a restart, SIGSTOP for longer than the lease then
SIGCONT, SIGTERM (a clean stop) then a restart. Then the soak waits until every periodic task
has started a run again and the checkpointed task has completed (at most ``--settle``
seconds), stops every node with SIGTERM, reads the store through a node that runs nothing, and
checks (``bench/chaos_check.py``, the README lists the invariants): nothing started twice, no
two runs of a task at once (frozen nodes included; Python callables frozen with their node are
the documented limit, counted apart), every task scheduled again, the checkpointed task
resumed from its checkpoints and completed, nothing left RUNNING, the store agreeing with the
tasks, memory within bounds. Exit status 1 on any violation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: the nodes are its Daemons

import chaos_check as check  # noqa: E402
from chaos_check import Violation  # noqa: E402
from chaos_cluster import JOBS, Cluster, Settings  # noqa: E402
from chaos_faults import inflict, plan  # noqa: E402
from chaos_report import Gathered, Plan, evaluate  # noqa: E402
from engine import machine  # noqa: E402  (bench/engine.py: the machine line shared by the benchmarks)
from jobs import lifelog  # noqa: E402
from scheduler.redact import redact_url  # noqa: E402
from tests.support.wait import wait_until  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTED = "checkpointed"
STEP_SECONDS = 0.5
TARGETS = ("forbid-long-1", CHECKPOINTED)  # some faults hit the node running these: work in progress


def task_files(log: Path, steps: int) -> dict[str, dict]:
    """The tasks of the soak by name, as their files declare them."""
    recorder = {"command": [sys.executable, str(JOBS / "lifelog.py")]}

    def task(name: str, schedule: dict, run: dict, **fields) -> dict:
        doc = {"apiVersion": "scheduler/v1", "kind": "Task", "name": name, "schedule": schedule, "run": run, **fields}
        doc["parameters"] = {"log": str(log), **doc.get("parameters", {})}
        return doc

    tasks = [
        task("cmd-short", {"every": "1s"}, recorder, parameters={"seconds": 0.3}),
        # Runs longer than the lease, back to back: a node frozen while it runs one must lose it.
        task("forbid-long-1", {"every": "1s"}, recorder, concurrency="forbid", parameters={"seconds": 8}),
        task("forbid-long-2", {"every": "2s"}, recorder, concurrency="forbid", parameters={"seconds": 5}),
        task("py-thread", {"every": "1s"}, {"python": "lifelog:ticker"}, parameters={"seconds": 0.3}),
        task("py-async", {"every": "2s"}, {"python": "lifelog:async_ticker"}, parameters={"seconds": 0.5}),
        # Every crash that hits it (a kill, a freeze) costs an attempt, a clean stop none: enough of them to finish.
        task(CHECKPOINTED, {"after": "0s"}, {"python": "lifelog:checkpointed"},
             parameters={"steps": steps, "stepSeconds": STEP_SECONDS}, retry={"maxRetries": 1000, "retryDelay": "1s"}),
    ]
    return {doc["name"]: doc for doc in tasks}


def soak(args: argparse.Namespace, work: Path) -> int:
    log = work / "life.log"
    steps = max(20, round(args.duration / 2 / STEP_SECONDS))  # half the soak's length of checkpointed work
    files = task_files(log, steps)
    store = args.mongo_uri or f"sqlite:///{work / 'cluster.db'}"
    settings = Settings(lease=f"{round(args.lease * 1000)}ms", poll=f"{round(args.poll * 1000)}ms")
    cluster = Cluster(work, args.nodes, store, settings, args.scheduler_tree)
    print(machine(), f"load average {os.getloadavg()[0]:.1f}")
    print(f"seed {args.seed}, {args.duration:g} s of faults, {args.nodes} nodes on {redact_url(store)}, "
          f"leaseDuration {settings.lease}, pollInterval {settings.poll}; work in {work}")
    print(f"the nodes run {cluster.scheduler_package()}", flush=True)

    periodic = tuple(name for name, doc in files.items() if "every" in doc["schedule"])
    forbid = tuple(files)  # every task: concurrency forbid is the default
    try:
        cluster.start({f"{name}.yaml": yaml.safe_dump(doc, sort_keys=False) for name, doc in files.items()})
        gathered = Gathered(began=time.time())
        inflict_faults(cluster, args, gathered)
        settle(cluster, log, periodic, gathered.last_fault_end, args.settle)
        gathered.stopped = cluster.stop()
        gathered.tasks, gathered.runs = cluster.read_store()
        print(f"stopped and read the store at +{time.time() - gathered.began:.1f}s", flush=True)
    finally:
        cluster.kill()
    gathered.memory = cluster.memory.samples

    report = evaluate(lifelog.read(log), gathered, Plan(periodic, forbid, CHECKPOINTED, steps, args.lease))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print(report.text())
    if args.json:
        args.json.write_text(json.dumps(report.summary(), indent=2))
    return 1 if report.violations else 0


def inflict_faults(cluster: Cluster, args: argparse.Namespace, gathered: Gathered) -> None:
    """The faults of the seed's plan, one after the other, until ``args.duration`` seconds have passed."""
    for fault in plan(args.seed, args.nodes, args.lease, TARGETS):
        calm(cluster, fault.calm, gathered)
        if time.time() - gathered.began + fault.hold >= args.duration:
            return  # it would not be over by the end
        done = inflict(fault, cluster)
        if done is not None:
            gathered.faults.append(done)
            print(done.describe(gathered.began), flush=True)


def calm(cluster: Cluster, seconds: float, gathered: Gathered) -> None:
    """Let ``seconds`` pass between faults; a node that died meanwhile is a violation, and is restarted."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(0.2, left))  # the fault schedule's calm: nothing to wait for but time
        for node in cluster.nodes:
            if node.process is not None and node.process.poll() is not None:
                at = time.time() - gathered.began
                problem = f"{node.node_id} was found exited with {node.process.returncode} at +{at:.1f}s"
                gathered.incidents.append(Violation("node down", "; ".join(filter(None, [problem, cluster.restart(node)]))))


def settle(cluster: Cluster, log: Path, periodic: tuple[str, ...], since: float, limit: float) -> None:
    """Wait until every periodic task has started a run since the last fault and the checkpointed
    task has completed; after ``limit`` seconds, go on: the checks then say what is missing."""

    def settled() -> bool:
        records = lifelog.read(log)
        return (all(check.started_after(records, task, since) for task in periodic)
                and (cluster.detail(CHECKPOINTED) or {}).get("status") == "COMPLETED")

    began = time.time()
    try:
        wait_until(settled, timeout=limit, what="the tasks to run again after the last fault", every=0.2)
        print(f"every task ran again {time.time() - began:.1f}s after the faults", flush=True)
    except AssertionError:
        print(f"the tasks did not all run again within {limit:g}s after the faults", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults (default 60)")
    parser.add_argument("--seed", type=int, default=1, help="draws the faults (default 1)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--mongo-uri", help="a MongoDB database for the store, instead of a SQLite file")
    parser.add_argument("--lease", type=float, default=2.0, help="leaseDuration in seconds (default 2)")
    parser.add_argument("--poll", type=float, default=0.15, help="pollInterval in seconds (default 0.15)")
    parser.add_argument("--settle", type=float, default=60.0,
                        help="seconds to wait after the faults for the tasks to run again (default 60)")
    parser.add_argument("--scheduler-tree", type=Path, default=ROOT,
                        help="the checkout whose scheduler package the nodes run (default this one)")
    parser.add_argument("--workdir", type=Path, help="keep the store, logs and task files here (default: a "
                        "temporary directory, removed unless a violation was found)")
    parser.add_argument("--json", type=Path, help="also write the report's summary here, as JSON")
    args = parser.parse_args()
    args.scheduler_tree = args.scheduler_tree.resolve()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    status = soak(args, work)
    if args.workdir is None and status == 0:
        shutil.rmtree(work)
    elif args.workdir is None:
        print(f"the store, the nodes' logs and the tasks' log are kept in {work}")
    return status


if __name__ == "__main__":
    sys.exit(main())
