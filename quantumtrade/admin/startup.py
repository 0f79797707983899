"""The admin port while the daemon starts: ``GET /health`` answers 503 ``starting`` and the phase.

``run`` binds the admin port before anything slow (opening the event log and the exchanges,
compiling the numba kernels), so a load balancer or an operator gets an answer from the first
second. When trading starts, ``AdminServer.start(listen=startup.hand_over)`` takes over the very
same listening sockets, so the port is never closed in between; every start-up answer closes
its connection, so no client stays on this handler afterwards.

503 while starting, as for "stopping": a load balancer or a readiness check must not send
traffic to a daemon that does not trade yet; the body says why and how far start-up has got.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

STARTING_STATUS = 503
IDLE_TIMEOUT_S = 10.0
"""A connection that sends no request for this long is closed (as the admin API does)."""


class StartupListener:
    """Answers on ``[admin] host:port`` until the admin API takes the listener over."""

    def __init__(self, *, host: str, port: int, mode: str) -> None:
        self.host = host
        self.port = port
        self.mode = mode
        self.phase = "binding"
        self.detail = ""
        self.bound_port: int | None = None
        self._t0 = time.monotonic()
        self._web: web.Server | None = None
        self._listener: asyncio.Server | None = None
        self._factory: Callable[[], asyncio.BaseProtocol] | None = None

    def set_phase(self, phase: str, detail: str = "") -> None:
        self.phase, self.detail = phase, detail

    def health(self) -> dict[str, Any]:
        return {
            "status": "starting",
            "phase": self.phase,
            "detail": self.detail,
            "mode": self.mode,
            "starting_s": round(time.monotonic() - self._t0, 3),
        }

    async def start(self) -> None:
        """Bind ``host:port`` (an ``OSError`` if it cannot be: the same errors as the admin
        API's, which the command line turns into its exit codes)."""
        self._web = web.Server(self._handle, keepalive_timeout=IDLE_TIMEOUT_S, access_log=None)
        self._factory = self._web
        loop = asyncio.get_running_loop()
        # The factory is looked up per connection, so that ``hand_over`` can swap it.
        self._listener = await loop.create_server(self._protocol, self.host, self.port)
        sockets = self._listener.sockets
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.port

    def _protocol(self) -> asyncio.BaseProtocol:
        assert self._factory is not None  # set before the listener exists
        return self._factory()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/health" and request.method in ("GET", "HEAD"):
            body = self.health()
        else:
            body = {"error": f"starting ({self.phase}): only GET /health answers until trading"}
        response = web.json_response(body, status=STARTING_STATUS, headers={"Retry-After": "1"})
        response.force_close()
        return response

    async def hand_over(self, factory: Callable[[], asyncio.BaseProtocol]) -> asyncio.Server:
        """New connections get ``factory``'s protocol (the admin API's); the listener is the
        caller's from now on. Start-up connections still open are closed."""
        listener, self._listener = self._listener, None
        if listener is None:
            raise RuntimeError("the start-up listener is not listening")
        self._factory = factory
        await self._close_connections()
        return listener

    async def stop(self) -> None:
        """Close the listener unless it was handed over, and any start-up connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        await self._close_connections()
        if listener is not None:
            await listener.wait_closed()

    async def _close_connections(self) -> None:
        if self._web is not None:
            await self._web.shutdown(timeout=1.0)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.bound_port or self.port}"
