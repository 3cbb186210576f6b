"""Task bodies that do nothing, for benchmarks of the node itself (``python: noop:noop``).

The directory of this module goes on the node's PYTHONPATH. ``noop`` is a plain function, so each
run goes to a worker thread; ``noop_async`` is a coroutine function, awaited on the node's loop.
"""


def noop(ctx) -> None:
    pass


async def noop_async(ctx) -> None:
    pass
