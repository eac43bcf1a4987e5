"""Upload contexts: named groups of uploads that an application opens, watches and closes.

Listeners on a context hear of each resource created in it, each status change of those
resources, and each refused creation. In-process listeners are called synchronously and must not
block; remote listeners (the SSE stream) are queues with a bounded size.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Literal, Protocol

from livefile.api.model import ResourceMetadata, ResourceStatus, new_context_id

logger = logging.getLogger(__name__)


class UploadContextListener(Protocol):
    def on_resource_created(self, resource_id: str, metadata: ResourceMetadata) -> None: ...

    def on_resource_status_changed(self, resource_id: str, status: ResourceStatus) -> None: ...

    def on_resource_creation_refused(
        self, metadata: ResourceMetadata | None, reason: str
    ) -> None: ...

    def on_context_closed(self) -> None: ...


@dataclass
class UploadContext:
    context_id: str
    listeners: list[UploadContextListener] = field(default_factory=list)
    resource_count: int = 0


class UnknownContextError(LookupError):
    pass


class UploadContexts:
    """The registry of open upload contexts of this process."""

    def __init__(self) -> None:
        self._contexts: dict[str, UploadContext] = {}

    def open(self, context_id: str | None = None) -> UploadContext:
        context = UploadContext(context_id or new_context_id())
        self._contexts[context.context_id] = context
        return context

    def close(self, context_id: str) -> None:
        context = self._contexts.pop(context_id, None)
        if context is None:
            raise UnknownContextError(context_id)
        for listener in context.listeners:
            _notify(listener.on_context_closed)

    def get(self, context_id: str) -> UploadContext | None:
        return self._contexts.get(context_id)

    def add_listener(self, context_id: str, listener: UploadContextListener) -> None:
        context = self._contexts.get(context_id)
        if context is None:
            raise UnknownContextError(context_id)
        context.listeners.append(listener)

    def remove_listener(self, context_id: str, listener: UploadContextListener) -> None:
        context = self._contexts.get(context_id)
        if context is not None and listener in context.listeners:
            context.listeners.remove(listener)

    def resource_created(self, context_id: str, resource_id: str, meta: ResourceMetadata) -> None:
        for listener in self._listeners(context_id):
            _notify(listener.on_resource_created, resource_id, meta)

    def status_changed(self, context_id: str, resource_id: str, status: ResourceStatus) -> None:
        for listener in self._listeners(context_id):
            _notify(listener.on_resource_status_changed, resource_id, status)

    def creation_refused(
        self, context_id: str, metadata: ResourceMetadata | None, reason: str
    ) -> None:
        for listener in self._listeners(context_id):
            _notify(listener.on_resource_creation_refused, metadata, reason)

    def _listeners(self, context_id: str) -> list[UploadContextListener]:
        context = self._contexts.get(context_id)
        return list(context.listeners) if context else []


def _notify(callback: object, *args: object) -> None:
    # A listener's failure must not break an upload or the other listeners.
    try:
        callback(*args)  # type: ignore[operator]
    except Exception:
        logger.exception("upload context listener failed")


ContextEventKind = Literal["resourceCreated", "statusChanged", "creationRefused", "contextClosed"]


@dataclass(frozen=True)
class ContextEvent:
    kind: ContextEventKind
    data: dict[str, object]


class QueueingContextListener:
    """A listener that queues events for a remote watcher; overflows end the stream."""

    def __init__(self, max_events: int = 1000) -> None:
        self.events: asyncio.Queue[ContextEvent | None] = asyncio.Queue(max_events)
        self.overflowed = False

    def _put(self, event: ContextEvent | None) -> None:
        try:
            self.events.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True

    def on_resource_created(self, resource_id: str, metadata: ResourceMetadata) -> None:
        self._put(ContextEvent("resourceCreated", {"resourceId": resource_id, **_meta(metadata)}))

    def on_resource_status_changed(self, resource_id: str, status: ResourceStatus) -> None:
        self._put(
            ContextEvent(
                "statusChanged", {"resourceId": resource_id, "resourceStatus": status.to_wire()}
            )
        )

    def on_resource_creation_refused(self, metadata: ResourceMetadata | None, reason: str) -> None:
        data: dict[str, object] = {"reason": reason}
        if metadata is not None:
            data.update(_meta(metadata))
        self._put(ContextEvent("creationRefused", data))

    def on_context_closed(self) -> None:
        self._put(ContextEvent("contextClosed", {}))
        self._put(None)


def _meta(metadata: ResourceMetadata) -> dict[str, object]:
    return {"metadata": metadata.to_wire()}
