"""The peer benchmark's arithmetic (``bench/peers.py``): which slots a window holds, what its summary
counts, how ratios read, which options it takes. No peer is installed or run here."""

from __future__ import annotations

import pytest

from bench import peers


@pytest.mark.parametrize(("count", "spread", "start", "end", "slots"), [
    (1, 0.0, 1.0, 4.0, 3),         # slots 0, 1, 2, 3...: 1, 2, 3 are in [1, 4)
    (4, 1.0, 1.0, 4.0, 12),        # four phases 0, .25, .5, .75: three slots each
    (4, 1.0, 1.1, 4.1, 12),        # a window off the second still holds three seconds of slots
    (10, 0.0, 100.0, 103.0, 30),
    (3, 0.0, -5.0, 2.0, 6),        # no slot before the first: k starts at 0
])
def test_slots_in_window(count, spread, start, end, slots):
    assert peers.slots_in_window(count, 0.0, spread, start, end) == slots


def test_lateness_summary_counts_only_the_window_and_its_missing_slots():
    # Two tasks, both due at 10.0, 11.0, ...; started at 9.0: the window is [11, 13).
    samples = [(10.0, 5.0), (11.0, 0.001), (11.0, 0.003), (12.0, 0.002), (13.0, 9.0)]
    summary = peers.lateness_summary({"first": 10.0, "started": 9.0, "samples": samples}, 2, 3, 0.0)
    assert (summary["ran"], summary["slots"]) == (3, 4)
    assert summary["p50"] == pytest.approx(2.0) and summary["max"] == pytest.approx(3.0)


def test_lateness_summary_of_a_side_that_ran_nothing_has_no_percentiles():
    summary = peers.lateness_summary({"first": 10.0, "started": 30.0, "samples": []}, 5, 3, 1.0)
    assert summary["ran"] == 0 and summary["slots"] == 10 and "p50" not in summary


@pytest.mark.parametrize(("ours", "peer", "shown"), [
    (3000.0, 1000.0, "3.00"), (2.9, 3240.8, "0.000895"), (1092.0, 57.0, "19.2"), (5000.0, 4.0, "1,250"),
    (0.0, 0.0, "1.00"), (1.0, 0.0, "n/a"), (None, 5.0, "n/a"),
])
def test_ratio(ours, peer, shown):
    assert peers.ratio(ours, peer) == shown


def test_percentile():
    assert peers.percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert peers.percentile(list(range(100)), 0.99) == 99


def test_options_are_lists_of_known_names():
    args = peers.parse_args(["--only", "ours,apscheduler3", "--shapes", "instant", "--rounds", "3"])
    assert args.only == ["ours", "apscheduler3"] and args.shapes == ["instant"] and args.rounds == 3
    assert args.workloads == ["throughput", "lateness"] and args.count == 10_000 and args.tasks == 1000


@pytest.mark.parametrize("argv", [["--only", "celery"], ["--shapes", ""], ["--seconds", "1"]])
def test_unknown_names_and_too_short_windows_are_refused(argv, capsys):
    with pytest.raises(SystemExit):
        peers.parse_args(argv)
    assert "error" in capsys.readouterr().err


def test_every_peer_is_pinned_exactly():
    for side in peers.SIDES:
        assert all("==" in pin for pin in side.pins), side.name
    assert {side.name for side in peers.SIDES if not side.pins} == {"ours"}
