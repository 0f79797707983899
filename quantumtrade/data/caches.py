"""The daemon's two market-data caches: order books and bars, L1 in memory over one Redis L2.

``MarketCaches.build`` makes both from ``[cache]`` and ``[redis]`` (one Redis client, a
breaker each); ``order_book`` loads a symbol's book through the book cache and the source's
breaker (the paper venue's and the router's book supply).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from quantumtrade.cache.l1 import L1Cache
from quantumtrade.cache.tiered import RedisL2, TieredCache
from quantumtrade.clock import Clock
from quantumtrade.data.bar_cache import CachedBars
from quantumtrade.data.source import OrderBook
from quantumtrade.errors import SourceUnavailable
from quantumtrade.events import CircuitBreakerChanged


class MarketCaches:
    def __init__(self, books: TieredCache[OrderBook], bars: TieredCache[CachedBars]) -> None:
        self.books = books
        self.bars = bars

    @classmethod
    def build(
        cls,
        *,
        clock: Clock,
        ttl_ms: int,
        max_entries: int,
        redis_url: str,
        key_prefix: str,
        timeout_ms: int,
        on_breaker_change: Callable[[CircuitBreakerChanged], None],
    ) -> MarketCaches:
        l2 = (
            RedisL2.from_url(redis_url, prefix=key_prefix, timeout_s=timeout_ms / 1000)
            if redis_url
            else None
        )

        def l1() -> Any:
            return L1Cache(clock=clock, ttl_ms=ttl_ms, max_entries=max_entries)

        books: TieredCache[OrderBook] = TieredCache(
            clock=clock, l1=l1(), l2=l2, value_type=OrderBook, on_breaker_change=on_breaker_change
        )
        bars: TieredCache[CachedBars] = TieredCache(
            clock=clock,
            l1=l1(),
            l2=l2,
            value_type=CachedBars,
            on_breaker_change=on_breaker_change,
        )
        return cls(books, bars)

    async def order_book(
        self, symbol: str, load: Callable[[str], Awaitable[OrderBook | None]]
    ) -> OrderBook | None:
        """The symbol's book through the cache; ``load`` fetches a miss (None: no book)."""

        async def loader() -> OrderBook:
            book = await load(symbol)
            if book is None:
                raise SourceUnavailable(f"no order book for {symbol}")
            return book

        try:
            return await self.books.get_or_load(f"book:{symbol}", loader)
        except SourceUnavailable:
            return None

    def cached_book(self, symbol: str) -> OrderBook | None:
        return self.books.l1.peek(f"book:{symbol}")

    def stats(self) -> dict[str, dict[str, Any]]:
        """Hits and misses of the order-book and the market-data (bars) caches."""
        return {"books": self.books.stats(), "bars": self.bars.stats()}

    def health(self) -> dict[str, Any]:
        l2 = self.books.l2
        ok = l2 is None or all(c.breaker.state == "CLOSED" for c in (self.books, self.bars))
        return {"status": "ok" if ok else "degraded", "l2": "redis" if l2 is not None else "off"}

    async def close(self) -> None:
        if self.books.l2 is not None:
            await self.books.l2.close()
