"""Jobs shared by every worker and node through a Redis stream with a consumer group.

With Redis configured, a job is not run by the process that was asked for it: its ``JobSpec`` is
appended to the stream ``P:jobs`` and the resource it produces is created without an owner.
Each process reads the stream in the consumer group ``workers`` under its own process id, as
many entries at a time as it has free job slots, so every job runs on exactly one worker: the
one Redis handed it to (``XREADGROUP``). A job being run stays in its worker's pending list until
it ends (``XACK``, then ``XDEL``); its worker touches the entry every lease/3 (``XCLAIM`` of its
own entry resets its idle time). A worker that dies stops touching its entries: once one has
been idle for two leases, any worker with a free slot claims it (``XAUTOCLAIM``), takes the
resource over under its own lease (``ResourceManager.adopt``, fenced in Redis) and runs the job
again from the start; the bytes already published are compared, not written twice
(``ReplayingWriter``). A job delivered ``MAX_DELIVERIES`` times without ending (it kills its
workers) ends FAILED ``worker_lost``.

Why a stream and not a job-queue library (RQ, arq, Celery, Dramatiq): those run jobs in worker
processes of their own, with their own serialisation, retries and result stores; a livefile job
must run inside a server process, beside the readers it feeds live, and its "result" is the
resource itself. A stream with a consumer group is Redis's own mechanism for exactly what is
needed — one delivery per entry, a durable pending list per consumer, and take-over of a dead
consumer's entries — with nothing to deploy beyond the Redis the workers already share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError
from redis.typing import StreamIdT

from livefile.api.errors import JobRefusedError
from livefile.impl_server.jobs import JobLimits, JobSpec

logger = logging.getLogger(__name__)

GROUP = "workers"
MAX_DELIVERIES = 3  # a job handed out this often without ending is not tried again

# Runs a claimed job to its end; True when it ended here (the entry is done with), False when
# another worker produces the resource now (the entry is not ours to acknowledge).
RunClaimed = Callable[[JobSpec, bool], Awaitable[bool]]
# Ends a job that was delivered too often FAILED ``worker_lost``.
GiveUp = Callable[[JobSpec], Awaitable[None]]


class RedisJobQueue:
    """This process's side of the shared job stream."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        consumer: str,
        limits: JobLimits,
        lease_seconds: float,
        run: RunClaimed,
        give_up: GiveUp,
    ) -> None:
        self._client = client
        self._stream = f"{prefix}:jobs"
        self._consumer = consumer
        self.limits = limits
        self._period = lease_seconds / 3
        self._dead_after_ms = int(2 * lease_seconds * 1000)
        self._run = run
        self._give_up = give_up
        self._slots = asyncio.Semaphore(limits.concurrency)
        self._running: dict[str, asyncio.Task[None]] = {}  # by stream entry id
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: another worker made it
            await self._client.xgroup_create(self._stream, GROUP, id="0", mkstream=True)
        if self.limits.concurrency == 0:
            return  # a front node: it queues jobs, the other workers run them
        self._tasks = [
            asyncio.create_task(self._consume(), name="livefile-jobs"),
            asyncio.create_task(self._touch(), name="livefile-jobs-touch"),
        ]

    async def check_room(self) -> None:
        """Raise ``JobRefusedError`` when the stream holds ``limits.queue`` jobs or more
        (running or waiting, on every worker)."""
        queued = int(await self._client.xlen(self._stream))
        if queued >= max(1, self.limits.queue):
            raise JobRefusedError(
                f"{queued} jobs are running or waiting on the workers: try again later"
            )

    async def submit(self, spec: JobSpec) -> None:
        await self._client.xadd(self._stream, {"spec": spec.to_json()})

    async def _consume(self) -> None:
        block_ms = max(1, int(self._period * 1000))
        while True:
            await self._slots.acquire()
            try:
                entry = await self._take_over_one() or await self._read_one(block_ms)
            except (RedisError, ConnectionError) as exc:
                self._slots.release()
                logger.warning("Redis unreachable while reading jobs: %s", exc)
                await asyncio.sleep(self._period)
                continue
            except BaseException:
                self._slots.release()
                raise
            if entry is None:
                self._slots.release()
                continue
            entry_id, spec, again = entry
            task = asyncio.create_task(
                self._execute(entry_id, spec, again), name=f"job-{spec.resource_id}"
            )
            self._running[entry_id] = task

    async def _read_one(self, block_ms: int) -> tuple[str, JobSpec, bool] | None:
        """A job nobody has been handed yet, waiting up to ``block_ms`` for one."""
        found = await self._client.xreadgroup(
            GROUP, self._consumer, {self._stream: ">"}, count=1, block=block_ms
        )
        for _stream, entries in cast(list[Any], found or []):
            for entry_id, fields in entries:
                return await self._parsed(entry_id, fields, again=False)
        return None

    async def _take_over_one(self) -> tuple[str, JobSpec, bool] | None:
        """A job whose worker stopped touching it for two leases (it died), if any."""
        _next, entries, *_ = await self._client.xautoclaim(
            self._stream, GROUP, self._consumer, self._dead_after_ms, "0-0", count=1
        )
        for entry_id, fields in entries:
            pending = await self._client.xpending_range(self._stream, GROUP, entry_id, entry_id, 1)
            deliveries = int(pending[0]["times_delivered"]) if pending else 1
            parsed = await self._parsed(entry_id, fields, again=True)
            if parsed is None:
                continue
            if deliveries > MAX_DELIVERIES:
                logger.error("job %s was handed out %d times: given up", entry_id, deliveries)
                await self._give_up(parsed[1])
                await self._done(entry_id)
                continue
            logger.warning("taking over job %s of a lost worker", entry_id)
            return parsed
        return None

    async def _parsed(
        self, entry_id: str, fields: dict[str, Any] | None, again: bool
    ) -> tuple[str, JobSpec, bool] | None:
        try:
            return entry_id, JobSpec.from_json((fields or {})["spec"]), again
        except (KeyError, ValueError, TypeError) as exc:
            logger.error("job entry %s is not a job (%s): dropped", entry_id, exc)
            await self._done(entry_id)
            return None

    async def _execute(self, entry_id: str, spec: JobSpec, again: bool) -> None:
        try:
            ended_here = await self._run(spec, again)
        except asyncio.CancelledError:
            raise  # shutdown: the entry stays pending for another worker to take over
        except Exception:
            logger.exception("job %s of %s failed", spec.kind.value, spec.resource_id)
            ended_here = True
        finally:
            self._running.pop(entry_id, None)
            self._slots.release()
        if ended_here:
            await self._done(entry_id)

    async def _done(self, entry_id: str) -> None:
        try:
            await self._client.xack(self._stream, GROUP, entry_id)
            await self._client.xdel(self._stream, entry_id)
        except (RedisError, ConnectionError) as exc:
            # Left pending: whoever claims it later finds its resource ended and drops it.
            logger.warning("could not acknowledge job %s: %s", entry_id, exc)

    async def _touch(self) -> None:
        """Keep this worker's running entries from looking abandoned."""
        while True:
            await asyncio.sleep(self._period)
            ids: list[StreamIdT] = list(self._running)
            if not ids:
                continue
            try:
                await self._client.xclaim(self._stream, GROUP, self._consumer, 0, ids, justid=True)
            except (RedisError, ConnectionError) as exc:
                logger.warning("Redis unreachable while touching jobs: %s", exc)

    async def close(self) -> None:
        """Stop reading and cancel the running jobs; their entries stay pending, so another
        worker (or this one, started again) takes them over."""
        for task in [*self._tasks, *self._running.values()]:
            task.cancel()
        for task in [*self._tasks, *self._running.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
