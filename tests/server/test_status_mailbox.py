"""A watcher's mailbox: current status first, newest wins, never backwards, ends at terminal."""

from livefile.api.model import ResourceStatus, TransferStatus
from livefile.impl_server.bus import InProcessStatusBus


def status(transfer: TransferStatus, size: int) -> ResourceStatus:
    return ResourceStatus(transfer_status=transfer, current_size=size)


INITIATED = status(TransferStatus.INITIATED, 0)


async def test_subscriber_gets_current_status_first() -> None:
    bus = InProcessStatusBus()
    subscription = await bus.subscribe("r", INITIATED)
    bus.publish("r", status(TransferStatus.COMPLETED, 3))
    seen = [s async for s in subscription]
    assert seen[-1].transfer_status is TransferStatus.COMPLETED
    assert seen[0] in (INITIATED, seen[-1])


async def test_older_status_published_late_is_never_delivered() -> None:
    bus = InProcessStatusBus()
    subscription = await bus.subscribe("r", INITIATED)
    bus.publish("r", status(TransferStatus.IN_PROGRESS, 10))
    bus.publish("r", status(TransferStatus.IN_PROGRESS, 5))  # stale, arrives late
    bus.publish("r", status(TransferStatus.COMPLETED, 10))
    sizes = [s.current_size async for s in subscription]
    assert sizes == sorted(sizes)
    assert 5 not in sizes


async def test_terminal_status_is_final_for_the_subscriber() -> None:
    bus = InProcessStatusBus()
    subscription = await bus.subscribe("r", INITIATED)
    bus.publish("r", status(TransferStatus.FAILED, 4))
    bus.publish("r", status(TransferStatus.COMPLETED, 4))
    seen = [s async for s in subscription]
    assert seen[-1].transfer_status is TransferStatus.FAILED


async def test_closing_a_subscription_unsubscribes_it() -> None:
    bus = InProcessStatusBus()
    subscription = await bus.subscribe("r", INITIATED)
    assert bus.subscriber_count("r") == 1
    subscription.close()
    assert bus.subscriber_count("r") == 0


async def test_a_newer_revision_at_the_same_size_is_delivered() -> None:
    bus = InProcessStatusBus()
    first = ResourceStatus(
        transfer_status=TransferStatus.IN_PROGRESS, current_size=10, revision=1, stage="waiting"
    )
    subscription = await bus.subscribe("r", first)
    statuses = aiter(subscription)
    assert await anext(statuses) == first
    later = first.model_copy(update={"revision": 2, "stage": "repacking", "percent": 5.0})
    bus.publish("r", later)
    assert await anext(statuses) == later  # same size, newer revision: news
    bus.publish("r", first.model_copy(update={"stage": "stale"}))  # revision 1 again
    final = later.model_copy(update={"transfer_status": TransferStatus.COMPLETED, "revision": 3})
    bus.publish("r", final)
    assert await anext(statuses) == final  # the stale one was never delivered
