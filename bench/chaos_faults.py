"""The faults of the chaos soak: a plan drawn from a seed, and how each fault is done to a node.

The plan is the same for the same seed: the kind of each fault, its victim, how long it holds
and the calm before it. Faults come one after the other (the next one begins once the previous
victim is back), so their times drift with how fast nodes restart, not their order. Kinds come
in shuffled rounds of three, so that a minute sees several of each:

- ``kill``: SIGKILL, then a restart after ``hold`` seconds (a crash: leases are left to expire);
- ``freeze``: SIGSTOP for ``hold`` seconds, longer than the lease and the peers' recovery grace,
  then SIGCONT (a long GC pause, a stalled process): peers take the node's runs over while it
  cannot see it;
- ``term``: SIGTERM, a clean stop that must exit 0, then a restart after ``hold`` seconds.

A victim is a node drawn by the seed or, for two faults in three, the node running a given task
at that moment (``running``): the work in progress is what faults must not lose or double. The
first node is only ever frozen, never killed nor stopped: one process lives through the whole
soak, so that its memory would show a leak.
"""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Iterator, Sequence

from scheduler.engine import EngineConfig

if TYPE_CHECKING:
    from chaos_cluster import Cluster
    from tests.support.daemon import Daemon

KINDS = ("kill", "freeze", "term")
KEPT = 0  # the index of the node that is only ever frozen


@dataclass(frozen=True)
class Fault:
    kind: str
    node: int  # index of the victim, when ``running`` is None or that task runs nowhere
    running: str | None  # the victim is the node running this task
    hold: float  # seconds frozen, or down before the restart
    calm: float  # seconds before the fault, once the previous one is over


def plan(seed: int, nodes: int, lease: float, targets: Sequence[str]) -> Iterator[Fault]:
    """An endless, reproducible sequence of faults; ``targets`` are tasks whose node may be aimed at."""
    rng = random.Random(seed)
    # A peer takes a lease over once it has seen it expired for the recovery grace.
    takeover = lease + EngineConfig(lease_duration=timedelta(seconds=lease)).recovery_grace.total_seconds()
    while True:
        kinds = list(KINDS)
        rng.shuffle(kinds)
        for kind in kinds:
            hold = takeover + rng.uniform(0.5, 2.5) if kind == "freeze" else rng.uniform(0.0, 1.0)
            node = rng.randrange(nodes) if kind == "freeze" or nodes == 1 else rng.randrange(1, nodes)
            yield Fault(kind, node, rng.choice([None, *targets]), hold, rng.uniform(1.0, 3.0))


@dataclass(frozen=True)
class Done:
    """A fault as it happened: to which node, when (``time.time()``, as the tasks' log), how it went."""

    fault: Fault
    node: str
    running: str | None  # the task the victim was running, when it was chosen for it
    began: float
    ended: float  # the node thawed, or restarted and ready
    outcome: str  # "" when it went as planned, else what went wrong (a violation)

    def describe(self, since: float) -> str:
        aim = f" (running {self.running})" if self.running else ""
        what = f"{self.fault.kind} {self.node}{aim}, {self.fault.hold:.1f}s {'frozen' if self.fault.kind == 'freeze' else 'down'}"
        when = time.strftime("%H:%M:%S", time.localtime(self.began))
        return f"+{self.began - since:6.1f}s {when} {what}" + (f": {self.outcome}" if self.outcome else "")


def inflict(fault: Fault, cluster: Cluster) -> Done | None:
    """Do ``fault`` to its victim and bring the victim back; None when no node is up to take it."""
    victim, running = _victim(fault, cluster)
    if victim is None:
        return None
    began = time.time()
    process = victim.process
    assert process is not None
    outcome = ""
    if fault.kind == "freeze":
        process.send_signal(signal.SIGSTOP)
        time.sleep(fault.hold)  # the fault itself: the node stays frozen this long, whatever happens
        process.send_signal(signal.SIGCONT)
    else:
        process.send_signal(signal.SIGKILL if fault.kind == "kill" else signal.SIGTERM)
        code = cluster.wait_exit(victim)
        if fault.kind == "term" and code != 0:
            outcome = f"exited with {code} on SIGTERM" if code is not None else "did not stop on SIGTERM in time"
        time.sleep(fault.hold)  # down for a while, as a node restarted by systemd would be
        outcome = "; ".join(filter(None, [outcome, cluster.restart(victim)]))
    return Done(fault, victim.node_id, running, began, time.time(), outcome)


def _victim(fault: Fault, cluster: Cluster) -> tuple[Daemon | None, str | None]:
    """The node running ``fault.running`` if one does (and may take the fault), else the node drawn
    (or another one up)."""
    runner = cluster.runner_of(fault.running) if fault.running else None
    if runner is not None and (fault.kind == "freeze" or runner is not cluster.nodes[KEPT]):
        return runner, fault.running
    up = cluster.up()
    if not up:
        return None, None
    wanted = cluster.nodes[fault.node]
    if wanted in up:
        return wanted, None
    others = [node for node in up if fault.kind == "freeze" or node is not cluster.nodes[KEPT]]
    return (others[fault.node % len(others)] if others else None), None


