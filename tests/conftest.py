"""Shared test setup: every async test runs on uvloop, as the daemon does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import uvloop


def pytest_asyncio_loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"uvloop": uvloop.new_event_loop}


# --- real services ------------------------------------------------------------------------
import os  # noqa: E402
import socket  # noqa: E402
import uuid  # noqa: E402
from collections.abc import AsyncIterator  # noqa: E402

import pytest  # noqa: E402

PG_URL = os.environ.get("QT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("QT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a service is down, except under CI=true, where a missing service fails."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port} (start it with scripts/services.sh)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
async def pg_schema() -> AsyncIterator[tuple[str, str]]:
    """(url, schema): a fresh schema in the real PostgreSQL, dropped after the test."""
    import asyncpg

    require_service("PostgreSQL", "127.0.0.1", 5432)
    schema = f"qt_test_{uuid.uuid4().hex[:12]}"
    yield PG_URL, schema
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[tuple[str, str]]:
    """(url, key prefix) in the real Redis; the test's keys are deleted afterwards."""
    import redis.asyncio as redis

    require_service("Redis", "127.0.0.1", 6379)
    prefix = f"qt-test-{uuid.uuid4().hex[:12]}:"
    yield REDIS_URL, prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
