"""The bounded cache of finished resources' entries, headers and descriptors."""

from __future__ import annotations

from livefile.impl_common.lru import LruCache


def test_the_least_recently_used_entry_is_pushed_out_and_handed_back() -> None:
    cache: LruCache[str, int] = LruCache(2)
    assert cache.put("a", 1) is None
    assert cache.put("b", 2) is None
    assert cache.get("a") == 1  # "b" is now the least recently used
    assert cache.put("c", 3) == 2
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)


def test_putting_a_key_again_replaces_it_without_pushing_anything_out() -> None:
    cache: LruCache[str, int] = LruCache(1)
    cache.put("a", 1)
    assert cache.put("a", 5) is None
    assert cache.get("a") == 5
