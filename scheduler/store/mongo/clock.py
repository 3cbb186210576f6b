"""The MongoDB server's clock, as seen from this node.

Leases must not depend on each node's own clock: a node whose clock runs ahead
would steal live leases. Every node therefore reads time as ``clock() + offset``,
where the offset is estimated from the ``localTime`` of the ``hello`` reply
(``isMaster`` on servers that predate ``hello``), assuming the reply was
produced halfway through the round trip:

    offset = localTime - (t_send + t_receive) / 2

The error is at most half the round trip (plus the server's millisecond
precision). The offset is refreshed every ``RESYNC_INTERVAL`` of real time, by
the next store call that needs it. Stand-ins for a server that cannot run
commands (mongomock) or return no ``localTime`` leave the offset at zero.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from pymongo.errors import OperationFailure

from ...model import Clock
from .documents import aware

log = logging.getLogger(__name__)

RESYNC_INTERVAL = 60.0  # seconds of monotonic time between two estimates
_COMMAND_NOT_FOUND = 59

Command = Callable[[str], Mapping[str, Any]]


def handshake(command: Command) -> Mapping[str, Any]:
    """The ``hello`` reply, or ``isMaster``'s on servers older than 4.4.2."""
    try:
        return command("hello")
    except OperationFailure as exc:
        if exc.code != _COMMAND_NOT_FOUND:
            raise
        return command("isMaster")


class ServerClock:
    """Keeps the offset between the injected clock and the server's clock."""

    def __init__(self, clock: Clock, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self.offset = timedelta(0)
        self._synced_at: float | None = None

    def stale(self) -> bool:
        return self._synced_at is None or self._monotonic() - self._synced_at >= RESYNC_INTERVAL

    def now(self) -> datetime:
        return self._clock() + self.offset

    def sync(self, command: Command) -> None:
        """Estimate the offset from one handshake (blocking: call it on the driver thread)."""
        sent = self._clock()
        try:
            reply = handshake(command)
        except NotImplementedError:
            # mongomock implements no commands: there is no server clock to follow.
            self._synced_at = self._monotonic()
            log.info("the MongoDB client cannot run 'hello': using the local clock")
            return
        received = self._clock()
        self._synced_at = self._monotonic()
        server_time = aware(reply.get("localTime"))
        if server_time is None:
            log.info("the MongoDB 'hello' reply has no localTime: using the local clock")
            return
        offset = server_time - (sent + (received - sent) / 2)
        if abs(offset - self.offset) >= timedelta(seconds=1):
            log.warning("the MongoDB server clock differs from this node's by %+.3f s", offset.total_seconds())
        self.offset = offset
