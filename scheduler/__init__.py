"""A declarative, cluster-aware task scheduler appliance."""

__version__ = "0.1.0"
