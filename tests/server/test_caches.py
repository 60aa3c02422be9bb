"""The caches behind the SSO app's speed (bench/sso_tax.py): expiry and bounds."""

from __future__ import annotations

from mlflow_stack.server.caches import ExpiringCache


def test_entries_expire_at_their_own_time() -> None:
    now = [0.0]
    cache: ExpiringCache[str, int] = ExpiringCache(clock=lambda: now[0])
    cache.put("short", 1, 5)
    cache.put("long", 2, 50)
    cache.put("never", 3, 0)  # a ttl of 0 stores nothing
    assert (cache.get("short"), cache.get("long"), cache.get("never")) == (1, 2, None)
    now[0] = 5.0
    assert cache.get("short") is None and cache.get("long") == 2
    cache.discard("long")
    assert cache.get("long") is None and len(cache) == 0


def test_cache_is_bounded_and_drops_expired_entries_first() -> None:
    now = [0.0]
    cache: ExpiringCache[int, int] = ExpiringCache(max_size=3, clock=lambda: now[0])
    cache.put(1, 1, 1)
    cache.put(2, 2, 100)
    cache.put(3, 3, 100)
    now[0] = 2.0
    cache.put(4, 4, 100)  # full: the expired entry goes, the live ones stay
    assert [cache.get(k) for k in (1, 2, 3, 4)] == [None, 2, 3, 4]
    cache.put(5, 5, 100)  # full of live entries: start over rather than grow
    assert len(cache) == 1 and cache.get(5) == 5

