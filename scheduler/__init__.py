"""A declarative, cluster-aware task scheduler appliance.

``from scheduler import Scheduler`` gives the embeddable scheduler (loaded on
first use, so the CLI does not pay for it).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "Scheduler":
        from .embedded import Scheduler

        return Scheduler
    raise AttributeError(f"module 'scheduler' has no attribute {name!r}")
