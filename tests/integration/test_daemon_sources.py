"""The daemon end to end on its other sources: real candle files, and ccxt against a loopback
Binance server (paper fills on the exchange's book)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from quantumtrade.app import Daemon
from quantumtrade.clock import ManualClock
from quantumtrade.config import load_config
from quantumtrade.data.datadir import data_dir, missing_data_reason
from quantumtrade.data.synthetic import SyntheticConfig, SyntheticSource
from quantumtrade.errors import ConfigError
from tests.integration.test_paper_session import START_NS, run_session, session_config
from tests.support.loopback_binance import LoopbackBinance, markets_from_source


def _need_data(path: Path) -> None:
    reason = missing_data_reason(path)
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)


async def test_paper_session_on_real_candles(tmp_path: Path) -> None:
    _need_data(data_dir() / "candles" / "binance-spot-1h-2021")
    cfg = session_config(
        tmp_path,
        QT_DATA__SOURCE="replay",
        QT_DATA__REPLAY__PATH="candles/binance-spot-1h-2021",
        QT_DATA__SYMBOLS="BTCUSDT,ETHUSDT,SOLUSDT,DOGEUSDT",
        QT_SCANNER__MIN_ABS_SCORE="0.01",
        # The whole history arrives at once, so one decision: the trend rule on the scan's
        # top 3, both sides, is sure to enter.
        QT_STRATEGY__NAME="trend",
        QT_STRATEGY__ALLOW_SHORT="true",
    )
    daemon, fills, signals = await run_session(cfg, seconds=3)
    # speed 0: the whole history is available at the first fetch (history_bars each).
    assert daemon.state.length("BTCUSDT") == cfg.data.replay.history_bars
    assert daemon.orchestrator.metrics()["rejects"] == {} or all(
        v == 0 for v in daemon.orchestrator.metrics()["rejects"].values()
    )
    assert signals and fills


async def test_paper_session_on_ccxt_loopback(tmp_path: Path) -> None:
    clock = ManualClock(START_NS)
    synthetic = SyntheticSource(SyntheticConfig(seed=3, symbols=4, bar_ms=60_000), clock)
    symbols = synthetic.symbols()
    markets = await markets_from_source(synthetic, symbols, START_NS // 1_000_000)
    async with LoopbackBinance(markets, now_ms=lambda: START_NS // 1_000_000) as server:
        cfg = session_config(
            tmp_path,
            QT_DATA__SOURCE="ccxt",
            QT_DATA__CCXT__API_URL=server.base_url,
            # ccxt's rate limiter would cap this loopback test at ~48 requests/s.
            QT_DATA__CCXT__ENABLE_RATE_LIMIT="false",
            QT_DATA__CCXT__HISTORY_BARS="200",
            QT_DATA__SYMBOLS=",".join(symbols),
            QT_SCANNER__MIN_ABS_SCORE="0.01",
        )
        daemon, fills, _ = await run_session(cfg, seconds=3)
        assert server.requests["/api/v3/klines"] >= len(symbols)
        assert server.requests["/api/v3/depth"] >= 1
    assert all(daemon.state.length(s) > 0 for s in symbols)
    assert fills, "no paper fill against the exchange's book"


async def test_unknown_symbol_for_source_is_a_config_error(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        environ={
            "QT_DATA__SYMBOLS": "BTCUSDT,NOTACOIN",
            "QT_DATABASE__SQLITE_PATH": str(tmp_path / "e.sqlite"),
        },
    )
    with pytest.raises(ConfigError) as info:
        await Daemon.create(cfg, clock=ManualClock(START_NS))
    assert info.value.key == "data.symbols" and "NOTACOIN" in info.value.reason
