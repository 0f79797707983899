"""Which logged fills a starting session restores, and what its marker says."""

from __future__ import annotations

import msgspec
import pytest
from structlog.testing import capture_logs

from quantumtrade.config import AppConfig, Mode, load_config
from quantumtrade.events import Command, Event, OrderFilled, Side
from quantumtrade.store.session import (
    SESSION_STARTED,
    Account,
    SessionMarker,
    marker_of,
    market_of,
    plan_session,
)

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def config(**env: str) -> AppConfig:
    return load_config(None, environ={"QT_DATA__SYMBOLS": ",".join(SYMBOLS), **env})


def fill(seq: int, symbol: str = "BTCUSDT") -> OrderFilled:
    return OrderFilled(
        ts_ns=seq,
        seq=seq,
        client_order_id=f"qt-{seq}",
        venue="paper",
        symbol=symbol,
        side=Side.BUY,
        quantity=1.0,
        price=68_000.0,
        fee=1.0,
        cumulative_quantity=1.0,
        leaves_quantity=0.0,
    )


def marker(seq: int, cfg: AppConfig, account: Account = Account.RESTORED) -> Command:
    m = SessionMarker(
        mode=str(cfg.system.mode),
        source=market_of(cfg),
        symbols=list(SYMBOLS),
        account=account,
        restored_from_seq=1,
    )
    return Command(ts_ns=seq, seq=seq, name=SESSION_STARTED, args=m.command(seq).args)


def test_market_names_what_sets_the_prices() -> None:
    assert market_of(config()) == "synthetic seed=7"
    assert market_of(config(QT_DATA__SYNTHETIC__SEED="3")) == "synthetic seed=3"
    replay = config(QT_DATA__SOURCE="replay", QT_DATA__REPLAY__PATH="candles/btc-1h/")
    assert market_of(replay) == "replay candles/btc-1h"
    assert market_of(config(QT_DATA__SOURCE="ccxt", QT_DATA__CCXT__EXCHANGE="kraken")) == "kraken"


def test_marker_round_trips_through_the_command() -> None:
    cfg = config()
    event = marker(5, cfg, Account.FRESH)
    got = marker_of(event)
    assert got is not None and got.account is Account.FRESH and got.source == market_of(cfg)
    assert marker_of(Command(ts_ns=1, name="something_else")) is None


def test_same_market_restores_every_fill() -> None:
    cfg = config()
    logged: list[Event] = [marker(1, cfg), fill(2), fill(3, "ETHUSDT")]
    start = plan_session(cfg, symbols=SYMBOLS, logged=logged)
    assert start.account is Account.RESTORED
    assert [f.seq for f in start.fills] == [2, 3]
    assert start.marker.restored_fills == 2 and start.marker.restored_from_seq == 1
    assert start.summary() == ""


@pytest.mark.parametrize(
    "env, says",
    [
        ({"QT_DATA__SYNTHETIC__SEED": "8"}, "data source changed: synthetic seed=7 -> synthetic"),
        ({"QT_DATA__SYMBOLS": "BTCUSDT,ETHUSDT,SOLUSDT"}, "symbols changed: 2 -> 3"),
        ({"QT_DATA__SOURCE": "replay", "QT_DATA__REPLAY__PATH": "x"}, "-> replay x"),
    ],
)
def test_paper_on_another_market_starts_fresh(env: dict[str, str], says: str) -> None:
    before = config()
    logged: list[Event] = [marker(1, before), fill(2)]
    now = config(**env)
    symbols = now.data.symbols if isinstance(now.data.symbols, list) else SYMBOLS
    with capture_logs() as logs:
        start = plan_session(now, symbols=symbols, logged=logged)
    assert start.account is Account.FRESH and start.fills == ()
    assert says in start.marker.reason and says in start.summary()
    assert [e["log_level"] for e in logs if e["event"] == "fresh_paper_account"] == ["warning"]


def test_after_a_fresh_account_only_its_own_fills_are_restored() -> None:
    a, b = config(), config(QT_DATA__SYNTHETIC__SEED="8")
    logged: list[Event] = [marker(1, a), fill(2), marker(3, b, Account.FRESH), fill(4)]
    start = plan_session(b, symbols=SYMBOLS, logged=logged)
    assert start.account is Account.RESTORED
    assert [f.seq for f in start.fills] == [4] and start.marker.restored_from_seq == 3


def test_live_never_discards_positions_and_warns() -> None:
    paper = config()
    other = config(QT_DATA__SYNTHETIC__SEED="8")
    # (A live config also needs exchanges; the planning only reads the mode.)
    live = msgspec.structs.replace(
        other, system=msgspec.structs.replace(other.system, mode=Mode.LIVE)
    )
    logged: list[Event] = [marker(1, paper), fill(2), marker(3, paper, Account.FRESH), fill(4)]
    with capture_logs() as logs:
        start = plan_session(live, symbols=SYMBOLS, logged=logged)
    assert start.account is Account.RESTORED
    assert [f.seq for f in start.fills] == [2, 4]  # every fill, as before sessions existed
    assert "mode changed: paper -> live" in start.marker.reason
    assert "although" in start.summary()
    assert [e["log_level"] for e in logs] == ["warning"]


def test_a_log_without_markers_is_judged_by_its_newest_bars_source() -> None:
    logged: list[Event] = [fill(2)]
    cfg = config(QT_DATA__SOURCE="replay", QT_DATA__REPLAY__PATH="candles/btc-1h")
    changed = plan_session(cfg, symbols=SYMBOLS, logged=logged, legacy_kind="synthetic")
    assert changed.account is Account.FRESH and changed.fills == ()
    assert changed.marker.reason == "data source changed: synthetic -> replay candles/btc-1h"
    same = plan_session(cfg, symbols=SYMBOLS, logged=logged, legacy_kind="replay")
    assert same.account is Account.RESTORED and len(same.fills) == 1
    unknown = plan_session(cfg, symbols=SYMBOLS, logged=logged)
    assert unknown.account is Account.RESTORED and len(unknown.fills) == 1
