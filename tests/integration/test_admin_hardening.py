"""The admin API's answers to hostile requests (issue 15, item 2): every refusal a JSON 4xx,
never a 500, nothing executed from a body that is not JSON, and half-sent requests closed."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from quantumtrade.admin.server import (
    IDLE_TIMEOUT_S,
    MAX_BODY_BYTES,
    MAX_LINE_BYTES,
    MAX_NESTING,
    OPENAPI,
    AdminServer,
)
from quantumtrade.app import Daemon
from tests.support.admin_daemon import AUTH, json_error, raw_exchange, running_daemon

JSON = {"Content-Type": "application/json"}


def order_body(**fields: Any) -> dict[str, Any]:
    order = {"symbol": "ETHUSDT", "side": "BUY", "quantity": 0.01, "orderType": "MARKET"}
    return {"action": "route", "orderRequest": order | fields}


async def post(
    http: aiohttp.ClientSession, url: str, data: bytes, headers: dict[str, str]
) -> tuple[int, str]:
    """POST ``data`` as is; (status, error message), asserting the answer is a JSON error."""
    async with http.post(url, data=data, headers=AUTH | headers) as r:
        assert r.content_type == "application/json", (r.status, await r.text())
        return r.status, (await r.json())["error"]


def orders(daemon: Daemon) -> int:
    return sum(v["orders"] for v in daemon.router.metrics()["venues"].values())


async def test_numbers_out_of_range_are_400_naming_the_field(tmp_path: Path) -> None:
    async with running_daemon(tmp_path) as (daemon, _):
        url = f"{daemon.admin.url}/api/trading/order-router"
        before = orders(daemon)
        huge = "1" + "0" * 400  # float() of it overflows
        endless = "7" * 5_000  # past int()'s 4,300-digit limit
        cases = [
            (order_body(quantity="HUGE"), huge, "orderRequest.quantity"),
            (order_body(quantity="HUGE"), endless, "orderRequest.quantity"),
            (order_body(quantity="HUGE"), "-" + huge, "orderRequest.quantity"),
            (order_body(quantity="HUGE"), "1e999", "orderRequest.quantity"),
            (order_body(quantity=1e13), None, "orderRequest.quantity"),
            (order_body(orderType="LIMIT", price="HUGE"), huge, "orderRequest.price"),
            (order_body(orderType="LIMIT", price="HUGE"), endless, "orderRequest.price"),
            (order_body(orderType="LIMIT"), None, "orderRequest.price"),
        ]
        async with aiohttp.ClientSession() as http:
            for body, literal, field in cases:
                text = json.dumps(body)
                if literal is not None:
                    text = text.replace('"HUGE"', literal)
                status, error = await post(http, url, text.encode(), JSON)
                assert status == 400 and field in error, (literal and literal[:20], error)
            status, error = await post(http, url, b'{"action": NaN}', JSON)
            assert status == 400 and "NaN" in error
            # Negative control: the same path with a sane quantity does trade.
            status_ok = 0
            async with http.post(url, json=order_body(), headers=AUTH) as r:
                status_ok = r.status
            assert status_ok == 200
        assert orders(daemon) == before + 1


async def test_deep_nesting_is_a_json_4xx(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, warmup_s=5) as (daemon, _):
        url = f"{daemon.admin.url}/api/trading/risk/state"
        async with aiohttp.ClientSession() as http:
            for depth, expected in [
                (100_000, 413),  # the body: over MAX_BODY_BYTES before any parsing
                (30_000, 400),  # fits, and is deeper than the interpreter's recursion limit
                (MAX_NESTING + 1, 400),
            ]:
                body = b'{"state": ' + b"[" * depth + b"]" * depth + b"}"
                status, error = await post(http, url, body, JSON)
                assert status == expected, (depth, error)
            status, error = await post(http, url, b"[" * MAX_NESTING + b"]" * MAX_NESTING, JSON)
            assert status == 400 and "object" in error  # MAX_NESTING itself parses
        assert str(daemon.risk.state) == "ACTIVE"


async def test_content_type_and_charset_are_checked_before_anything_runs(
    tmp_path: Path,
) -> None:
    async with running_daemon(tmp_path) as (daemon, _):
        url = f"{daemon.admin.url}/api/trading/order-router"
        body = json.dumps(order_body()).encode()
        before = orders(daemon)
        async with aiohttp.ClientSession() as http:
            for headers, status in [
                ({"Content-Type": "text/plain"}, 415),
                ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
                ({}, 415),  # aiohttp sends bytes as application/octet-stream
                ({"Content-Type": "application/json; charset=foo"}, 415),
                ({"Content-Type": "application/json; charset=latin-1"}, 415),
            ]:
                got, error = await post(http, url, body, headers)
                assert got == status, (headers, error)
            assert orders(daemon) == before, "an order ran from a body that was not JSON"
            got, error = await post(http, url, b"{\xff}", JSON)
            assert got == 400, error
            # Negative control: the same bytes as application/json (with utf-8 said) trade.
            ok = {"Content-Type": "application/json; charset=UTF-8"}
            async with http.post(url, data=body, headers=AUTH | ok) as r:
                assert r.status == 200, await r.text()
        assert orders(daemon) == before + 1


async def test_body_over_the_limit_is_413_json(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, warmup_s=5) as (daemon, _):
        url = f"{daemon.admin.url}/api/trading/data-orchestrator"
        big = json.dumps({"action": "start-flow", "symbols": ["X" * MAX_BODY_BYTES]}).encode()
        async with aiohttp.ClientSession() as http:
            status, error = await post(http, url, big, JSON)
        assert status == 413 and str(MAX_BODY_BYTES) in error


async def test_oversized_request_line_and_header_get_a_json_400(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, warmup_s=5) as (daemon, _):
        host, port = daemon.admin.host, daemon.admin.bound_port
        assert port is not None
        long = "A" * (MAX_LINE_BYTES + 10)
        for request in [
            f"GET /health?x={long} HTTP/1.1\r\nHost: x\r\n\r\n",
            f"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: {long}\r\n\r\n",
            "NOT HTTP AT ALL\r\n\r\n",
        ]:
            status, headers, body = await raw_exchange(host, port, request.encode())
            assert status == 400, (request[:40], body[:200])
            assert json_error(headers, body)
        # The connection handler still serves ordinary requests.
        ok = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        status, headers, body = await raw_exchange(host, port, ok)
        assert status == 200 and json.loads(body)["status"] in ("ok", "degraded")


async def test_half_sent_requests_are_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    """The issue's case scaled down: connections that stop mid-headers or mid-body are closed
    by the server (the default timeout, with a generous bound), and it still answers."""
    assert IDLE_TIMEOUT_S <= 15.0
    async with running_daemon(tmp_path, warmup_s=5) as (daemon, _):
        host, port = daemon.admin.host, daemon.admin.bound_port
        assert port is not None
        streams = []
        for i in range(200):
            reader, writer = await asyncio.open_connection(host, port)
            if i % 2:  # request line and part of the headers
                writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            else:  # whole headers, a tenth of the body
                writer.write(
                    b"POST /api/trading/risk/state HTTP/1.1\r\nHost: x\r\n"
                    b"Authorization: Bearer test-token\r\nContent-Type: application/json\r\n"
                    b'Content-Length: 100\r\n\r\n{"state":'
                )
            await writer.drain()
            streams.append((reader, writer))
        started = time.monotonic()
        try:
            async with asyncio.timeout(IDLE_TIMEOUT_S + 15.0):
                answers = await asyncio.gather(*(reader.read() for reader, _ in streams))
        finally:
            for _, writer in streams:
                writer.close()
        assert time.monotonic() - started >= IDLE_TIMEOUT_S * 0.5  # not closed at once
        # Half-sent headers: closed without an answer. Half-sent body: a JSON 408.
        assert all(a == b"" for a in answers[1::2])
        for answer in answers[::2]:
            assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
            assert b"application/json" in answer
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{daemon.admin.url}/health") as r:
                assert r.status == 200


async def test_openapi_lists_every_route() -> None:
    """The fuzz test drives the operations the document lists, so it must list them all."""
    app = AdminServer.make_app(object.__new__(AdminServer))  # routes only; no handler runs
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    documented = {(m, p) for p, ops in OPENAPI["paths"].items() for m in ops}
    assert routes == documented
