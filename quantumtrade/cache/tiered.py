"""Read-through tiered cache: L1 memory, then L2 Redis, then the loader.

``get_or_load(key, loader)`` is single-flight across both tiers: concurrent misses for one key
make one L2 lookup and at most one load. Values go to Redis in a compact binary encoding
(msgpack via msgspec) with the same TTL as L1.

Redis is optional and never fatal: every L2 call sits behind a circuit breaker; an error or a
timeout counts as an L2 miss, and once the breaker opens the cache serves from L1 and the
loader without touching Redis until the cool-down lets one probe through (redis-py reconnects
by itself on that probe). So an outage degrades the hit rate, not the service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import msgspec
import structlog

from quantumtrade.breaker import BreakerConfig, CircuitBreaker
from quantumtrade.cache.l1 import L1Cache
from quantumtrade.clock import Clock
from quantumtrade.events import CircuitBreakerChanged

log = structlog.get_logger("quantumtrade.cache")

V = TypeVar("V")


class RedisL2:
    """The L2 tier: one redis.asyncio client, keys under ``prefix``, bounded call time."""

    def __init__(self, client: Any, *, prefix: str = "qt:", timeout_s: float = 0.25) -> None:
        self.client = client
        self.prefix = prefix
        self.timeout_s = timeout_s

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "qt:", timeout_s: float = 0.25) -> RedisL2:
        import redis.asyncio as redis

        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry_on_timeout=False,
            health_check_interval=30,
        )
        return cls(client, prefix=prefix, timeout_s=timeout_s)

    async def get(self, key: str) -> bytes | None:
        async with asyncio.timeout(self.timeout_s):
            value: bytes | None = await self.client.get(self.prefix + key)
        return value

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        async with asyncio.timeout(self.timeout_s):
            await self.client.set(self.prefix + key, value, px=ttl_ms)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        async with asyncio.timeout(self.timeout_s):
            values: list[bytes | None] = await self.client.mget([self.prefix + k for k in keys])
        return values

    async def set_many(self, items: Sequence[tuple[str, bytes]], ttl_ms: int) -> None:
        async with asyncio.timeout(self.timeout_s):
            async with self.client.pipeline(transaction=False) as pipe:
                for key, value in items:
                    pipe.set(self.prefix + key, value, px=ttl_ms)
                await pipe.execute()

    async def close(self) -> None:
        await self.client.aclose()


class TieredCache(Generic[V]):
    def __init__(
        self,
        *,
        clock: Clock,
        l1: L1Cache[V],
        l2: RedisL2 | None,
        value_type: type[V],
        breaker_config: BreakerConfig | None = None,
        on_breaker_change: Callable[[CircuitBreakerChanged], None] | None = None,
    ) -> None:
        self.l1 = l1
        self.l2 = l2
        self.ttl_ms = l1.ttl_ns // 1_000_000
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(type=value_type)
        self.breaker = CircuitBreaker(
            "redis",
            clock=clock,
            config=breaker_config or BreakerConfig(failure_threshold=3, cooldown_ms=5_000),
            on_change=on_breaker_change,
        )
        self._inflight: dict[str, asyncio.Future[V]] = {}
        self.l2_hits = 0
        self.l2_misses = 0
        self.l2_errors = 0
        self.loads = 0

    async def get_or_load(self, key: str, loader: Callable[[], Awaitable[V]]) -> V:
        value = self.l1.get(key)
        if value is not None:
            return value
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            value = await self._from_l2(key)
            if value is None:
                self.loads += 1
                value = await loader()
                await self._to_l2(key, value)
            self.l1.set(key, value)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()
            raise
        else:
            fut.set_result(value)
            return value
        finally:
            del self._inflight[key]

    async def get_many(
        self, keys: Sequence[str], usable: Callable[[int, V], bool] | None = None
    ) -> list[V | None]:
        """Fresh values for ``keys`` (None where absent): L1, then one L2 round trip for the
        L1 misses (hits are copied into L1). ``usable(i, value)`` rejects an L1 value for key
        ``i`` (e.g. not new enough), which is then looked up in L2 too. No single-flight:
        callers fetch disjoint keys."""
        l1 = self.l1
        values = l1.get_many(keys)
        if usable is not None:
            values = [v if v is None or usable(i, v) else None for i, v in enumerate(values)]
        missing = [i for i, v in enumerate(values) if v is None]
        if not missing or self.l2 is None or not self.breaker.allow():
            return values
        try:
            raws = await self.l2.get_many([keys[i] for i in missing])
        except Exception as exc:
            self._l2_failed("mget", exc)
            return values
        self.breaker.record_success()
        for i, raw in zip(missing, raws, strict=True):
            value = self._decode(raw)
            if value is not None:
                values[i] = value
                l1.set(keys[i], value)
        return values

    async def set_many(self, items: Sequence[tuple[str, V]]) -> None:
        """Store every (key, value) in L1 and, in one pipeline, in L2."""
        self.l1.set_many(items)
        if not items or self.l2 is None or not self.breaker.allow():
            return
        encode = self._encoder.encode
        try:
            await self.l2.set_many([(k, encode(v)) for k, v in items], self.ttl_ms)
        except Exception as exc:
            self._l2_failed("set", exc)
            return
        self.breaker.record_success()

    def peek_stale(self, key: str) -> V | None:
        """The L1 value for ``key`` even if expired (None once evicted): outage service."""
        return self.l1.peek(key, stale_ok=True)

    def _decode(self, raw: bytes | None) -> V | None:
        """An L2 value decoded and counted as an L2 hit or miss."""
        if raw is None:
            self.l2_misses += 1
            return None
        try:
            value = self._decoder.decode(raw)
        except msgspec.DecodeError:
            self.l2_misses += 1  # a stale format or foreign value: reload and overwrite it
            return None
        self.l2_hits += 1
        return value

    async def _from_l2(self, key: str) -> V | None:
        if self.l2 is None or not self.breaker.allow():
            return None
        try:
            raw = await self.l2.get(key)
        except Exception as exc:
            self._l2_failed("get", exc)
            return None
        self.breaker.record_success()
        return self._decode(raw)

    async def _to_l2(self, key: str, value: V) -> None:
        if self.l2 is None or not self.breaker.allow():
            return
        try:
            await self.l2.set(key, self._encoder.encode(value), self.ttl_ms)
        except Exception as exc:
            self._l2_failed("set", exc)
            return
        self.breaker.record_success()

    def _l2_failed(self, op: str, exc: Exception) -> None:
        self.l2_errors += 1
        self.breaker.record_failure()
        log.warning(
            "redis_unavailable",
            op=op,
            error=f"{type(exc).__name__}: {exc}",
            breaker=self.breaker.state,
        )

    def stats(self) -> dict[str, Any]:
        l1 = self.l1.stats()
        l2_lookups = self.l2_hits + self.l2_misses
        total = l1["hits"] + l1["misses"]
        hits = l1["hits"] + self.l2_hits
        return {
            "l1": l1,
            "l2": {
                "enabled": self.l2 is not None,
                "hits": self.l2_hits,
                "misses": self.l2_misses,
                "errors": self.l2_errors,
                "hit_rate": self.l2_hits / l2_lookups if l2_lookups else 0.0,
                "breaker": str(self.breaker.state),
            },
            "loads": self.loads,
            "hit_rate": hits / total if total else 0.0,
        }
