"""systemd's notify protocol (``sd_notify``): READY, STATUS, STOPPING and the watchdog ping.

Only when systemd asks for it: ``NOTIFY_SOCKET`` names an AF_UNIX datagram socket (a path, or
``@name`` in the abstract namespace); ``WATCHDOG_USEC`` (with ``WATCHDOG_PID``, when set, naming
this process) asks for ``WATCHDOG=1`` at least that often. Without them every call is a no-op.
A notification is advisory: a failed send is logged and dropped, never raised, and never blocks
the event loop (the socket is non-blocking).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Mapping

import structlog

log = structlog.get_logger("quantumtrade.systemd")


class Notifier:
    """Datagrams to systemd's notify socket (``NOTIFY_SOCKET``); a no-op without one."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        """The socket as the environment names it (None or empty: not run by systemd)."""
        self.sent = 0
        self.failed = 0
        self._target: str | bytes | None = None
        self._sock: socket.socket | None = None
        if address:
            # "@name" is Linux's abstract namespace: a leading NUL byte instead of the "@".
            self._target = b"\0" + address[1:].encode() if address[0] == "@" else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        return cls((os.environ if environ is None else environ).get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *fields: str) -> bool:
        """One datagram of ``KEY=value`` fields (``READY=1``, ``STATUS=…``); False if not sent."""
        if self._sock is None or self._target is None:
            return False
        # A field is one line: a newline inside a STATUS text would start a bogus field.
        message = "\n".join(" ".join(f.splitlines()) for f in fields).encode()
        try:
            self._sock.sendto(message, self._target)
        except OSError as exc:  # gone, refused, or its queue full (BlockingIOError)
            self.failed += 1
            log.warning("systemd_notify_failed", error=str(exc), field=fields[0] if fields else "")
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float:
    """Seconds between ``WATCHDOG=1`` pings: half of ``WATCHDOG_USEC`` (as ``sd_watchdog_enabled``
    advises), or 0 when no watchdog is asked of this process (unset, not a positive number,
    or ``WATCHDOG_PID`` naming another process)."""
    env = os.environ if environ is None else environ
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return 0.0
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return 0.0
    return int(usec) / 2e6


async def watchdog(
    notifier: Notifier,
    interval_s: float,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Ping every ``interval_s`` until cancelled. The ping is sent by this task on the event
    loop, never by a thread: a loop blocked (or starved) for longer than ``WatchdogSec`` sends
    nothing, and systemd restarts the process."""
    while True:
        notifier.send("WATCHDOG=1")
        await sleep(interval_s)
