"""The chaos soak's checks (``bench/chaos_check.py``) fail on made-up lives that break each invariant,
and its fault plan (``bench/chaos_faults.py``) is the same for the same seed: a soak that could
not fail would prove nothing."""

from __future__ import annotations

import itertools

from bench import chaos_check as check
from bench.chaos_faults import KINDS, plan
from bench.jobs.lifelog import Record


def record(event: str, at: float, *, task: str = "t", attempt: int = 1, node: str = "node-1", pid: int = 100,
           via: str = "command", slot: str = "2030-01-01T00:00:00Z", **extra) -> Record:
    return Record(event, task, slot, attempt, f"{task}:{slot}:{attempt}", node, pid, via, at, extra)


def run(start: float, last: float, last_event: str = "end", **identity) -> list[Record]:
    return [record("start", start, **identity), record(last_event, last, **identity)]


def invariants(violations: list[check.Violation]) -> list[str]:
    return [violation.invariant for violation in violations]


def test_a_slot_and_attempt_started_on_two_nodes_is_a_duplicate():
    records = [*run(0, 1, node="node-1"), *run(0.5, 1.5, node="node-2", pid=200), *run(2, 3, attempt=2)]
    [violation] = check.duplicate_starts(records)
    assert "attempt 1" in violation.evidence and "node-1" in violation.evidence and "node-2" in violation.evidence


def test_a_command_alive_after_the_next_attempt_started_overlaps_it_frozen_node_or_not():
    records = [*run(0, 5, "term", node="node-1"), *run(4, 8, attempt=2, node="node-2", pid=200)]
    freezes = [check.Freeze("node-1", 2, 6)]
    violations, excused = check.forbid_overlaps(check.lives(records), ["t"], freezes, lease=2)
    assert invariants(violations) == ["forbid overlap"] and excused == []
    assert "still ran 1.000s after" in violations[0].evidence


def test_runs_one_after_the_other_do_not_overlap():
    records = [*run(0, 5, "term"), *run(5.2, 8, attempt=2, node="node-2", pid=200), *run(8.5, 9, task="other")]
    assert check.forbid_overlaps(check.lives(records), ["t", "other"], [], lease=2) == ([], [])


def test_a_python_run_frozen_with_its_node_is_the_documented_limit_but_not_without_a_freeze():
    records = [*run(0, 5, "stop", via="thread"), *run(3, 8, attempt=2, node="node-2", via="thread")]
    lives = check.lives(records)
    violations, excused = check.forbid_overlaps(lives, ["t"], [check.Freeze("node-1", 1, 4.5)], lease=2)
    assert violations == [] and [overlap.seconds for overlap in excused] == [2]
    violations, excused = check.forbid_overlaps(lives, ["t"], [check.Freeze("node-2", 1, 4.5)], lease=2)
    assert invariants(violations) == ["forbid overlap"] and excused == []


def test_a_python_run_its_node_started_after_a_freeze_began_has_no_excuse():
    records = [*run(2, 5, "stop", via="thread"), *run(3, 8, attempt=2, node="node-2", via="thread")]
    violations, excused = check.forbid_overlaps(check.lives(records), ["t"], [check.Freeze("node-1", 1, 2)], lease=2)
    assert invariants(violations) == ["forbid overlap"] and excused == []


def test_a_periodic_task_must_start_a_run_after_the_last_fault():
    records = [*run(0, 1, task="again"), record("start", 11, task="again", attempt=2), *run(0, 12, task="stuck")]
    [violation] = check.liveness(records, ["again", "stuck"], since=10)
    assert violation.evidence.startswith("stuck ")


def checkpointed(*runs: tuple[int, int, int]) -> list[Record]:
    """Runs of task ``c``, each (resumed from, last checkpoint, start time), one second per step."""
    records = []
    for attempt, (resumed_from, last, start) in enumerate(runs, start=1):
        identity = {"task": "c", "attempt": attempt, "node": f"node-{attempt}", "via": "thread"}
        records.append(record("start", start, resumedFrom=resumed_from, **identity))
        records += [record("checkpoint", start + step - resumed_from, done=step, **identity)
                    for step in range(resumed_from + 1, last + 1)]
    return records


def test_a_resume_starts_from_the_last_checkpoint_or_the_one_its_node_had_not_stored_yet():
    records = checkpointed((0, 4, 0), (4, 6, 10), (5, 10, 20)) + [record("end", 30, task="c", attempt=3, node="node-3")]
    assert check.checkpointing(records, "c", 10, {"status": "COMPLETED"}) == []
    assert [(r.resumed_from, r.saved_before) for r in check.resumes(records, "c")] == [(4, 4), (5, 6)]


def test_a_checkpoint_written_after_a_peer_resumed_the_task_is_not_one_to_resume_from():
    # Run 1 froze with its node after checkpoint 4; run 2 resumed from it, then run 1 thawed and wrote
    # checkpoints 5 and 6, which the store refused; run 3 resumed from run 2's checkpoint 4.
    records = checkpointed((0, 4, 0), (4, 4, 10), (4, 6, 20))
    records[5:5] = [record("checkpoint", 11 + step, task="c", node="node-1", via="thread", done=step) for step in (5, 6)]
    records.append(record("end", 30, task="c", attempt=3, node="node-3"))
    assert [(r.resumed_from, r.saved_before) for r in check.resumes(records, "c")] == [(4, 4), (4, 4)]
    assert check.checkpointing(records, "c", 6, {"status": "COMPLETED"}) == []


def test_a_resume_from_zero_after_checkpoints_fails_and_so_does_an_unfinished_task():
    records = checkpointed((0, 4, 0), (0, 2, 10))
    assert invariants(check.checkpointing(records, "c", 4, {"status": "RUNNING"})) == [
        "resumed behind its checkpoints", "checkpointed work not finished", "checkpointed work not finished"]


def test_a_resume_from_a_checkpoint_nobody_wrote_fails_and_so_does_a_step_never_done():
    records = checkpointed((0, 2, 0), (3, 5, 10)) + [record("end", 20, task="c", attempt=2, node="node-2")]
    assert invariants(check.checkpointing(records, "c", 5, {"status": "COMPLETED"})) == [
        "resumed from a checkpoint nobody wrote", "checkpointed work not done"]


def test_after_a_clean_stop_no_task_is_running_leased_or_has_an_open_run_record():
    tasks = [{"itemId": "a", "status": "SCHEDULED", "lease": None}, {"itemId": "b", "status": "RUNNING", "lease": None},
             {"itemId": "c", "status": "CRASHED", "lease": {"owner": "node-1"}}]
    runs = [{"runId": "a:1:1", "node": "node-1", "outcome": "success"}, {"runId": "a:2:1", "node": "node-2", "outcome": None}]
    evidence = [violation.evidence for violation in check.left_running(tasks, runs)]
    assert [line.split()[0] for line in evidence] == ["b", "c", "run"]


def test_the_store_must_record_every_run_that_started_and_no_success_the_task_did_not_finish():
    records = [*run(0, 1, slot="s1"), *run(2, 3, "term", slot="s2"), record("start", 4, slot="s3")]
    runs = [{"runId": "t:s1:1", "node": "node-1", "outcome": "success"},
            {"runId": "t:s2:1", "node": "node-1", "outcome": "success"}]
    violations = check.store_agrees(records, runs)
    assert [(v.invariant, v.evidence.split()[0]) for v in violations] == [
        ("run missing from the store", "t:s3:1"), ("success the task never finished", "t:s2:1")]


def test_memory_may_grow_up_to_twice_its_warm_level_plus_a_margin():
    samples = {"steady": [(1, 50_000), (15, 60_000), (600, 140_000)],
               "leaking": [(1, 50_000), (15, 60_000), (300, 100_000), (600, 160_000)],
               "short-lived": [(1, 50_000), (10, 500_000)]}
    [violation] = check.rss_growth(samples, warmup=15, factor=2, margin_kb=30_000)
    assert violation.evidence.startswith("leaking: 156 MB at 600s, 59 MB at 15s")


def test_the_same_seed_draws_the_same_faults_and_every_kind_in_each_round_of_three():
    first, again = (list(itertools.islice(plan(7, 3, 2.0, ["x"]), 12)) for _ in range(2))
    assert first == again != list(itertools.islice(plan(8, 3, 2.0, ["x"]), 12))
    assert all(sorted(f.kind for f in first[i:i + 3]) == sorted(KINDS) for i in range(0, 12, 3))
    assert all(f.hold > 3.0 for f in first if f.kind == "freeze")  # the lease and the recovery grace
    assert {f.node for f in first if f.kind != "freeze"} <= {1, 2}  # the first node lives through the soak
