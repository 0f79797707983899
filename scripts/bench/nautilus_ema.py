"""NautilusTrader's BacktestEngine on our candles: an EMA(12)/EMA(26) long-only crossover.

A peer figure for our own backtester. Runs under the NautilusTrader venv, not ours, and imports
nothing from quantumtrade:

    PY=$(bash scripts/bench/nautilus_setup.sh)
    $PY scripts/bench/nautilus_ema.py --data ../shared/data/candles/binance-spot-1h-2024

Model (the same rules as scripts/bench/ema_reference.py, which checks the orders and PnL):

* one 1-HOUR-LAST-EXTERNAL bar per CSV row, stamped at the bar's CLOSE (ts_event = ts_init =
  open time + 1 h): NautilusTrader treats a bar as known at ts_init, and a bar stamped at its open
  would let the strategy trade on a close 1 h before it happened;
* prices and sizes at the precisions the files carry (most decimals seen in OHLC, in volume):
  the matching engine requires bar precisions to equal the instrument's;
* one simulated venue BINANCE, OmsType.NETTING, AccountType.CASH with no base currency (a
  multi-currency spot wallet: a BUY pays USDT and credits the base coin, a SELL needs the coin,
  so the account cannot go short), starting with 10,000,000 USDT; L1 book fed by the bars;
* one CurrencyPair per file with maker/taker fee --fee-bps (market orders pay the taker fee,
  charged in USDT);
* one Strategy per instrument: NautilusTrader's ExponentialMovingAverage(12) and (26) on the
  closes (seeded with the first close, ready after 12/26 bars); on a bar where fast - slow turns
  > 0 from <= 0 and the instrument is flat: market BUY of round(notional / close, size precision);
  where it turns < 0 from >= 0 and the instrument is long: close the position (market SELL of the
  whole quantity). A market order submitted in on_bar fills at that bar's close. Positions still
  open at the end stay open (their entry fee counts in the realised PnL, as NautilusTrader books
  it).

``--no-orders`` runs the same strategies without placing orders: the engine's per-bar cost
alone (the figure to compare across machines, with NOTES' 5.0 s on binance-spot-1h-2024).

Only ``engine.run()`` is timed, on a freshly built engine each repeat (loading the files and
building the engine are outside the timer); the figure is the minimum over --repeat runs.
Logging is at ERROR (INFO logging of every order event would dominate the run). The engine's
post-run statistics (BacktestEngineConfig.run_analysis, on by default: pandas, after the last bar)
are off unless --analysis is given; the per-trade PnL record the Portfolio keeps during the run
(pandas concat on every closed position) cannot be turned off and is part of the figure.
Also printed: the CPU time of the run (time.process_time), steadier than wall time on a busy box.

Prints readable lines, then a last line with one JSON object.

Measured on binance-spot-1h-2024 (21 pairs, 125,954 bars), NautilusTrader 1.231.0, pandas 2.3.3,
pyenv's Python 3.12.1, a shared 2-core box with other work running: engine.run() min of 3
42.0 s (CPU 42.0 s; runs 43.0 / 53.7 / 42.0), --no-orders 13.5 s; 4,241 orders, 4,241 fills,
realised PnL -2,904.63 USDT, the same as ema_reference.py to the cent. NOTES' earlier box gave
20.2 s and 5.0 s: compare machines with --no-orders before comparing figures.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import sys
import time
import warnings
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import nautilus_trader
import numpy as np
from nautilus_trader.backtest.config import BacktestEngineConfig
from nautilus_trader.backtest.engine import BacktestEngine
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.indicators import ExponentialMovingAverage
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide, TimeInForce
from nautilus_trader.model.events import OrderFilled
from nautilus_trader.model.identifiers import InstrumentId, Symbol, TraderId, Venue
from nautilus_trader.model.instruments import CurrencyPair
from nautilus_trader.model.objects import Currency, Money, Price, Quantity
from nautilus_trader.trading.strategy import Strategy

# NautilusTrader 1.231 calls pd.Timestamp.utcnow(), deprecated in pandas 3: not ours to fix.
warnings.filterwarnings("ignore", message=".*Timestamp.utcnow is deprecated.*")

VENUE = Venue("BINANCE")
HOUR_NS = 3_600_000_000_000
QUOTE = "USDT"
STARTING_USDT = 10_000_000


# ---------------------------------------------------------------------------------------------
# data


@dataclass
class Series:
    symbol: str  # e.g. BTCUSDT
    base: str  # e.g. BTC
    open_ms: np.ndarray  # int64, bar open time
    ohlcv: np.ndarray  # float64 (n, 5)
    price_prec: int
    size_prec: int


def _decimals(column: list[str]) -> int:
    best = 0
    for text in column:
        dot = text.find(".")
        if dot >= 0:
            n = len(text) - dot - 1
            if "e" in text or "E" in text:
                raise ValueError(f"exponent notation not handled: {text}")
            best = max(best, n)
    return best


def load_series(path: Path) -> Series:
    symbol = path.name.split(".")[0].upper()
    if not symbol.endswith(QUOTE):
        raise ValueError(f"{path.name}: only {QUOTE}-quoted pairs are handled")
    with gzip.open(path, "rt") as fh:
        header = fh.readline().strip().split(",")
        if header[:6] != ["timestamp", "open", "high", "low", "close", "volume"]:
            raise ValueError(f"{path.name}: unexpected header {header}")
        rows = [line.rstrip("\n").split(",") for line in fh if line.strip()]
    cols = list(zip(*rows, strict=True))
    open_ms = np.array(cols[0], dtype=np.int64)
    ohlcv = np.column_stack([np.array(c, dtype=np.float64) for c in cols[1:6]])
    price_prec = max(_decimals(cols[i]) for i in range(1, 5))
    size_prec = _decimals(cols[5])
    return Series(symbol, symbol[: -len(QUOTE)], open_ms, ohlcv, price_prec, size_prec)


def load_folder(data_dir: Path) -> list[Series]:
    files = sorted(data_dir.glob("*.csv.gz"))
    if not files:
        raise SystemExit(f"nautilus_ema: no *.csv.gz files in {data_dir}")
    return [load_series(f) for f in files]


def make_instrument(s: Series, fee: Decimal) -> CurrencyPair:
    # NautilusTrader knows the common coins; an unknown code comes back as an 8-decimal crypto.
    base = Currency.from_str(s.base)
    tick = Price(10.0**-s.price_prec, s.price_prec)
    step = Quantity(10.0**-s.size_prec, s.size_prec)
    return CurrencyPair(
        instrument_id=InstrumentId(Symbol(s.symbol), VENUE),
        raw_symbol=Symbol(s.symbol),
        base_currency=base,
        quote_currency=USDT,
        price_precision=s.price_prec,
        size_precision=s.size_prec,
        price_increment=tick,
        size_increment=step,
        lot_size=None,
        max_quantity=None,
        min_quantity=step,
        max_notional=None,
        min_notional=None,
        max_price=None,
        min_price=tick,
        margin_init=Decimal(0),
        margin_maint=Decimal(0),
        maker_fee=fee,
        taker_fee=fee,
        ts_event=0,
        ts_init=0,
    )


def bar_type_for(instrument: CurrencyPair) -> BarType:
    return BarType.from_str(f"{instrument.id}-1-HOUR-LAST-EXTERNAL")


def make_bars(s: Series, bar_type: BarType) -> list[Bar]:
    # Stamp each bar at its close: open time + 1 h, in ns.
    ts = (s.open_ms.astype(np.uint64) * np.uint64(1_000_000)) + np.uint64(HOUR_NS)
    ts = np.ascontiguousarray(ts)
    cols = [np.ascontiguousarray(s.ohlcv[:, i]) for i in range(5)]
    return Bar.from_raw_arrays_to_list(bar_type, s.price_prec, s.size_prec, *cols, ts, ts.copy())


# ---------------------------------------------------------------------------------------------
# strategy


class EmaCrossConfig(StrategyConfig, frozen=True):
    instrument_id: InstrumentId
    bar_type: BarType
    notional: float = 1000.0
    fast: int = 12
    slow: int = 26
    trade: bool = True  # False: the same EMAs and signals, no orders (a per-bar baseline)


class EmaCross(Strategy):
    """Long-only EMA(fast)/EMA(slow) crossover on one instrument, a fixed USDT amount per entry."""

    def __init__(self, config: EmaCrossConfig) -> None:
        super().__init__(config)
        self.fast = ExponentialMovingAverage(config.fast)
        self.slow = ExponentialMovingAverage(config.slow)
        self.prev_diff: float | None = None
        self.size_prec = 0
        self.last_close = 0.0
        self.fills = 0
        self.fills_off_close = 0  # fills at a price other than the signal bar's close
        self.cash_flow = 0.0  # USDT in minus out, fees included, over every fill

    def on_start(self) -> None:
        instrument = self.cache.instrument(self.config.instrument_id)
        self.size_prec = instrument.size_precision
        self.subscribe_bars(self.config.bar_type)

    def on_bar(self, bar: Bar) -> None:
        self.fast.handle_bar(bar)
        self.slow.handle_bar(bar)
        if not self.slow.initialized:
            return
        close = bar.close.as_double()
        self.last_close = close
        diff = self.fast.value - self.slow.value
        prev = self.prev_diff
        self.prev_diff = diff
        if prev is None or not self.config.trade:
            return
        iid = self.config.instrument_id
        if diff > 0.0 and prev <= 0.0:
            if self.portfolio.is_flat(iid):
                qty = round(self.config.notional / close, self.size_prec)
                if qty > 0:
                    order = self.order_factory.market(
                        instrument_id=iid,
                        order_side=OrderSide.BUY,
                        quantity=Quantity(qty, self.size_prec),
                        time_in_force=TimeInForce.GTC,
                    )
                    self.submit_order(order)
        elif diff < 0.0 and prev >= 0.0:
            if self.portfolio.is_net_long(iid):
                self.close_all_positions(iid)

    def on_order_filled(self, event: OrderFilled) -> None:
        self.fills += 1
        px = event.last_px.as_double()
        if px != self.last_close:
            self.fills_off_close += 1
        value = px * event.last_qty.as_double()
        fee = event.commission.as_double() if event.commission.currency == USDT else 0.0
        self.cash_flow += (value if event.order_side == OrderSide.SELL else -value) - fee

    def on_stop(self) -> None:
        pass  # leave open positions open: no forced exit at the end of the data


# ---------------------------------------------------------------------------------------------
# engine


def build_engine(
    instruments: list[CurrencyPair],
    bars: list[Bar],
    notional: float,
    analysis: bool = False,
    trade: bool = True,
) -> tuple[BacktestEngine, list[EmaCross]]:
    config = BacktestEngineConfig(
        trader_id=TraderId("BENCH-001"),
        logging=LoggingConfig(log_level="ERROR"),
        run_analysis=analysis,
    )
    engine = BacktestEngine(config=config)
    engine.add_venue(
        venue=VENUE,
        oms_type=OmsType.NETTING,
        account_type=AccountType.CASH,
        base_currency=None,
        starting_balances=[Money(STARTING_USDT, USDT)],
    )
    strategies = []
    for inst in instruments:
        engine.add_instrument(inst)
        strat = EmaCross(
            EmaCrossConfig(
                instrument_id=inst.id,
                bar_type=bar_type_for(inst),
                notional=notional,
                trade=trade,
                order_id_tag=inst.id.symbol.value,
            )
        )
        strategies.append(strat)
    engine.add_data(bars, validate=False, sort=False)
    engine.sort_data()
    engine.add_strategies(strategies)
    return engine, strategies


def collect(engine: BacktestEngine, strategies: list[EmaCross]) -> dict:
    orders = engine.cache.orders()
    fills = sum(1 for o in orders for e in o.events if isinstance(e, OrderFilled))
    # Realised PnL as the portfolio books it (NETTING keeps earlier round trips as snapshots,
    # which Portfolio.realized_pnl includes).
    pnl = 0.0
    for inst_id in {o.instrument_id for o in orders}:
        money = engine.portfolio.realized_pnl(inst_id)
        if money is not None:
            pnl += money.as_double()
    # The same from the fills' cash flows: closed round trips, plus the entry fee of open ones.
    cash = 0.0
    open_qty = 0
    for strat in strategies:
        cash += strat.cash_flow
    for pos in engine.cache.positions_open():
        open_qty += 1
        # an open long's cost (qty x avg entry) went out of the cash flow but is not realised
        cash += pos.quantity.as_double() * pos.avg_px_open
    usdt = engine.portfolio.account(VENUE).balance_total(USDT).as_double()
    return {
        "orders": len(orders),
        "fills": fills,
        "pnl": pnl,
        "pnl_from_fills": cash,
        "open_positions": open_qty,
        "fills_off_close": sum(s.fills_off_close for s in strategies),
        "usdt_end": usdt,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a candle folder (*.csv.gz)")
    ap.add_argument("--repeat", type=int, default=3, help="fresh engines to run; report the min")
    ap.add_argument("--notional", type=float, default=1000.0, help="USDT per entry")
    ap.add_argument("--fee-bps", type=float, default=10.0, help="taker (and maker) fee, bps")
    ap.add_argument(
        "--analysis", action="store_true", help="keep the engine's post-run statistics in run()"
    )
    ap.add_argument(
        "--no-orders",
        action="store_true",
        help="compute the same EMAs and signals but place no orders (the engine's per-bar cost)",
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    series = load_folder(args.data)
    fee = Decimal(str(args.fee_bps)) / Decimal(10_000)
    instruments = [make_instrument(s, fee) for s in series]
    bars: list[Bar] = []
    for s, inst in zip(series, instruments, strict=True):
        bars.extend(make_bars(s, bar_type_for(inst)))
    load_s = time.perf_counter() - t0
    n_bars = len(bars)
    print(f"NautilusTrader {nautilus_trader.__version__} on Python {sys.version.split()[0]}")
    print(
        f"data: {args.data} -> {len(series)} symbols, {n_bars:,} bars "
        f"(loaded and converted in {load_s:.2f} s)"
    )
    print(
        "venue: BINANCE, OmsType.NETTING, AccountType.CASH (multi-currency spot wallet, no "
        f"shorts), {STARTING_USDT:,} USDT; taker fee {args.fee_bps:g} bps; "
        f"EMA(12/26) long-only, {args.notional:g} USDT per entry"
    )

    runs: list[float] = []
    cpus: list[float] = []
    result: dict = {}
    for i in range(max(1, args.repeat)):
        t_setup = time.perf_counter()
        engine, strategies = build_engine(
            instruments, bars, args.notional, args.analysis, not args.no_orders
        )
        setup_s = time.perf_counter() - t_setup
        gc.collect()
        c = time.process_time()
        t = time.perf_counter()
        engine.run()
        run_s = time.perf_counter() - t
        cpu_s = time.process_time() - c
        runs.append(run_s)
        cpus.append(cpu_s)
        stats = collect(engine, strategies)
        print(
            f"run {i + 1}: engine.run() {run_s:.3f} s, CPU {cpu_s:.3f} s "
            f"({n_bars / run_s:,.0f} bars/s; engine setup {setup_s:.2f} s, untimed); "
            f"orders {stats['orders']}, fills {stats['fills']}, "
            f"realised PnL {stats['pnl']:.2f} USDT"
        )
        if result and (result["orders"], result["fills"]) != (stats["orders"], stats["fills"]):
            print("  warning: this run's orders/fills differ from the first run's")
        result = result or stats
        engine.dispose()
        del engine, strategies
        gc.collect()

    print(
        f"checks: PnL from the fills' cash flows {result['pnl_from_fills']:.2f} USDT; "
        f"{result['open_positions']} positions open at the end; "
        f"{result['fills_off_close']} fills at a price other than the signal bar's close; "
        f"USDT balance at the end {result['usdt_end']:,.2f}"
    )
    print(
        f"engine.run(): min {min(runs):.3f} s over {len(runs)} runs (CPU min {min(cpus):.3f} s)"
        + ("; with the post-run analysis" if args.analysis else "")
        + ("; NO ORDERS (signals only)" if args.no_orders else "")
    )
    out = {
        "nautilus_version": nautilus_trader.__version__,
        "bars": n_bars,
        "symbols": len(series),
        "run_s": round(min(runs), 4),
        "runs_s": [round(r, 4) for r in runs],
        "cpu_s": round(min(cpus), 4),
        "analysis": args.analysis,
        "no_orders": args.no_orders,
        "orders": result["orders"],
        "fills": result["fills"],
        "pnl": round(result["pnl"], 4),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
