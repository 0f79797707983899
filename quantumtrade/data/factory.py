"""Build the configured market-data source and pick the symbols the daemon trades."""

from __future__ import annotations

import os

import msgspec

from quantumtrade.clock import Clock
from quantumtrade.config import AppConfig, SourceKind
from quantumtrade.credentials import Secrets
from quantumtrade.data.ccxt_source import CcxtSource
from quantumtrade.data.replay_source import ReplaySource
from quantumtrade.data.source import Source
from quantumtrade.data.synthetic import REAL_SYMBOLS, SyntheticSource
from quantumtrade.errors import ConfigError


async def build_source(cfg: AppConfig, clock: Clock) -> Source:
    """The configured market-data source, ready to fetch (ccxt markets loaded)."""
    data = cfg.data
    listed = data.symbols if isinstance(data.symbols, list) else []
    if data.source is SourceKind.REPLAY:
        try:
            return ReplaySource(data.replay, clock)
        except (OSError, ValueError) as exc:
            # Missing path, no candle files, a binary or header-only file: only the operator
            # can fix these, so they stop the start as configuration errors (exit 2).
            raise ConfigError("configuration", "data.replay.path", str(exc)) from None
    if data.source is SourceKind.CCXT:
        ccxt_cfg = data.ccxt
        if listed and not ccxt_cfg.symbols:
            ccxt_cfg = msgspec.structs.replace(ccxt_cfg, symbols=listed)
        secrets = Secrets.from_env(os.environ)
        ccxt_source = CcxtSource(ccxt_cfg, credentials=secrets.get(ccxt_cfg.exchange), clock=clock)
        try:
            await ccxt_source.start()
        except BaseException:
            await ccxt_source.close()
            raise
        return ccxt_source
    count = data.symbols if isinstance(data.symbols, int) else 0
    if listed:
        # Enough synthetic symbols to cover every listed name (BTCUSDT, …, SYN0042USDT).
        count = max(len(listed), *(_synthetic_index(s) + 1 for s in listed))
    return SyntheticSource(msgspec.structs.replace(data.synthetic, symbols=count), clock)


def _synthetic_index(symbol: str) -> int:
    if symbol in REAL_SYMBOLS:
        return REAL_SYMBOLS.index(symbol)
    if symbol.startswith("SYN") and symbol.endswith("USDT") and symbol[3:-4].isdigit():
        return int(symbol[3:-4]) - 1
    raise ConfigError(
        "configuration",
        "data.symbols",
        f"{symbol} is not a synthetic symbol (BTCUSDT, SYN0042USDT)",
    )


def active_symbols(cfg: AppConfig, source: Source) -> list[str]:
    """The configured list when there is one (each must be served), else all of the source's."""
    available = source.symbols()
    if isinstance(cfg.data.symbols, list):
        missing = [s for s in cfg.data.symbols if s not in set(available)]
        if missing:
            raise ConfigError(
                "configuration",
                "data.symbols",
                f"not served by the {source.name} source: {', '.join(missing[:5])}",
            )
        return list(cfg.data.symbols)
    if cfg.data.source is SourceKind.SYNTHETIC:
        return available
    return available[: cfg.data.symbols] if cfg.data.symbols < len(available) else available
