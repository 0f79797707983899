"""The daemon as an operator runs it: a real process, real signals, real exit codes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
STARTUP_LIMIT_S = 120  # first start compiles numba kernels on a busy 2-core machine
STOP_LIMIT_S = 15  # the daemon's own budget is 5 s; this only bounds a hung test


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update(
        {
            "QT_DATABASE__SQLITE_PATH": str(tmp_path / "events.sqlite"),
            "QT_ADMIN__PORT": "0",
            "QT_SYSTEM__LOG_FORMAT": "json",
            "QT_DATA__ORCHESTRATOR__UPDATE_INTERVAL_MS": "100",
        }
        | extra
    )
    return env


async def start(tmp_path: Path, *args: str, **extra: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "quantumtrade",
        "run",
        *args,
        cwd=tmp_path,
        env=env_for(tmp_path, **extra),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    async with asyncio.timeout(STARTUP_LIMIT_S):
        while True:
            line = (await proc.stderr.readline()).decode()
            assert line, f"daemon exited before it was ready (code {await proc.wait()})"
            found = re.search(r"admin API on (http://\S+)", line)
            if found:
                return proc, found.group(1)


async def test_run_serves_health_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc, base = await start(tmp_path, "--config", str(ROOT / "quantumtrade.toml"))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/health") as r:
                assert r.status == 200
                health = await r.json()
            assert health["status"] in ("ok", "degraded")
            assert health["mode"] == "paper"
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
            assert "quantumtrade_system_health" in text
            assert "quantumtrade_event_bus_events_total" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STOP_LIMIT_S):
            code = await proc.wait()
    assert code == 0
    db = sqlite3.connect(tmp_path / "events.sqlite")
    seqs = [row[0] for row in db.execute("SELECT seq FROM events ORDER BY seq")]
    db.close()
    assert seqs and seqs == list(range(1, len(seqs) + 1))


async def test_sigint_also_stops_cleanly(tmp_path: Path) -> None:
    proc, _ = await start(tmp_path)
    proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(STOP_LIMIT_S):
        assert await proc.wait() == 0


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "quantumtrade",
        *args,
        env=env or dict(os.environ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_check_config_accepts_the_example_and_names_bad_keys(tmp_path: Path) -> None:
    code, out, _ = await run_cli("check-config", str(ROOT / "quantumtrade.toml"))
    assert code == 0 and "OK" in out

    bad = tmp_path / "bad.toml"
    bad.write_text("[data]\nmax_wrokers = 4\n")
    code, _, err = await run_cli("check-config", str(bad))
    assert code == 2
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert str(bad) in err and "data.max_wrokers" in err and "unknown key" in err


async def test_run_with_invalid_config_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[admin]\nport = -5\n")
    code, _, err = await run_cli("run", "--config", str(bad))
    assert code == 2 and "Traceback" not in err
    assert f"{bad}: admin.port:" in err

    env = dict(os.environ, QT_ADMIN__PORT="not-a-port")
    code, _, err = await run_cli("run", "--config", str(ROOT / "quantumtrade.toml"), env=env)
    assert code == 2 and "QT_ADMIN__PORT" in err and "Traceback" not in err


async def test_bad_cli_usage_is_an_error_not_a_traceback() -> None:
    code, _, err = await run_cli("launch-rockets")
    assert code == 2 and "usage:" in err and "Traceback" not in err
    code, _, err = await run_cli("run", "--config")
    assert code == 2 and "Traceback" not in err


async def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    try:
        env = env_for(tmp_path, QT_ADMIN__PORT=str(port))
        code, _, err = await run_cli("run", env=env)
    finally:
        blocker.close()
        await blocker.wait_closed()
    assert code == 1 and "cannot start" in err and "Traceback" not in err


async def test_regime_detect_and_evaluate_commands(tmp_path: Path) -> None:
    csv = tmp_path / "candles.csv"
    rows = ["timestamp,open,high,low,close,volume"]
    price = 100.0
    for i in range(400):
        price *= 1.002 if (i // 100) % 2 == 0 else 0.999
        rows.append(
            f"{1_600_000_000_000 + i * 60_000},{price},{price * 1.003},"
            f"{price * 0.997},{price},{1000 + i % 7}"
        )
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "regimes.csv"
    code, stdout, err = await run_cli("regime", "detect", "--input", str(csv), "--output", str(out))
    assert code == 0, err
    lines = out.read_text().splitlines()
    assert lines[0] == "timestamp,regime,confidence" and len(lines) == 401
    labelled = [line.split(",") for line in lines[1:] if line.split(",")[1]]
    assert labelled and {r[1] for r in labelled} <= {"TRENDING", "RANGING", "VOLATILE", "BREAKOUT"}
    assert all(0.0 <= float(r[2]) <= 1.0 for r in labelled)

    code, _, err = await run_cli(
        "regime", "detect", "--input", str(tmp_path / "missing.csv"), "--output", str(out)
    )
    assert code == 1 and "Traceback" not in err

    code, stdout, err = await run_cli(
        "regime", "evaluate", "--seeds", "7", "--symbols", "10", "--bars", "600"
    )
    assert code == 0, err
    assert "accuracy" in stdout and "switch precision" in stdout
    code, _, err = await run_cli("regime", "evaluate", "--seeds", "x")
    assert code == 2 and "Traceback" not in err
