"""Instructions per run: what one no-op run costs the node, counted rather than timed.

    python bench/instructions.py                      # this checkout, about three minutes
    python bench/instructions.py --against ../old     # and another checkout, interleaved

On a shared machine a timed benchmark moves by 15 % from one run to the next, so a change that
saves 5 % cannot be told from noise. Valgrind's callgrind counts the instructions the process
executes, every thread together, the same from run to run within about 1 %. This drains
``--runs`` no-op one-shots through one in-process engine on SQLite (``bench/engine.py``'s
throughput workload) under callgrind, counting only the drain: the counters are zeroed once the
tasks are seeded and dumped once they have run. The drain's fixed costs (opening the store,
starting the engine) are taken out by counting two sizes: the difference, divided by the
difference in runs, is the cost of one run. Needs ``valgrind`` (Debian: ``apt install valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def drain_under_callgrind(checkout: Path, runs: int) -> int:
    """Instructions executed while ``runs`` seeded no-op one-shots are drained, with ``checkout``'s code."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__, "--child",
             str(checkout), str(runs)],
            check=True, capture_output=True, cwd=tmp,
        )
        # The first dump is the one ``--child`` asks for after the drain; the last is the exit's.
        dumps = sorted(Path(tmp).glob("callgrind.out.*"), key=lambda path: int(path.suffix[1:]))
        summary = re.search(r"^summary: (\d+)$", dumps[0].read_text(), re.MULTILINE)
        assert summary is not None, dumps[0]
        return int(summary.group(1))


def child(checkout: Path, runs: int) -> None:
    """Inside valgrind: seed, zero the counters, drain, dump them."""
    sys.path[:0] = [str(checkout / "bench"), str(checkout)]
    import asyncio

    import engine  # bench/engine.py of ``checkout``
    import scheduler

    assert Path(scheduler.__file__).resolve().is_relative_to(checkout.resolve()), scheduler.__file__

    def callgrind(option: str) -> None:
        subprocess.run(["callgrind_control", option, str(os.getpid())], check=True, capture_output=True)

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        asyncio.run(engine.seed(url, runs, {"after": "0s"}))
        callgrind("-z")
        finished = asyncio.run(engine.drain(url, "node-1"))
        callgrind("-d")
    assert finished == runs, (finished, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, nargs=2, default=(500, 1500), metavar=("SMALL", "LARGE"))
    parser.add_argument("--against", type=Path, help="another checkout, counted the same way in between")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), int(args.child[1]))
        return
    small, large = args.runs
    checkouts = [ROOT] if args.against is None else [args.against.resolve(), ROOT]
    for checkout in checkouts:
        counts = [drain_under_callgrind(checkout, runs) for runs in (small, large)]
        per_run = (counts[1] - counts[0]) / (large - small)
        print(f"{checkout}: {per_run:,.0f} instructions per run ({small:,} runs: {counts[0]:,};"
              f" {large:,} runs: {counts[1]:,})", flush=True)


if __name__ == "__main__":
    main()
