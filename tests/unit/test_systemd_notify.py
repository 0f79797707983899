"""systemd's notify protocol over real AF_UNIX datagram sockets, and the watchdog's one rule:
pings come from the event loop, so a blocked loop sends none."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from quantumtrade.systemd import Notifier, watchdog, watchdog_interval


def receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
    return sock


def drain(sock: socket.socket) -> list[str]:
    """Every datagram waiting, without waiting for more."""
    got: list[str] = []
    sock.setblocking(False)
    try:
        while True:
            got.append(sock.recv(4096).decode())
    except BlockingIOError:
        return got


@pytest.fixture
def abstract() -> Iterator[tuple[str, socket.socket]]:
    address = f"@quantumtrade-test-{uuid.uuid4().hex}"
    sock = receiver(address)
    yield address, sock
    sock.close()


def test_send_to_a_path_socket(tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    sock = receiver(address)
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
    try:
        assert notifier.enabled
        assert notifier.send("READY=1", "STATUS=trading\n(paper)")
        assert sock.recv(4096) == b"READY=1\nSTATUS=trading (paper)"
    finally:
        notifier.close()
        sock.close()


def test_send_to_an_abstract_socket(abstract: tuple[str, socket.socket]) -> None:
    address, sock = abstract
    notifier = Notifier(address)
    try:
        assert notifier.send("STOPPING=1")
        assert sock.recv(4096) == b"STOPPING=1"
    finally:
        notifier.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert not notifier.send("READY=1")
    assert notifier.sent == 0


def test_a_gone_socket_is_a_failed_send_not_an_error(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "nobody-listens"))
    try:
        assert not notifier.send("READY=1")
        assert notifier.failed == 1
    finally:
        notifier.close()


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only() -> None:
    pid = os.getpid()
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, pid) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(pid)}, pid) == 15.0
    # Another process's watchdog (a parent that forked us), or none asked for: no pings.
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid) == 0.0
    assert watchdog_interval({}, pid) == 0.0
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, pid) == 0.0
    assert watchdog_interval({"WATCHDOG_USEC": "-5"}, pid) == 0.0
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, pid) == 0.0


async def test_watchdog_pings_once_per_interval_asked_for(
    abstract: tuple[str, socket.socket],
) -> None:
    address, sock = abstract
    notifier = Notifier(address)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # an injected clock: stops after three waits
        slept.append(seconds)
        if len(slept) == 3:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await watchdog(notifier, 7.5, sleep=sleep)
    notifier.close()
    assert slept == [7.5, 7.5, 7.5]
    assert drain(sock) == ["WATCHDOG=1"] * 3


async def test_a_blocked_loop_sends_no_ping(abstract: tuple[str, socket.socket]) -> None:
    """The point of pinging from the loop: while it is blocked, systemd hears nothing."""
    address, sock = abstract
    notifier = Notifier(address)
    interval = 0.01
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(watchdog(notifier, interval))
        while len(drain(sock)) < 1:  # running: it pings
            await asyncio.sleep(interval)
        drain(sock)
        time.sleep(20 * interval)  # on purpose: the loop is blocked, no task runs
        during = drain(sock)
        while not drain(sock):  # unblocked: it pings again
            await asyncio.sleep(interval)
        task.cancel()
    notifier.close()
    assert during == []


async def test_negative_control_a_thread_pinger_pings_through_a_blocked_loop(
    abstract: tuple[str, socket.socket],
) -> None:
    """The wrong design: pinging from a thread hides a hung loop from systemd. The same check
    as above sees its pings, so the check can fail."""
    address, sock = abstract
    notifier = Notifier(address)
    stop = threading.Event()
    pinged = threading.Event()

    def pinger() -> None:
        while not stop.is_set():
            notifier.send("WATCHDOG=1")
            pinged.set()
            stop.wait(0.01)

    thread = threading.Thread(target=pinger)
    thread.start()
    try:
        pinged.wait(10)
        drain(sock)
        pinged.clear()
        assert pinged.wait(10)  # the loop is blocked here, in this wait
        during = drain(sock)
    finally:
        stop.set()
        thread.join()
        notifier.close()
    assert during != []
