"""The shared backends: catalog, status bus and upload leases in Redis, so that several worker
processes and nodes sharing one data directory behave as one service.

Keys (``P`` is the configurable prefix, ``livefile`` by default):

- ``P:resource:{id}`` hash: metadata, status (``status``: its JSON, every field; beside it
  ``transferStatus``, ``revision`` and ``currentSize`` for the guard and for people), context,
  checksum, kind, sources, times. The catalog entry; it never expires.
- ``P:derived:{id}`` sorted set: the resources made from this one, by creation time.
- ``P:status:{id}`` pub/sub channel: every status, as the JSON of ``ResourceStatus``.
- ``P:active`` set: resources still INITIATED or IN_PROGRESS.
- ``P:lease:{id}``: the id of the process taking the upload, with a TTL its owner renews. When
  it expires (the owner died), any process marks the resource FAILED.

Statuses are written and published by one Lua script, so the stored status and the published
one never disagree and a terminal status is never overwritten. Pub/sub (not streams) carries
statuses: a watcher only needs the newest status, which the hash holds, so a message missed
while a connection is re-established is recovered by re-reading the hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from livefile.api.interfaces import CatalogEntry
from livefile.api.model import ResourceKind, ResourceMetadata, ResourceStatus, TransferStatus
from livefile.impl_server.bus import StatusMailbox

logger = logging.getLogger(__name__)

# KEYS: resource hash, status channel, active set, lease.
# ARGV: transferStatus, currentSize, revision ("" = none), updatedAt, status JSON, id,
#       checksum ("" = none).
# A terminal status is final; a status whose revision is not newer than the stored one is
# neither stored nor published (statuses never go backwards, whoever writes them).
_SET_STATUS = """
local current = redis.call('HGET', KEYS[1], 'transferStatus')
if not current then return -1 end
local terminal = ARGV[1] == 'COMPLETED' or ARGV[1] == 'FAILED'
if current == 'COMPLETED' or current == 'FAILED' then
    if current == ARGV[1] and ARGV[7] ~= '' then
        redis.call('HSET', KEYS[1], 'checksum', ARGV[7])
    end
    return 0
end
local stored = redis.call('HGET', KEYS[1], 'revision')
if ARGV[3] ~= '' and stored and stored ~= '' and tonumber(ARGV[3]) <= tonumber(stored) then
    return 0
end
redis.call('HSET', KEYS[1], 'transferStatus', ARGV[1], 'currentSize', ARGV[2],
           'revision', ARGV[3], 'status', ARGV[5], 'updatedAt', ARGV[4])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'checksum', ARGV[7]) end
redis.call('PUBLISH', KEYS[2], ARGV[5])
if terminal then
    redis.call('SREM', KEYS[3], ARGV[6])
    redis.call('DEL', KEYS[4])
end
return 1
"""


SAFETY_NET_PERIOD = 1.0  # seconds between re-reads of the watched statuses
TERMINAL_WRITE_PATIENCE = 30.0  # seconds a terminal status waits for Redis to come back


class RedisKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip(":")

    def resource(self, resource_id: str) -> str:
        return f"{self.prefix}:resource:{resource_id}"

    def channel(self, resource_id: str) -> str:
        return f"{self.prefix}:status:{resource_id}"

    def lease(self, resource_id: str) -> str:
        return f"{self.prefix}:lease:{resource_id}"

    def derived(self, resource_id: str) -> str:
        return f"{self.prefix}:derived:{resource_id}"

    @property
    def active(self) -> str:
        return f"{self.prefix}:active"


def _status_from(fields: dict[str, str]) -> ResourceStatus:
    if status := fields.get("status"):
        return ResourceStatus.model_validate_json(status)
    lines = fields.get("numberOfLines", "")  # an entry written before statuses were JSON
    return ResourceStatus(
        transfer_status=TransferStatus(fields["transferStatus"]),
        current_size=int(fields["currentSize"]),
        number_of_lines=int(lines) if lines else None,
    )


class RedisStore:
    """The Redis connection, the key layout and the guarded status write shared by the
    catalog, the bus and the leases of one process."""

    def __init__(self, url: str, prefix: str = "livefile") -> None:
        # After Redis restarts, pooled connections are dead: a command meeting one retries on a
        # fresh connection instead of failing, and idle connections are checked before use.
        self.client: aioredis.Redis = aioredis.from_url(
            url,
            decode_responses=True,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=3),
            retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionError],
            health_check_interval=2,
            socket_connect_timeout=2,
        )
        self.keys = RedisKeys(prefix)
        self.node_id = uuid.uuid4().hex
        self._set_status = self.client.register_script(_SET_STATUS)

    async def ping(self) -> None:
        await self.client.ping()

    async def fields(self, key: str) -> dict[str, str]:
        # decode_responses=True: redis-py's bytes | str annotations are always str here.
        return cast(dict[str, str], await self.client.hgetall(key))

    async def members(self, key: str) -> set[str]:
        return cast(set[str], await self.client.smembers(key))

    async def write_status(
        self, resource_id: str, status: ResourceStatus, checksum: str | None = None
    ) -> bool:
        keys = self.keys
        result = await self._set_status(
            keys=[keys.resource(resource_id), keys.channel(resource_id), keys.active,
                  keys.lease(resource_id)],
            args=[status.transfer_status.value, status.current_size,
                  "" if status.revision is None else status.revision,
                  time.time(), status.model_dump_json(by_alias=True), resource_id,
                  checksum or ""],
        )  # fmt: skip
        return bool(result == 1)

    async def close(self) -> None:
        await self.client.aclose()


class RedisCatalog:
    """The catalog in Redis (see the module docstring for the keys)."""

    def __init__(self, store: RedisStore, lease_seconds: float) -> None:
        self._store = store
        self._lease_ms = int(lease_seconds * 1000)

    async def create(
        self,
        resource_id: str,
        metadata: ResourceMetadata,
        upload_context_id: str | None,
        status: ResourceStatus,
        kind: ResourceKind = ResourceKind.UPLOAD,
        sources: tuple[str, ...] = (),
    ) -> None:
        keys, now = self._store.keys, time.time()
        fields: dict[FieldT, EncodableT] = {
            "filename": metadata.filename,
            "mimeType": metadata.mime_type,
            "supportsLineAccess": int(metadata.supports_line_access),
            "uploadContextId": upload_context_id or "",
            "transferStatus": status.transfer_status.value,
            "currentSize": status.current_size,
            "revision": "" if status.revision is None else status.revision,
            "status": status.model_dump_json(by_alias=True),
            "checksum": "",
            "createdAt": now,
            "updatedAt": now,
            "kind": kind.value,
            "sources": " ".join(sources),
        }
        async with self._store.client.pipeline(transaction=True) as pipe:
            pipe.hset(keys.resource(resource_id), mapping=fields)
            for source in sources:
                pipe.zadd(keys.derived(source), {resource_id: now})
            pipe.set(keys.lease(resource_id), self._store.node_id, px=self._lease_ms)
            pipe.sadd(keys.active, resource_id)
            await pipe.execute()

    async def get(self, resource_id: str) -> CatalogEntry | None:
        fields = await self._store.fields(self._store.keys.resource(resource_id))
        if not fields:
            return None
        return CatalogEntry(
            resource_id=resource_id,
            metadata=ResourceMetadata.model_construct(
                filename=fields["filename"],
                mime_type=fields["mimeType"],
                supports_line_access=fields["supportsLineAccess"] == "1",
            ),
            status=_status_from(fields),
            upload_context_id=fields.get("uploadContextId") or None,
            checksum=fields.get("checksum") or None,
            created_at=float(fields["createdAt"]),
            updated_at=float(fields["updatedAt"]),
            kind=ResourceKind(fields.get("kind") or ResourceKind.UPLOAD.value),
            sources=tuple((fields.get("sources") or "").split()),
        )

    async def derived_from(self, resource_id: str) -> list[tuple[str, ResourceKind]]:
        keys = self._store.keys
        ids = cast(list[str], await self._store.client.zrange(keys.derived(resource_id), 0, -1))
        found = []
        for derived_id in ids:
            kind = await self._store.client.hget(keys.resource(derived_id), "kind")
            if kind is not None:
                found.append((derived_id, ResourceKind(str(kind))))
        return found

    async def set_status(
        self, resource_id: str, status: ResourceStatus, checksum: str | None = None
    ) -> None:
        # A terminal status must reach Redis: retry through a short outage, then give up loudly.
        await _retrying(
            partial(self._store.write_status, resource_id, status, checksum),
            give_up_after=TERMINAL_WRITE_PATIENCE,
        )

    async def unfinished(self) -> list[CatalogEntry]:
        """Unfinished resources whose owner's lease has expired: their uploads are gone."""
        keys, client = self._store.keys, self._store.client
        orphans = []
        for resource_id in await self._store.members(keys.active):
            if not await client.exists(keys.lease(resource_id)):
                entry = await self.get(resource_id)
                if entry is None:
                    await client.srem(keys.active, resource_id)
                elif not entry.status.is_terminal:
                    orphans.append(entry)
        return orphans

    async def ping(self) -> None:
        await self._store.ping()

    async def count_in_context(self, upload_context_id: str) -> int:
        raise NotImplementedError("contexts are counted by the context registry")

    async def renew_leases(self, resource_ids: list[str]) -> None:
        if not resource_ids:
            return
        async with self._store.client.pipeline(transaction=False) as pipe:
            for resource_id in resource_ids:
                pipe.set(
                    self._store.keys.lease(resource_id), self._store.node_id, px=self._lease_ms
                )
            await pipe.execute()

    async def close(self) -> None:
        await self._store.close()


class RedisStatusBus:
    """Statuses through Redis pub/sub: the owner publishes (in order, through one queue), every
    process delivers to its local watchers' mailboxes."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._outbox: asyncio.Queue[tuple[str, ResourceStatus]] = asyncio.Queue()
        self._mailboxes: dict[str, set[StatusMailbox]] = defaultdict(set)
        self._confirmed: dict[str, asyncio.Event] = {}
        self._pubsub = store.client.pubsub()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._publisher(), name="livefile-redis-publisher"),
            asyncio.create_task(self._listener(), name="livefile-redis-listener"),
            asyncio.create_task(self._safety_net(), name="livefile-redis-catch-up"),
        ]

    def publish(self, resource_id: str, status: ResourceStatus) -> None:
        # Local watchers hear at once; the others through Redis, in the order of this queue.
        for mailbox in self._mailboxes.get(resource_id, ()):
            mailbox.offer(status)
        self._outbox.put_nowait((resource_id, status))

    async def subscribe(self, resource_id: str, current: ResourceStatus) -> StatusMailbox:
        channel = self._store.keys.channel(resource_id)

        def unsubscribe(mailbox: StatusMailbox) -> None:
            mailboxes = self._mailboxes.get(resource_id)
            if mailboxes is not None:
                mailboxes.discard(mailbox)
                if not mailboxes:
                    del self._mailboxes[resource_id]
                    self._confirmed.pop(channel, None)
                    asyncio.get_running_loop().create_task(self._unsubscribe(channel))

        mailbox = StatusMailbox(current, unsubscribe)
        first = not self._mailboxes[resource_id]
        self._mailboxes[resource_id].add(mailbox)
        if first or channel not in self._confirmed:
            confirmed = self._confirmed.setdefault(channel, asyncio.Event())
            await self._pubsub.subscribe(channel)
            await asyncio.wait_for(confirmed.wait(), 10)
        # Anything published before the subscription took effect is in the hash: read it now.
        await self._catch_up(resource_id)
        return mailbox

    async def _catch_up(self, resource_id: str) -> None:
        fields = await self._store.fields(self._store.keys.resource(resource_id))
        if fields:
            status = _status_from(fields)
            for mailbox in self._mailboxes.get(resource_id, ()):
                mailbox.offer(status)

    async def _safety_net(self) -> None:
        """Re-read the watched statuses every second. Pub/sub normally delivers them at once;
        this bounds how long a watcher can miss one when a subscription silently broke (e.g.
        while Redis restarts), at the cost of one HGETALL per watched resource per second."""
        while True:
            await asyncio.sleep(SAFETY_NET_PERIOD)
            for resource_id in list(self._mailboxes):
                with contextlib.suppress(RedisError, ConnectionError, TimeoutError):
                    await asyncio.wait_for(self._catch_up(resource_id), SAFETY_NET_PERIOD)

    async def _unsubscribe(self, channel: str) -> None:
        with contextlib.suppress(RedisError, ConnectionError):
            await self._pubsub.unsubscribe(channel)

    async def _publisher(self) -> None:
        while True:
            resource_id, status = await self._outbox.get()
            await _retrying(partial(self._store.write_status, resource_id, status))
            self._outbox.task_done()

    async def _listener(self) -> None:
        prefix = self._store.keys.channel("")
        while True:
            try:
                if not self._pubsub.subscribed:
                    await asyncio.sleep(0.05)  # nothing to listen to yet
                    continue
                message = await self._pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                channel = message["channel"]
                if message["type"] == "subscribe":
                    event = self._confirmed.get(channel)
                    if event is not None:
                        event.set()
                elif message["type"] == "message":
                    status = ResourceStatus.model_validate_json(message["data"])
                    for mailbox in self._mailboxes.get(channel[len(prefix) :], ()):
                        mailbox.offer(status)
            except (RedisError, ConnectionError) as exc:
                logger.warning("Redis pub/sub connection lost (%s); reconnecting", exc)
                await self._resubscribe()

    async def _resubscribe(self) -> None:
        """After a reconnection: subscribe again and catch up on what was missed."""
        while True:
            await asyncio.sleep(0.5)
            try:
                channels = [self._store.keys.channel(rid) for rid in self._mailboxes]
                with contextlib.suppress(Exception):
                    await self._pubsub.aclose()  # type: ignore[no-untyped-call]
                self._pubsub = self._store.client.pubsub()
                if channels:
                    await self._pubsub.subscribe(*channels)
                for resource_id in list(self._mailboxes):
                    await self._catch_up(resource_id)
                logger.info("Redis pub/sub connection re-established")
                return
            except (RedisError, ConnectionError):
                continue

    async def close(self) -> None:
        # Deliver what is queued (bounded), then stop.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox.join(), 5)
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]


async def _retrying(
    operation: Callable[[], Awaitable[object]], give_up_after: float | None = None
) -> None:
    """Retry a Redis write until it succeeds (or ``give_up_after`` seconds have passed):
    statuses must not be lost while Redis is briefly away."""
    delay, deadline = 0.05, None if give_up_after is None else time.monotonic() + give_up_after
    while True:
        try:
            await operation()
            return
        except (RedisError, ConnectionError) as exc:
            if deadline is not None and time.monotonic() > deadline:
                raise
            logger.warning("Redis write failed (%s); retrying in %.2f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


class LeaseKeeper:
    """Renews the leases of this process's uploads, and fails the uploads of dead processes.

    Every ``lease_seconds / 3`` the leases of local uploads are renewed; every
    ``lease_seconds / 3`` too, orphans (unfinished, no lease) are marked FAILED with the bytes
    on disk. A dead owner is therefore noticed at most ``lease_seconds * 4/3`` after its death.
    """

    def __init__(
        self,
        catalog: RedisCatalog,
        active_ids: Callable[[], list[str]],
        reap: Callable[[], Awaitable[int]],
        lease_seconds: float,
    ) -> None:
        self._catalog = catalog
        self._active_ids = active_ids
        self._reap = reap
        self._period = lease_seconds / 3
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="livefile-leases")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            try:
                await self._catalog.renew_leases(self._active_ids())
                reaped = await self._reap()
                if reaped:
                    logger.warning("%d upload(s) of a dead process marked FAILED", reaped)
            except (RedisError, ConnectionError) as exc:
                logger.warning("Redis unreachable while renewing leases: %s", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
