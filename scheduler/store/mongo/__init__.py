"""The MongoDB store (``mongodb://`` URLs): the cluster backend.

See ``store`` for the threading and error model, ``clock`` for server time,
``indexes`` for every index and why it exists, ``protocol`` for the claim protocol.
"""

from .store import MongoStore

__all__ = ["MongoStore"]
