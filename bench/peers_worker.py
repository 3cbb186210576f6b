"""The command line every side of ``bench/peers.py`` shares: one workload, its result as JSON on stdout.

    python bench/peers_<side>.py throughput|lateness --count N [--seconds S] [--spread S] --dir DIR

Each side runs in its own environment (the two APScheduler versions cannot share one), so this
module uses the standard library only.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

Workload = Callable[..., Any]  # a coroutine function returning the result dict


def serve(run: Callable[..., dict], throughput: Workload, lateness: Workload) -> None:
    """Parse the command line, run the workload it names with ``run`` (``asyncio.run`` or ``anyio.run``
    style: ``run(function, *args)``) and print its result."""
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=["throughput", "lateness"])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--spread", type=float, default=1, help="seconds over which the first slots are spread")
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    if args.workload == "throughput":
        result = run(throughput, args.count, args.dir)
    else:
        result = run(lateness, args.count, args.seconds, args.spread, args.dir)
    print(json.dumps(result))
