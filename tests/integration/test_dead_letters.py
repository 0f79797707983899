"""The admin API's dead letters (issue 14, item 7): listed with event, handler, error and
attempts; retried by id or all on the handler that failed; retries and handler statistics in
``/metrics``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from quantumtrade.bus import handler_name
from quantumtrade.events import Command
from tests.support.admin_daemon import AUTH, running_daemon


class Flaky:
    """A Command handler that fails while ``broken``."""

    def __init__(self) -> None:
        self.broken = True
        self.handled: list[str] = []

    def on_command(self, event: Command) -> None:
        if event.name != "flaky-test":
            return
        if self.broken:
            raise RuntimeError(f"cannot take {event.args.get('n')}")
        self.handled.append(str(event.args.get("n")))


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (fails the test if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    key = f"{name}{{{want}}}" if want else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{key} not in /metrics")


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as r:
        assert r.status == 200 and r.content_type == "application/json"
        return await r.json()


async def post_json(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with http.post(url, json=body, headers=AUTH if headers is None else headers) as r:
        assert r.content_type == "application/json", (r.status, await r.text())
        return r.status, await r.json()


async def test_dead_letters_listed_retried_by_id_and_all_and_counted(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, warmup_s=3) as (daemon, _):
        flaky = Flaky()
        daemon.bus.subscribe(Command, flaky.on_command)
        attempts = daemon.bus.config.max_attempts
        for n in range(3):
            await daemon.bus.publish(Command(ts_ns=1_000 + n, name="flaky-test", args={"n": n}))
        url = f"{daemon.admin.url}/api/trading/dead-letters"
        name = handler_name(flaky.on_command)
        stats_key = f"Command:{name}"
        async with aiohttp.ClientSession() as http:
            listed = await get_json(http, url)
            assert listed["count"] == 3
            letters = [d for d in listed["dead_letters"] if d["handler"] == name]
            assert len(letters) == 3
            first = letters[0]
            assert first["event_type"] == "Command"
            assert first["event"]["name"] == "flaky-test" and first["event"]["args"] == {"n": 0}
            assert first["error"] == "RuntimeError: cannot take 0"
            assert first["attempts"] == attempts
            assert first["time"].endswith("Z") and isinstance(first["ts_ns"], int)
            ids = [d["id"] for d in letters]

            # Still broken: kept, with one more attempt.
            status, answer = await post_json(http, url, {"id": ids[0]})
            assert status == 200
            assert answer["results"] == [
                {
                    "id": ids[0],
                    "outcome": "failed",
                    "attempts": attempts + 1,
                    "error": "RuntimeError: cannot take 0",
                }
            ]
            assert answer["remaining"] == 3

            flaky.broken = False
            status, answer = await post_json(http, url, {"id": ids[0]})
            assert status == 200 and answer["ok"] == 1 and answer["remaining"] == 2
            assert flaky.handled == ["0"]

            status, answer = await post_json(http, url, {"id": ids[0]})
            assert status == 404 and str(ids[0]) in answer["error"]

            status, answer = await post_json(http, url, {"all": True})
            assert status == 200
            assert [(r["id"], r["outcome"]) for r in answer["results"]] == [
                (ids[1], "ok"),
                (ids[2], "ok"),
            ]
            assert flaky.handled == ["0", "1", "2"]
            assert (await get_json(http, url)) == {"dead_letters": [], "count": 0}

            for n in range(64):  # past one in 64 Commands: each Command handler is timed once
                await daemon.bus.publish(Command(ts_ns=2_000 + n, name="noop"))
            async with http.get(f"{daemon.admin.url}/metrics") as r:
                text = await r.text()
            retries = "quantumtrade_event_bus_dead_letter_retries_total"
            assert metric(text, retries, outcome="ok") == 3
            assert metric(text, retries, outcome="failed") == 1
            errors = metric(text, "quantumtrade_event_bus_handler_errors_total", handler=stats_key)
            assert errors == 3 * attempts + 1
            # The sampled timings are the bus's own, for every handler (the daemon's too).
            stats = daemon.bus.handler_stats()
            timed = "quantumtrade_event_bus_handler_timed_calls_total"
            seconds = "quantumtrade_event_bus_handler_timed_seconds_total"
            for key, s in stats.items():
                assert metric(text, timed, handler=key) == s["calls_timed"]
                assert metric(text, seconds, handler=key) == s["seconds_timed"]
            assert stats[stats_key]["calls_timed"] >= 1


async def test_dead_letter_posts_refuse_bad_bodies_and_missing_tokens(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, warmup_s=3) as (daemon, _):
        flaky = Flaky()
        daemon.bus.subscribe(Command, flaky.on_command)
        await daemon.bus.publish(Command(ts_ns=1, name="flaky-test", args={"n": 0}))
        url = f"{daemon.admin.url}/api/trading/dead-letters"
        async with aiohttp.ClientSession() as http:
            for body in ({}, {"id": 1, "all": True}, {"id": "1"}, {"id": 0}, {"all": "yes"}):
                status, answer = await post_json(http, url, body)
                assert status == 400 and answer["error"], body
            status, answer = await post_json(http, url, {"id": 10**6})
            assert status == 404 and "10000" in answer["error"]
            status, answer = await post_json(http, url, {"all": True}, headers={})
            assert status == 401 and "Authorization" in answer["error"]
            bad = {"Authorization": "Bearer wrong"}
            status, answer = await post_json(http, url, {"all": True}, headers=bad)
            assert status == 401
            # Nothing was retried by the refused requests.
            assert (await get_json(http, url))["dead_letters"][0]["attempts"] == (
                daemon.bus.config.max_attempts
            )
            assert daemon.bus.dead_letter_retries == {"ok": 0, "failed": 0}
            # Negative control: the same letter with a token is retried.
            status, answer = await post_json(http, url, {"all": True})
            assert status == 200 and answer["failed"] == 1
