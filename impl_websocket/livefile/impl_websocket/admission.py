"""Which connections a server process keeps: a deadline for every request head, a cap on the
connections waiting for one, and an optional cap per client address.

A connection that never sends a request, or sends its head a byte at a time (slowloris), costs
the server a descriptor and does nothing for anyone. Left alone, tens of thousands of them fill
the descriptor table and then every client is refused. Three bounds, per process (worker):

- **Head deadline.** A connection is *waiting* from its accept, and again from the end of each
  response on a kept-alive connection, until the last header line of its next request arrives.
  After ``head_timeout`` seconds of waiting it is closed (with ``408 Request Timeout`` when part
  of a head came). The deadline is not moved by bytes arriving: a head sent slowly still has to
  be complete in time.
- **Waiting cap.** Beyond ``max_waiting`` waiting connections the *oldest* are closed. Refusing
  the newest instead would let anyone who keeps the waiting set full (a few hundred connections
  a second is enough) lock every new client out, while a real client sends its head at once and
  stops waiting long before it could become the oldest. Every connection is given the chance
  to be read once before it can be chosen: the cap is enforced two turns of the event loop
  after it is exceeded, so a burst of accepts (up to the listen backlog) cannot push out a
  client whose head is already in the socket.
- **Per-client cap** (off by default). A new connection from an address that already holds
  ``max_per_client`` connections (HTTP and WebSocket alike) is answered ``503`` and closed.

This module keeps the books; the protocols in ``server.py`` report the events and close what
they are told to.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger("livefile.connections")

REPORT_INTERVAL = 10.0  # seconds between summaries of what was closed or refused
_current: Admission | None = None  # this process's, for figures (one server per process)


def current() -> Admission | None:
    """The books of the server running in this process (None before its first connection)."""
    return _current


@dataclass(frozen=True)
class AdmissionLimits:
    head_timeout: float
    max_waiting: int
    max_per_client: int | None


class Waiting(Protocol):
    """A connection waiting for a request head."""

    def close_waiting(self, timed_out: bool) -> None:
        """Close the connection: its head is late (``timed_out``) or it is the oldest one
        waiting beyond the cap."""


class Admission:
    """The books of one server process. Not thread-safe: the event loop's thread only."""

    def __init__(self, limits: AdmissionLimits, loop: asyncio.AbstractEventLoop) -> None:
        self.limits = limits
        self._loop = loop
        # Deadlines, oldest first: every connection waits for the same time, so the order of
        # arrival is the order of the deadlines and the first entry is the next to expire.
        self._waiting: OrderedDict[Waiting, float] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None
        self._cap_check_due = False
        self._per_client: dict[str, int] = {}
        self._report: asyncio.TimerHandle | None = None
        self.timed_out = self.evicted = self.refused = 0  # since the last report
        # Since the start, for /metrics: closed late, closed as the oldest waiting, refused.
        self.totals = {"head_timeout": 0, "pending_cap": 0, "per_client_cap": 0}
        global _current
        _current = self

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def admit(self, address: str | None) -> bool:
        """Count a new connection from ``address``; False (and not counted) when that address
        already holds its share."""
        cap = self.limits.max_per_client
        if cap is None or address is None:
            return True
        held = self._per_client.get(address, 0)
        if held >= cap:
            self.refused += 1
            self.totals["per_client_cap"] += 1
            self._schedule_report()
            return False
        self._per_client[address] = held + 1
        return True

    def leave(self, address: str | None) -> None:
        """A connection counted by ``admit`` is gone."""
        if self.limits.max_per_client is None or address is None:
            return
        held = self._per_client.get(address, 0) - 1
        if held > 0:
            self._per_client[address] = held
        else:
            self._per_client.pop(address, None)

    def wait(self, connection: Waiting) -> None:
        """``connection`` now waits for a request head: its deadline starts now."""
        self._waiting.pop(connection, None)
        self._waiting[connection] = self._loop.time() + self.limits.head_timeout
        if self._timer is None:
            self._arm()
        if len(self._waiting) > self.limits.max_waiting and not self._cap_check_due:
            self._cap_check_due = True
            # Two hops: the first runs before the loop's next poll, the second after it, once
            # the connections just accepted have had their bytes read.
            self._loop.call_soon(self._loop.call_soon, self._enforce_cap)

    def done_waiting(self, connection: Waiting) -> None:
        """``connection`` has sent a complete head, or is gone."""
        self._waiting.pop(connection, None)

    def _arm(self) -> None:
        if self._waiting:
            deadline = next(iter(self._waiting.values()))
            self._timer = self._loop.call_at(deadline, self._expire)
        else:
            self._timer = None

    def _expire(self) -> None:
        now = self._loop.time()
        expired = 0
        while self._waiting:
            connection, deadline = next(iter(self._waiting.items()))
            if deadline > now:
                break
            del self._waiting[connection]
            expired += 1
            connection.close_waiting(timed_out=True)
        self._arm()
        if expired:
            self.timed_out += expired
            self.totals["head_timeout"] += expired
            self._schedule_report()

    def _enforce_cap(self) -> None:
        self._cap_check_due = False
        excess = len(self._waiting) - self.limits.max_waiting
        if excess <= 0:
            return
        for _ in range(excess):
            connection, _deadline = self._waiting.popitem(last=False)
            connection.close_waiting(timed_out=False)
        self.evicted += excess
        self.totals["pending_cap"] += excess
        self._schedule_report()

    def _schedule_report(self) -> None:
        if self._report is None:
            self._report = self._loop.call_later(REPORT_INTERVAL, self._log_report)

    def _log_report(self) -> None:
        self._report = None
        if not (self.timed_out or self.evicted or self.refused):
            return
        level = logging.WARNING if self.evicted or self.refused else logging.INFO
        logger.log(
            level,
            "closed %d connection(s) that sent no complete request head within %gs, %d more"
            " beyond the %d allowed to wait; refused %d over the per-client cap (%s)",
            self.timed_out,
            self.limits.head_timeout,
            self.evicted,
            self.limits.max_waiting,
            self.refused,
            self.limits.max_per_client or "off",
        )
        self.timed_out = self.evicted = self.refused = 0
