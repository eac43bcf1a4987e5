"""When to checkpoint: the first bytes at once, then at most once per interval, and the last bytes
of a quiet writer within one interval (a timer, not only writes, drives checkpoints)."""

from __future__ import annotations


class CheckpointClock:
    """Sans-I/O checkpoint scheduling; the caller supplies the time and runs the timer.

    ``interval == 0`` means a checkpoint after every write.
    """

    def __init__(self, interval: float) -> None:
        if interval < 0:
            raise ValueError("checkpoint interval must be >= 0")
        self.interval = interval
        self._last_checkpoint: float | None = None
        self.dirty = False

    def on_write(self, now: float) -> bool:
        """Record a write; True when a checkpoint is due now."""
        self.dirty = True
        return self._last_checkpoint is None or now - self._last_checkpoint >= self.interval

    def deadline(self) -> float | None:
        """When a pending checkpoint must happen at the latest (None when nothing is pending)."""
        if not self.dirty or self._last_checkpoint is None:
            return None
        return self._last_checkpoint + self.interval

    def on_checkpoint(self, now: float) -> None:
        self.dirty = False
        self._last_checkpoint = now
