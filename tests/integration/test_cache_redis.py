"""The tiered cache against real Redis servers, including an outage and its recovery."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from quantumtrade.cache.l1 import L1Cache
from quantumtrade.cache.tiered import RedisL2, TieredCache
from quantumtrade.clock import ManualClock
from quantumtrade.data.source import OrderBook
from quantumtrade.events import BreakerState, CircuitBreakerChanged

BOOK = OrderBook(
    symbol="BTCUSDT", ts_ms=1, bids=((100.0, 1.0), (99.5, 2.0)), asks=((100.5, 1.5), (101.0, 3.0))
)


def make_cache(clock: ManualClock, l2: RedisL2 | None, **kw) -> TieredCache[OrderBook]:  # type: ignore[no-untyped-def]
    return TieredCache(
        clock=clock,
        l1=L1Cache(clock=clock, ttl_ms=60_000, max_entries=1_000),
        l2=l2,
        value_type=OrderBook,
        **kw,
    )


async def test_l2_serves_what_another_process_loaded(redis_prefix: tuple[str, str]) -> None:
    url, prefix = redis_prefix
    clock = ManualClock()
    loads = 0

    async def loader() -> OrderBook:
        nonlocal loads
        loads += 1
        return BOOK

    first = make_cache(clock, RedisL2.from_url(url, prefix=prefix))
    assert await first.get_or_load("book:BTCUSDT", loader) == BOOK
    assert await first.get_or_load("book:BTCUSDT", loader) == BOOK  # L1 hit
    # A fresh cache (a restarted daemon): empty L1, the value comes from Redis.
    second = make_cache(clock, RedisL2.from_url(url, prefix=prefix))
    assert await second.get_or_load("book:BTCUSDT", loader) == BOOK
    assert loads == 1
    assert second.stats()["l2"]["hits"] == 1
    assert first.stats()["l1"]["hits"] == 1
    for c in (first, second):
        assert c.l2 is not None
        await c.l2.close()


async def test_concurrent_misses_make_one_load(redis_prefix: tuple[str, str]) -> None:
    url, prefix = redis_prefix
    cache = make_cache(ManualClock(), RedisL2.from_url(url, prefix=prefix))
    loads = 0

    async def slow_loader() -> OrderBook:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.01)
        return BOOK

    results = await asyncio.gather(*[cache.get_or_load("k", slow_loader) for _ in range(50)])
    assert results == [BOOK] * 50 and loads == 1
    assert cache.l2 is not None
    await cache.l2.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnRedis:
    """A private redis-server this test can stop and start without touching the shared one."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("redis-server exited at start") from None
                subprocess.run(["sleep", "0.02"], check=True)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        import os

        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server is not installed (scripts/services.sh installs it)")
        pytest.skip("redis-server is not installed (scripts/services.sh installs it)")
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_outage_degrades_to_l1_and_recovers_by_itself(own_redis: OwnRedis) -> None:
    clock = ManualClock()
    changes: list[CircuitBreakerChanged] = []
    l2 = RedisL2.from_url(f"redis://127.0.0.1:{own_redis.port}/0", prefix="t:")
    cache = make_cache(clock, l2, on_breaker_change=changes.append)
    loads = 0

    async def loader() -> OrderBook:
        nonlocal loads
        loads += 1
        return BOOK

    await cache.get_or_load("warm", loader)
    assert cache.stats()["l2"]["errors"] == 0

    own_redis.stop()
    # Every key still answers: from the loader, with Redis failing underneath.
    for i in range(10):
        assert await cache.get_or_load(f"k{i}", loader) == BOOK
    assert await cache.get_or_load("warm", loader) == BOOK  # L1 still serves
    assert cache.breaker.state is BreakerState.OPEN
    errors_when_opened = cache.l2_errors
    assert errors_when_opened >= 3
    for i in range(10, 20):
        await cache.get_or_load(f"k{i}", loader)
    assert cache.l2_errors == errors_when_opened  # open breaker: Redis is left alone

    own_redis.start()
    clock.advance(cache.breaker.config.cooldown_ms / 1000 + 0.001)
    await cache.get_or_load("after", loader)
    assert cache.breaker.state is BreakerState.CLOSED
    assert [c.state for c in changes][-1] is BreakerState.CLOSED
    fresh = make_cache(
        clock, RedisL2.from_url(f"redis://127.0.0.1:{own_redis.port}/0", prefix="t:")
    )
    before = loads
    assert await fresh.get_or_load("after", loader) == BOOK
    assert loads == before  # written to the restarted Redis, read back from it
    await l2.close()
    assert fresh.l2 is not None
    await fresh.l2.close()
