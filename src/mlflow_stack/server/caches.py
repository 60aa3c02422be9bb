"""A small expiring cache shared by the SSO app's speed-ups and the Keycloak directory."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringCache(Generic[K, V]):
    """A small thread-safe map whose entries each expire at their own time.

    Bounded: past ``max_size`` entries the expired ones are dropped, and if that is not enough
    everything is (a cache miss only costs the work the cache saves, never a wrong answer).
    """

    def __init__(self, max_size: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_size = max_size
        self._clock = clock
        self._items: dict[K, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            if self._clock() >= hit[0]:
                del self._items[key]
                return None
            return hit[1]

    def put(self, key: K, value: V, ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            now = self._clock()
            if len(self._items) >= self.max_size:
                self._items = {k: v for k, v in self._items.items() if v[0] > now}
                if len(self._items) >= self.max_size:
                    self._items.clear()
            self._items[key] = (now + ttl, value)

    def discard(self, key: K) -> None:
        with self._lock:
            self._items.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
