"""The in-process status bus, and the newest-wins mailbox each subscriber reads from.

A mailbox holds at most one pending status, so a subscriber that reads slowly costs no memory and
never holds up the publisher; it may skip intermediate statuses, but it never receives an older
status after a newer one (the mailbox refuses to go backwards, whatever order publishes arrive in).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

from livefile.api.model import ResourceStatus


class StatusMailbox:
    """One subscriber's view of one resource's statuses."""

    def __init__(
        self,
        current: ResourceStatus,
        on_close: Callable[[StatusMailbox], None] | None = None,
    ) -> None:
        self._latest = current
        self._delivered: ResourceStatus | None = None
        self._changed = asyncio.Event()
        self._changed.set()
        self._closed = False
        self._on_close = on_close

    def offer(self, status: ResourceStatus) -> None:
        if status.is_newer_than(self._latest):
            self._latest = status
            self._changed.set()

    @property
    def latest(self) -> ResourceStatus:
        return self._latest

    async def __aiter__(self) -> AsyncIterator[ResourceStatus]:
        while not self._closed:
            await self._changed.wait()
            self._changed.clear()
            if self._closed:
                return
            status = self._latest
            if status is self._delivered:
                continue
            self._delivered = status
            yield status
            if status.is_terminal:
                return

    def close(self) -> None:
        self._closed = True
        self._changed.set()
        if self._on_close is not None:
            self._on_close(self)
            self._on_close = None


class InProcessStatusBus:
    """Fan-out of statuses to the subscribers of this process."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[StatusMailbox]] = defaultdict(set)

    def publish(self, resource_id: str, status: ResourceStatus) -> None:
        for mailbox in self._subscribers.get(resource_id, ()):
            mailbox.offer(status)

    async def subscribe(self, resource_id: str, current: ResourceStatus) -> StatusMailbox:
        def unsubscribe(mailbox: StatusMailbox) -> None:
            subscribers = self._subscribers.get(resource_id)
            if subscribers is not None:
                subscribers.discard(mailbox)
                if not subscribers:
                    del self._subscribers[resource_id]

        mailbox = StatusMailbox(current, unsubscribe)
        self._subscribers[resource_id].add(mailbox)
        return mailbox

    def latest(self, resource_id: str) -> ResourceStatus | None:
        newest: ResourceStatus | None = None
        for mailbox in self._subscribers.get(resource_id, ()):
            if newest is None or mailbox.latest.is_newer_than(newest):
                newest = mailbox.latest
        return newest

    async def close(self) -> None:
        return None

    def subscriber_count(self, resource_id: str) -> int:
        return len(self._subscribers.get(resource_id, ()))
