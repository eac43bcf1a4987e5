"""The checkpoint clock: first bytes at once, then at most once per interval, never forgotten."""

from livefile.impl_common.checkpoint import CheckpointClock


def test_first_write_is_checkpointed_at_once() -> None:
    clock = CheckpointClock(0.25)
    assert clock.on_write(now=100.0)


def test_writes_within_the_interval_wait_for_the_deadline() -> None:
    clock = CheckpointClock(0.25)
    clock.on_write(100.0)
    clock.on_checkpoint(100.0)
    assert not clock.on_write(100.1)
    assert clock.deadline() == 100.25


def test_write_after_the_interval_is_checkpointed_at_once() -> None:
    clock = CheckpointClock(0.25)
    clock.on_write(100.0)
    clock.on_checkpoint(100.0)
    assert clock.on_write(100.3)


def test_nothing_pending_means_no_deadline() -> None:
    clock = CheckpointClock(0.25)
    assert clock.deadline() is None
    clock.on_write(1.0)
    clock.on_checkpoint(1.0)
    assert clock.deadline() is None


def test_zero_interval_checkpoints_every_write() -> None:
    clock = CheckpointClock(0)
    for now in (1.0, 1.0, 1.0):
        assert clock.on_write(now)
        clock.on_checkpoint(now)
