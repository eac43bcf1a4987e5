"""The shared backends: catalog, status bus and upload leases in Redis, so that several worker
processes and nodes sharing one data directory behave as one service.

Keys (``P`` is the configurable prefix, ``livefile`` by default):

- ``P:resource:{id}`` hash: metadata, status (``status``: its JSON, every field; beside it
  ``transferStatus``, ``revision`` and ``currentSize`` for the guard and for people), context,
  checksum, kind, sources, times, ``description`` (the JSON of the metadata fields the server
  describes: an image's size and BlurHash), ``owner`` (the producing process; empty for a shared
  job not claimed yet), ``job`` (1: a shared job's, see ``redis_jobs.py``). The catalog entry;
  it never expires.
- ``P:derived:{id}`` sorted set: the resources made from this one, by creation time.
- ``P:status:{id}`` pub/sub channel: every status, as the JSON of ``ResourceStatus``.
- ``P:active`` set: resources still INITIATED or IN_PROGRESS.
- ``P:lease:{id}``: the id of the process taking the upload, with a TTL its owner renews. When
  it has been missing for a whole lease period while Redis answered (the owner died), any
  process marks the resource FAILED.
- ``P:created`` and ``P:context-resources:{context}`` sorted sets: every resource (of one
  context), scored by creation time, for listings newest first and the sweeper oldest first.
- ``P:tombstones`` sorted set: deleted resources, scored by deletion time (410 while kept).
- ``P:deletions`` pub/sub channel: every deletion, so each process closes its watchers and its
  uploader of the resource and forgets what it cached. ``P:sweep``: which process sweeps now.
- ``P:handovers`` pub/sub channel: a process asking another to let go of a resumable upload
  held by a connection that looks half-open, and the answer once it did (``redis_handover.py``).

Statuses are written and published by one Lua script, so the stored status and the published
one never disagree and a terminal status is never overwritten. A terminal status has its own
script, fenced: the owner's (``owner`` in the hash is its process id) is refused once the
resource has ended otherwise, and a reaper's is refused while the lease is held — both checked
in the same atomic step that records it, so a resource has exactly one terminal status.
Pub/sub (not streams) carries statuses: a watcher only needs the newest status, which the hash
holds, so a message missed while a connection is re-established is recovered by re-reading it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from livefile.api.interfaces import CatalogEntry, CatalogPage, Cursor, PageQuery
from livefile.api.model import ResourceKind, ResourceMetadata, ResourceStatus, TransferStatus
from livefile.impl_server.bus import StatusMailbox

logger = logging.getLogger(__name__)

# KEYS: resource hash, status channel, active set, lease.
# ARGV: transferStatus, currentSize, revision ("" = none), updatedAt, status JSON, id,
#       checksum ("" = none), the writer's process id.
# A terminal status is final; a status whose revision is not newer than the stored one is
# neither stored nor published (statuses never go backwards, whoever writes them); a process
# that no longer owns the resource (its job was taken over) is refused.
_SET_STATUS = """
local current = redis.call('HGET', KEYS[1], 'transferStatus')
if not current then return -1 end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= '' and owner ~= ARGV[8] then return 0 end
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


# KEYS: resource hash, status channel, active set, lease.
# ARGV: transferStatus, currentSize, revision, updatedAt, status JSON, id, checksum ("" = none),
#       mode ("owner" or "reap"), the writer's process id.
# Returns {1, status} when ``status`` is recorded now (or was, by this same write retried),
# {0, stored} when another terminal status was recorded before, {-1} when the entry is missing,
# {2} when a reaper finds the lease held (the owner is alive), {3} when another process owns it.
_END = """
local current = redis.call('HGET', KEYS[1], 'transferStatus')
if not current then return {-1} end
if current == 'COMPLETED' or current == 'FAILED' then
    local stored = redis.call('HGET', KEYS[1], 'status')
    if stored == ARGV[5] then
        if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'checksum', ARGV[7]) end
        return {1, stored}
    end
    return {0, stored or ''}
end
if ARGV[8] == 'reap' then
    if redis.call('EXISTS', KEYS[4]) == 1 then return {2} end
else
    local owner = redis.call('HGET', KEYS[1], 'owner')
    if owner and owner ~= '' and owner ~= ARGV[9] then return {3} end
end
redis.call('HSET', KEYS[1], 'transferStatus', ARGV[1], 'currentSize', ARGV[2],
           'revision', ARGV[3], 'status', ARGV[5], 'updatedAt', ARGV[4])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'checksum', ARGV[7]) end
redis.call('PUBLISH', KEYS[2], ARGV[5])
redis.call('SREM', KEYS[3], ARGV[6])
redis.call('DEL', KEYS[4])
return {1, ARGV[5]}
"""

# KEYS: resource hash, lease. ARGV: process id, lease in ms.
# Renews the lease of a resource still unfinished; 0 when it has ended (nothing to renew), -1
# when the entry is missing (Redis lost it: the owner restores it), -2 when another process
# owns it now (its job was taken over: this process must stop producing it).
_RENEW = """
local current = redis.call('HGET', KEYS[1], 'transferStatus')
if not current then return -1 end
if current == 'COMPLETED' or current == 'FAILED' then return 0 end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= '' and owner ~= ARGV[1] then return -2 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: resource hash, lease. ARGV: process id, lease in ms.
# Makes this process the producer of an unfinished resource (a queued job it claimed, or one
# whose worker died): 1 when it is now, 0 when the resource has ended, -1 when the entry is
# missing, 2 while another process holds the lease (alive: it keeps producing).
_ADOPT = """
local current = redis.call('HGET', KEYS[1], 'transferStatus')
if not current then return -1 end
if current == 'COMPLETED' or current == 'FAILED' then return 0 end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return 2 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: resource hash, active set, tombstones. ARGV: id, "1" when unfinished, field, value, ...
# A deleted resource is not brought back by a record a racing writer left behind.
_RESTORE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
if ARGV[2] == '1' then redis.call('SADD', KEYS[2], ARGV[1]) end
return 1
"""

# KEYS: resource hash, status channel, active set, lease, created set, tombstones, derived set.
# ARGV: id, status JSON (FAILED deleted), deletion time, key prefix.
# Removes the entry and everything that names it, keeps a tombstone, and tells the resource's
# watchers; returns the entry's fields, or nothing when it was gone already (idempotent).
_DELETE = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return false end
local context = redis.call('HGET', KEYS[1], 'uploadContextId')
local sources = redis.call('HGET', KEYS[1], 'sources') or ''
redis.call('PUBLISH', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1], KEYS[4], KEYS[7])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
if context and context ~= '' then
    redis.call('ZREM', ARGV[4] .. ':context-resources:' .. context, ARGV[1])
end
for source in string.gmatch(sources, '%S+') do
    redis.call('ZREM', ARGV[4] .. ':derived:' .. source, ARGV[1])
end
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[1])
return fields
"""

# KEYS: lease. ARGV: process id. Lets go of a lease this process holds (a released writer).
_DROP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
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

    @property
    def created(self) -> str:
        return f"{self.prefix}:created"

    def context_resources(self, context_id: str) -> str:
        return f"{self.prefix}:context-resources:{context_id}"

    @property
    def tombstones(self) -> str:
        return f"{self.prefix}:tombstones"

    @property
    def deletions(self) -> str:
        return f"{self.prefix}:deletions"

    @property
    def handovers(self) -> str:
        return f"{self.prefix}:handovers"

    @property
    def sweep(self) -> str:
        return f"{self.prefix}:sweep"


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
        self._end = self.client.register_script(_END)
        self.renew = self.client.register_script(_RENEW)
        self.adopt = self.client.register_script(_ADOPT)
        self.restore = self.client.register_script(_RESTORE)
        self.delete = self.client.register_script(_DELETE)
        self.drop = self.client.register_script(_DROP)

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
                  checksum or "", self.node_id],
        )  # fmt: skip
        return bool(result == 1)

    async def write_end(
        self, resource_id: str, status: ResourceStatus, checksum: str | None, reaping: bool
    ) -> ResourceStatus | None:
        """Record a terminal status through the fenced script (see ``_END``)."""
        keys = self.keys
        result = await self._end(
            keys=[keys.resource(resource_id), keys.channel(resource_id), keys.active,
                  keys.lease(resource_id)],
            args=[status.transfer_status.value, status.current_size,
                  "" if status.revision is None else status.revision,
                  time.time(), status.model_dump_json(by_alias=True), resource_id,
                  checksum or "", "reap" if reaping else "owner", self.node_id],
        )  # fmt: skip
        code = int(result[0])
        if code in (0, 1) and result[1]:
            return ResourceStatus.model_validate_json(result[1])
        if code == 3:
            logger.error(
                "resource %s is owned by another process: its end is not ours", resource_id
            )
        return None

    async def close(self) -> None:
        await self.client.aclose()


class RedisCatalog:
    """The catalog in Redis (see the module docstring for the keys)."""

    def __init__(
        self,
        store: RedisStore,
        lease_seconds: float,
        patience: float = TERMINAL_WRITE_PATIENCE,
    ) -> None:
        self._store = store
        self._lease_seconds = lease_seconds
        self._lease_ms = int(lease_seconds * 1000)
        self._patience = patience
        # Unfinished resources seen without a lease, and since when (monotonic): one is an
        # orphan only once its lease has been missing for a whole lease period of checks that
        # all reached Redis; an outage forgets every suspicion (its owner could not renew).
        self._missing_since: dict[str, float] = {}
        self._last_check: float | None = None
        # Told of a resource of this process that another process produces now.
        self.on_taken: Callable[[str], None] | None = None

    async def create(
        self,
        resource_id: str,
        metadata: ResourceMetadata,
        upload_context_id: str | None,
        status: ResourceStatus,
        kind: ResourceKind = ResourceKind.UPLOAD,
        sources: tuple[str, ...] = (),
        owned: bool = True,
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
            # A job queued for any worker has no owner (nor lease) until one claims it, and is
            # never reaped: a dead worker's job is taken over through the job stream.
            "owner": self._store.node_id if owned else "",
            "job": 0 if owned else 1,
        }
        async with self._store.client.pipeline(transaction=True) as pipe:
            pipe.hset(keys.resource(resource_id), mapping=fields)
            for source in sources:
                pipe.zadd(keys.derived(source), {resource_id: now})
            if owned:
                pipe.set(keys.lease(resource_id), self._store.node_id, px=self._lease_ms)
            pipe.sadd(keys.active, resource_id)
            pipe.zadd(keys.created, {resource_id: now})
            if upload_context_id is not None:
                pipe.zadd(keys.context_resources(upload_context_id), {resource_id: now})
            await pipe.execute()

    async def get(self, resource_id: str) -> CatalogEntry | None:
        fields = await self._store.fields(self._store.keys.resource(resource_id))
        return _entry_from(resource_id, fields) if fields else None

    async def page(self, query: PageQuery) -> CatalogPage:
        # ``statuses`` is left to the caller: a status lives in each entry's hash.
        keys, limit, context_id = self._store.keys, query.limit, query.context_id
        key = keys.created if context_id is None else keys.context_resources(context_id)
        ids = await _ordered_ids(self._store.client, key, query)
        entries = []
        for resource_id in ids[:limit]:
            entry = await self.get(resource_id)
            if entry is not None:  # deleted between the two reads
                entries.append(entry)
        more = len(ids) > limit
        last = ids[limit - 1] if more else None
        next_cursor = None
        if last is not None:
            score = await self._store.client.zscore(key, last)
            next_cursor = Cursor(float(score), last) if score is not None else None
            if next_cursor is None and entries:
                next_cursor = Cursor.of(entries[-1])
        return CatalogPage(entries, next_cursor)

    async def delete(
        self, resource_id: str, status: ResourceStatus, deleted_at: float
    ) -> CatalogEntry | None:
        keys = self._store.keys
        fields = await self._store.delete(
            keys=[keys.resource(resource_id), keys.channel(resource_id), keys.active,
                  keys.lease(resource_id), keys.created, keys.tombstones,
                  keys.derived(resource_id)],
            args=[resource_id, status.model_dump_json(by_alias=True), deleted_at, keys.prefix],
        )  # fmt: skip
        if not fields:
            return None
        pairs = cast(list[str], fields)
        return _entry_from(resource_id, dict(zip(pairs[::2], pairs[1::2], strict=True)))

    async def deleted_at(self, resource_id: str) -> float | None:
        score = await self._store.client.zscore(self._store.keys.tombstones, resource_id)
        return None if score is None else float(score)

    async def purge_tombstones(self, deleted_before: float) -> list[str]:
        key = self._store.keys.tombstones
        ids = cast(
            list[str], await self._store.client.zrangebyscore(key, "-inf", f"({deleted_before}")
        )
        if ids:
            await self._store.client.zrem(key, *ids)
        return ids

    async def claim_sweep(self, seconds: float) -> bool:
        """One process per sweep period runs the shared part (the others would find the same
        work and do nothing harmful, only the same work again)."""
        keys = self._store.keys
        claimed = await self._store.client.set(
            keys.sweep, self._store.node_id, nx=True, px=max(1, int(seconds * 1000))
        )
        return bool(claimed)

    async def derived_from(self, resource_id: str) -> list[tuple[str, ResourceKind]]:
        keys = self._store.keys
        ids = cast(list[str], await self._store.client.zrange(keys.derived(resource_id), 0, -1))
        found = []
        for derived_id in ids:
            kind = await self._store.client.hget(keys.resource(derived_id), "kind")
            if kind is not None:
                found.append((derived_id, ResourceKind(str(kind))))
        return found

    async def describe(self, resource_id: str, description: dict[str, Any]) -> None:
        key = self._store.keys.resource(resource_id)
        await self._store.client.hset(key, "description", json.dumps(description))

    async def set_status(
        self, resource_id: str, status: ResourceStatus, checksum: str | None = None
    ) -> None:
        # A terminal status must reach Redis: retry through a short outage, then give up loudly.
        await _retrying(
            partial(self._store.write_status, resource_id, status, checksum),
            give_up_after=TERMINAL_WRITE_PATIENCE,
        )

    async def record_end(
        self,
        resource_id: str,
        status: ResourceStatus,
        checksum: str | None = None,
        *,
        reaping: bool = False,
    ) -> ResourceStatus | None:
        # A terminal status must reach Redis: retry through a short outage, then give up loudly
        # (the caller decides what the resource becomes; see ResourceManager._persist_end).
        recorded: list[ResourceStatus | None] = []

        async def write() -> None:
            recorded.append(await self._store.write_end(resource_id, status, checksum, reaping))

        await _retrying(write, give_up_after=0 if reaping else self._patience)
        return recorded[-1]

    async def restore(self, entry: CatalogEntry) -> None:
        keys = self._store.keys
        status = entry.status
        fields: list[EncodableT] = [
            "filename", entry.metadata.filename,
            "mimeType", entry.metadata.mime_type,
            "supportsLineAccess", int(entry.metadata.supports_line_access),
            "uploadContextId", entry.upload_context_id or "",
            "transferStatus", status.transfer_status.value,
            "currentSize", status.current_size,
            "revision", "" if status.revision is None else status.revision,
            "status", status.model_dump_json(by_alias=True),
            "checksum", entry.checksum or "",
            "createdAt", entry.created_at,
            "updatedAt", entry.updated_at,
            "kind", entry.kind.value,
            "sources", " ".join(entry.sources),
            "description", json.dumps(entry.metadata.description()),
        ]  # fmt: skip
        unfinished = "0" if status.is_terminal else "1"
        restored = await self._store.restore(
            keys=[keys.resource(entry.resource_id), keys.active, keys.tombstones],
            args=[entry.resource_id, unfinished, *fields],
        )
        if restored == 1:
            client, rid = self._store.client, entry.resource_id
            for source in entry.sources:
                await client.zadd(keys.derived(source), {rid: entry.created_at})
            await client.zadd(keys.created, {rid: entry.created_at})
            if entry.upload_context_id is not None:
                await client.zadd(
                    keys.context_resources(entry.upload_context_id), {rid: entry.created_at}
                )

    async def unfinished(self) -> list[CatalogEntry]:
        """Unfinished resources whose lease has been missing for a whole lease period, in
        checks that all reached Redis: their owners are gone. (Called every lease/3 by the
        ``LeaseKeeper``; a first call only starts suspecting.)"""
        keys, client = self._store.keys, self._store.client
        now = time.monotonic()
        if self._last_check is None or now - self._last_check > self._lease_seconds / 2:
            # The previous check is too long ago (an outage, a stalled loop): an owner may
            # have been unable to renew meanwhile. Start suspecting afresh.
            self._missing_since.clear()
        self._last_check = None  # set again only if this check reaches Redis throughout
        missing: dict[str, float] = {}
        orphans = []
        for resource_id in await self._store.members(keys.active):
            if await client.exists(keys.lease(resource_id)):
                continue
            if await client.hget(keys.resource(resource_id), "job") == "1":
                continue  # the job stream takes it over (see redis_jobs.py)
            since = missing[resource_id] = self._missing_since.get(resource_id, now)
            if now - since < self._lease_seconds:
                continue
            entry = await self.get(resource_id)
            if entry is None:
                await client.srem(keys.active, resource_id)
            elif not entry.status.is_terminal:
                orphans.append(entry)
        self._missing_since = missing
        self._last_check = time.monotonic()
        return orphans

    def forget_suspicions(self) -> None:
        """Redis could not be reached: leases missing now may be the outage's doing."""
        self._missing_since.clear()
        self._last_check = None

    async def ping(self) -> None:
        await self._store.ping()

    async def count_in_context(self, upload_context_id: str) -> int:
        raise NotImplementedError("contexts are counted by the context registry")

    async def adopt(self, resource_id: str) -> bool:
        """Make this process the producer of unfinished ``resource_id`` (see ``_ADOPT``)."""
        keys = self._store.keys
        result = await self._store.adopt(
            keys=[keys.resource(resource_id), keys.lease(resource_id)],
            args=[self._store.node_id, self._lease_ms],
        )
        return bool(result == 1)

    async def renew_leases(self, resource_ids: list[str]) -> list[str]:
        """Renew the leases of this process's unfinished resources; returns the ids whose
        entry Redis no longer has (it restarted empty): the owner restores them. Resources
        another process has taken over are handed to ``on_taken``."""
        if not resource_ids:
            return []
        keys = self._store.keys
        async with self._store.client.pipeline(transaction=False) as pipe:
            for resource_id in resource_ids:
                await self._store.renew(
                    keys=[keys.resource(resource_id), keys.lease(resource_id)],
                    args=[self._store.node_id, self._lease_ms],
                    client=pipe,
                )
            results = await pipe.execute()
        renewed = dict(zip(resource_ids, results, strict=True))
        for resource_id in [rid for rid, result in renewed.items() if result == -2]:
            logger.error("resource %s was taken over by another process", resource_id)
            if self.on_taken is not None:
                self.on_taken(resource_id)
        return [rid for rid, result in renewed.items() if result == -1]

    async def drop_lease(self, resource_id: str) -> None:
        """Let go of the lease of a resource left unfinished on purpose (``adopt`` takes it
        up elsewhere)."""
        keys = self._store.keys
        await self._store.drop(keys=[keys.lease(resource_id)], args=[self._store.node_id])

    async def close(self) -> None:
        await self._store.close()


def _entry_from(resource_id: str, fields: dict[str, str]) -> CatalogEntry:
    return CatalogEntry(
        resource_id=resource_id,
        metadata=ResourceMetadata.model_construct(
            filename=fields["filename"],
            mime_type=fields["mimeType"],
            supports_line_access=fields["supportsLineAccess"] == "1",
            **json.loads(fields.get("description") or "{}"),
        ),
        status=_status_from(fields),
        upload_context_id=fields.get("uploadContextId") or None,
        checksum=fields.get("checksum") or None,
        created_at=float(fields["createdAt"]),
        updated_at=float(fields["updatedAt"]),
        kind=ResourceKind(fields.get("kind") or ResourceKind.UPLOAD.value),
        sources=tuple((fields.get("sources") or "").split()),
    )


async def _ordered_ids(client: aioredis.Redis, key: str, query: PageQuery) -> list[str]:
    """Up to ``query.limit + 1`` members of sorted set ``key`` after ``query.after`` in (score,
    member) order (both descending when ``newest_first``), scored below ``created_before`` if
    given. Members of equal score come in the member's order, so a cursor at a tie goes on
    exactly where the previous page stopped."""
    after, count, newest_first = query.after, query.limit + 1, query.newest_first
    created_before = query.created_before
    bound = "+inf" if created_before is None else f"({created_before}"
    edge = bound if after is None else str(after.created_at)
    if created_before is not None and after is not None and after.created_at >= created_before:
        return []
    found: list[str] = []
    offset = 0
    while len(found) < count:
        batch = count - len(found) + 16
        if newest_first:
            rows = await client.zrevrangebyscore(
                key, edge, "-inf", start=offset, num=batch, withscores=True
            )
        else:
            low = "-inf" if after is None else str(after.created_at)
            rows = await client.zrangebyscore(
                key, low, bound, start=offset, num=batch, withscores=True
            )
        for member, score in cast(list[tuple[str, float]], rows):
            if after is not None and score == after.created_at:
                seen = member >= after.resource_id if newest_first else member <= after.resource_id
                if seen:
                    continue
            found.append(member)
            if len(found) == count:
                break
        if len(rows) < batch:
            break
        offset += len(rows)
    return found


class RedisStatusBus:
    """Statuses through Redis pub/sub: the owner publishes (in order, through one queue), every
    process delivers to its local watchers' mailboxes."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._outbox: asyncio.Queue[tuple[str, ResourceStatus]] = asyncio.Queue()
        self._mailboxes: dict[str, set[StatusMailbox]] = defaultdict(set)
        self._confirmed: dict[str, asyncio.Event] = {}
        self._pubsub = store.client.pubsub()
        # Only the listener task (re)connects ``_pubsub``: redis-py's PubSub is not safe for two
        # coroutines connecting it at once. A watcher's SUBSCRIBE that reconnected it while the
        # listener did (Redis had just restarted) made the listener's read raise RuntimeError and
        # end: no status reached this process through pub/sub any more, and the watcher waited
        # in vain for its confirmation, then was closed with 1011. A watcher arriving while the
        # connection is down leaves its channel in ``_unsent`` for the listener to subscribe.
        # The lock orders everything that sends (UN)SUBSCRIBE or replaces ``_pubsub``.
        self._subscribing = asyncio.Lock()
        self._unsent: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        # Called with a watched resource whose entry Redis no longer has (it restarted empty):
        # the manager restores it from the record beside the bytes, so its watchers hear of it
        # again (an orphan is then failed like any other) instead of waiting in silence.
        self.restore_missing: Callable[[str], Awaitable[object]] | None = None

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._publisher(), name="livefile-redis-publisher"),
            asyncio.create_task(self._listener(), name="livefile-redis-listener"),
            asyncio.create_task(self._safety_net(), name="livefile-redis-catch-up"),
        ]

    def publish(self, resource_id: str, status: ResourceStatus) -> None:
        # Local watchers hear at once; the others through Redis, in the order of this queue.
        # A terminal status is written (and published) by the catalog's fenced ``record_end``,
        # never through this queue: only the status that write let stand is ever an end.
        for mailbox in self._mailboxes.get(resource_id, ()):
            mailbox.offer(status)
        if not status.is_terminal:
            self._outbox.put_nowait((resource_id, status))

    def latest(self, resource_id: str) -> ResourceStatus | None:
        """The newest status of ``resource_id`` this process has heard (its watchers'
        mailboxes), or None when nobody here watches it: what is served while Redis is away."""
        newest: ResourceStatus | None = None
        for mailbox in self._mailboxes.get(resource_id, ()):
            if newest is None or mailbox.latest.is_newer_than(newest):
                newest = mailbox.latest
        return newest

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
        try:
            if first or channel not in self._confirmed:
                confirmed = self._confirmed.setdefault(channel, asyncio.Event())
                async with self._subscribing:
                    if self._connected():
                        await self._pubsub.subscribe(channel)
                    else:  # the listener is (re)connecting it: it subscribes this one after
                        self._unsent.add(channel)
                await asyncio.wait_for(confirmed.wait(), 10)
            # Anything published before the subscription took effect is in the hash: read it.
            await self._catch_up(resource_id)
        except BaseException:
            mailbox.close()  # its watcher is refused: nobody else would close it
            raise
        return mailbox

    def _connected(self) -> bool:
        connection = self._pubsub.connection
        return connection is not None and connection.is_connected

    async def _catch_up(self, resource_id: str) -> None:
        fields = await self._store.fields(self._store.keys.resource(resource_id))
        if not fields and self.restore_missing is not None:
            await self.restore_missing(resource_id)
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
        async with self._subscribing:
            if channel in self._confirmed:
                return  # watched again meanwhile: its new SUBSCRIBE must stand
            self._unsent.discard(channel)
            if self._connected():  # else it goes with the connection (see _resubscribe)
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
                if self._unsent:
                    await self._subscribe_unsent()
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
            except Exception as exc:  # whatever broke the connection, this task must go on
                logger.warning(
                    "Redis pub/sub connection lost (%s: %s); reconnecting", type(exc).__name__, exc
                )
                await self._resubscribe()

    async def _subscribe_unsent(self) -> None:
        async with self._subscribing:
            unsent = sorted(self._unsent)
            if unsent:
                await self._pubsub.subscribe(*unsent)
                self._unsent.difference_update(unsent)

    async def _resubscribe(self) -> None:
        """After a reconnection: subscribe again and catch up on what was missed."""
        while True:
            await asyncio.sleep(0.5)
            try:
                async with self._subscribing:  # every channel watched now, on the new one
                    channels = [self._store.keys.channel(rid) for rid in self._mailboxes]
                    with contextlib.suppress(Exception):
                        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
                    self._pubsub = self._store.client.pubsub()
                    if channels:
                        await self._pubsub.subscribe(*channels)
                    self._unsent.clear()
                for resource_id in list(self._mailboxes):
                    await self._catch_up(resource_id)
                logger.info("Redis pub/sub connection re-established")
                return
            except (RedisError, ConnectionError):
                continue  # still away
            except Exception:  # the listener calling this must never end
                logger.exception("re-establishing the Redis pub/sub connection failed")

    async def close(self) -> None:
        # Deliver what is queued (bounded), then stop.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox.join(), 5)
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]


class RedisFeed:
    """Notices from one process to the others on one pub/sub channel: ``send`` publishes one
    (a JSON object, marked with this process's id); every other process hears it in ``heard``.
    Pub/sub keeps nothing for a process that is not listening: each feed's users must cope
    with a notice missed (Redis away at that moment)."""

    def __init__(self, store: RedisStore, channel: str) -> None:
        self._store = store
        self._channel = channel
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Start listening; returns once subscribed, so no notice after it is missed."""
        name = f"livefile-redis-{self._channel}"
        self._task = asyncio.create_task(self._listen(), name=name)
        await asyncio.wait_for(self._subscribed.wait(), 10)

    async def send(self, notice: dict[str, Any]) -> None:
        message = json.dumps({**notice, "node": self._store.node_id})
        await self._store.client.publish(self._channel, message)

    async def heard(self, notice: dict[str, Any]) -> None:
        """Another process sent ``notice``."""
        raise NotImplementedError

    async def _listen(self) -> None:
        while True:
            pubsub = self._store.client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        self._subscribed.set()
                    elif message["type"] == "message":
                        await self._heard(message["data"])
            except (RedisError, ConnectionError) as exc:
                logger.warning("%s connection lost (%s); reconnecting", self._channel, exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _heard(self, data: str) -> None:
        try:
            notice = json.loads(data)
            if notice["node"] == self._store.node_id:
                return  # ours: done already
            await self.heard(notice)
        except Exception:
            logger.exception("a notice on %s could not be handled", self._channel)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class RedisDeletionFeed(RedisFeed):
    """Deletions across processes: the deleting process publishes each on ``P:deletions``;
    every other process hears it and calls ``on_deleted`` (its watchers of the resource are
    closed, its upload of it stopped, its caches forget it). A process that misses one (Redis
    away at that moment) still finds the resource gone at its next read of the catalog."""

    def __init__(
        self,
        store: RedisStore,
        on_deleted: Callable[[str, ResourceStatus], Awaitable[None]],
    ) -> None:
        super().__init__(store, store.keys.deletions)
        self._on_deleted = on_deleted

    async def announce(self, resource_id: str, status: ResourceStatus) -> None:
        await self.send({"id": resource_id, "status": status.to_wire()})

    async def heard(self, notice: dict[str, Any]) -> None:
        status = ResourceStatus.model_validate(notice["status"])
        await self._on_deleted(str(notice["id"]), status)


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

    Every ``lease_seconds / 3`` the leases of local uploads are renewed (an entry Redis lost is
    restored first); every ``lease_seconds / 3`` too, orphans (unfinished, their lease missing
    for a whole lease period while Redis answered) are marked FAILED with the bytes on disk. A
    dead owner is therefore failed at most ``lease_seconds * 8/3`` after its last renewal; an owner
    alive through a Redis outage renews its leases before anyone may declare it dead.
    """

    def __init__(
        self,
        catalog: RedisCatalog,
        active_ids: Callable[[], list[str]],
        reap: Callable[[], Awaitable[int]],
        lease_seconds: float,
        restore: Callable[[list[str]], Awaitable[None]] | None = None,
    ) -> None:
        self._catalog = catalog
        self._active_ids = active_ids
        self._reap = reap
        self._restore = restore
        self._period = lease_seconds / 3
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="livefile-leases")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            try:
                missing = await self._catalog.renew_leases(self._active_ids())
                if missing and self._restore is not None:
                    await self._restore(missing)
                    await self._catalog.renew_leases(missing)
                reaped = await self._reap()
                if reaped:
                    logger.warning("%d upload(s) of a dead process marked FAILED", reaped)
            except (RedisError, ConnectionError) as exc:
                self._catalog.forget_suspicions()
                logger.warning("Redis unreachable while renewing leases: %s", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
