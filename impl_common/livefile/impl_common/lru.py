"""A bounded mapping that forgets the least recently used entry first: the caches of finished
resources (which never change, rule 2) use it for entries, headers and open descriptors."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value, now the most recently used; None when absent."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> V | None:
        """Keep ``value``; returns the value it pushed out beyond the capacity, if any (for the
        caller to release, e.g. a descriptor to close)."""
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self._capacity:
            return self._items.popitem(last=False)[1]
        return None

    def pop(self, key: K) -> V | None:
        """Forget ``key`` (a deleted resource); returns its value, if it was kept."""
        return self._items.pop(key, None)
