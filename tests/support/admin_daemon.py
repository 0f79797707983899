"""A paper daemon running in process with its admin API on a free port, and a raw HTTP client
for requests aiohttp's client will not send (half-sent, oversized, wrong framing)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from quantumtrade.app import Daemon
from quantumtrade.clock import ManualClock
from tests.integration.test_paper_session import START_NS, session_config

TOKEN = "test-token"  # session_config's QT_ADMIN__TOKEN
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@asynccontextmanager
async def running_daemon(
    tmp_path: Path, *, warmup_s: int = 60, **env: str
) -> AsyncIterator[tuple[Daemon, ManualClock]]:
    """A started paper daemon after ``warmup_s`` simulated seconds of heartbeats."""
    clock = ManualClock(START_NS)
    daemon = await Daemon.create(session_config(tmp_path, **env), clock=clock)
    async with asyncio.TaskGroup() as tg:
        await daemon.start(tg)
        try:
            for _ in range(warmup_s):
                clock.advance(1.0)
                await daemon.step()
            await daemon.bus.drain()
            yield daemon, clock
        finally:
            await daemon.stop()


async def raw_exchange(
    host: str, port: int, data: bytes, *, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as is, read until the server closes; (status, lower-cased headers, body)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def json_error(headers: dict[str, str], body: bytes) -> Any:
    """The ``error`` of a JSON error answer (fails the test if it is not one)."""
    assert headers.get("content-type", "").startswith("application/json"), headers
    return json.loads(body)["error"]
