"""A TCP proxy in front of the shared PostgreSQL that a test can cut and restore.

Cutting it aborts every open connection and refuses new ones (accepted, then reset), which is
what the daemon sees of a database outage, without stopping the server other tests use.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress


class PgProxy:
    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5432) -> None:
        self.target = (target_host, target_port)
        self.up = True
        self.hung = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()

    async def __aenter__(self) -> PgProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def url(self, base: str) -> str:
        """``base`` (a postgresql:// URL on the target) with host and port replaced by ours."""
        scheme, rest = base.split("://", 1)
        userinfo, _, path = rest.partition("@")
        if not path:
            userinfo, path = "", userinfo
        path = path.split("/", 1)[1] if "/" in path else ""
        auth = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/{path}"

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until ``restore``."""
        self.up = False
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    def restore(self) -> None:
        self.up = True
        self.hung = False

    def hang(self) -> None:
        """Keep every connection open but forward nothing more, and accept new ones without
        answering: a server that drops packets instead of refusing them."""
        self.hung = True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        if self.hung:
            self._transports.add(writer.transport)
            with suppress(OSError, ConnectionError):
                while await reader.read(65536):
                    pass  # swallowed: nothing reaches the server, nothing comes back
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer.transport, up_writer.transport)
        self._transports.update(pair)
        try:
            await asyncio.gather(_pipe(reader, up_writer, self), _pipe(up_reader, writer, self))
        finally:
            for transport in pair:
                transport.abort()
                self._transports.discard(transport)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, proxy: PgProxy) -> None:
    with suppress(OSError, ConnectionError):
        while data := await reader.read(65536):
            if proxy.hung:
                continue  # dropped
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
