"""The EMA(12)/EMA(26) long-only crossover of scripts/bench/nautilus_ema.py, in plain numpy.

Pure numpy, no quantumtrade and no NautilusTrader import; runs under any Python with numpy:

    .venv/bin/python scripts/bench/ema_reference.py \
        --data ../shared/data/candles/binance-spot-1h-2024

The rules are NautilusTrader's as nautilus_ema.py uses them, so the two must agree:

* EMA(n) on closes, alpha = 2 / (n + 1), seeded with the first close, ready after n closes
  (NautilusTrader's ExponentialMovingAverage); signals start once EMA(26) is ready, and a
  cross needs the previous bar's fast - slow too (so the first signal can come on bar 27);
* a bar where fast - slow turns > 0 from <= 0, while flat: BUY round(notional / close, q)
  at that bar's close, q = the most decimals in the file's volume column (the instrument's
  size precision there); a bar where it turns < 0 from >= 0, while long: SELL it all at the close;
* fee = fee-bps of each fill's value, in USDT;
* realised PnL = closed round trips (sell value - buy value - both fees) plus, for a position
  still open after the last bar, minus its entry fee (as NautilusTrader books an open position).

Prints one line per symbol and a total, then a last line with one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def load(path: Path) -> tuple[np.ndarray, int]:
    """Closes and the size precision (most decimals in the volume column) of one candle file."""
    with gzip.open(path, "rt") as fh:
        header = fh.readline().strip().split(",")
        if header[:6] != ["timestamp", "open", "high", "low", "close", "volume"]:
            raise ValueError(f"{path.name}: unexpected header {header}")
        rows = [line.rstrip("\n").split(",") for line in fh if line.strip()]
    closes = np.array([r[4] for r in rows], dtype=np.float64)
    size_prec = 0
    for r in rows:
        dot = r[5].find(".")
        if dot >= 0:
            size_prec = max(size_prec, len(r[5]) - dot - 1)
    return closes, size_prec


def ema(x: np.ndarray, period: int) -> np.ndarray:
    alpha = 2.0 / (period + 1.0)
    out = np.empty_like(x)
    value = x[0]
    for i in range(x.shape[0]):
        value = alpha * x[i] + (1.0 - alpha) * value
        out[i] = value
    return out


def simulate(
    closes: np.ndarray, size_prec: int, notional: float, fee_rate: float, fast: int, slow: int
) -> dict[str, Any]:
    n = closes.shape[0]
    res: dict[str, Any] = {
        "orders": 0,
        "fills": 0,
        "closed_pnl": 0.0,
        "open_fee": 0.0,
        "trades": 0,
        "open": 0,
    }
    if n <= slow:
        return res
    diff = ema(closes, fast) - ema(closes, slow)
    prev = diff[slow - 1 : n - 1]  # signals from index `slow` on; bar slow-1 is the first ready
    cur = diff[slow:]
    up = np.flatnonzero((cur > 0.0) & (prev <= 0.0)) + slow
    down = np.flatnonzero((cur < 0.0) & (prev >= 0.0)) + slow
    events = sorted([(int(i), 1) for i in up] + [(int(i), -1) for i in down])
    qty = 0.0
    cost = 0.0
    entry_fee = 0.0
    for i, side in events:
        px = float(closes[i])
        if side > 0 and qty == 0.0:
            q = round(notional / px, size_prec)
            if q <= 0:
                continue
            qty, cost = q, q * px
            entry_fee = cost * fee_rate
            res["orders"] += 1
            res["fills"] += 1
        elif side < 0 and qty > 0.0:
            value = qty * px
            res["closed_pnl"] += value - cost - entry_fee - value * fee_rate
            res["orders"] += 1
            res["fills"] += 1
            res["trades"] += 1
            qty = 0.0
    if qty > 0.0:
        res["open"] = 1
        res["open_fee"] = entry_fee
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a candle folder (*.csv.gz)")
    ap.add_argument("--notional", type=float, default=1000.0, help="USDT per entry")
    ap.add_argument("--fee-bps", type=float, default=10.0, help="fee per fill, bps")
    ap.add_argument("--fast", type=int, default=12)
    ap.add_argument("--slow", type=int, default=26)
    args = ap.parse_args()

    files = sorted(args.data.glob("*.csv.gz"))
    if not files:
        raise SystemExit(f"ema_reference: no *.csv.gz files in {args.data}")
    fee_rate = args.fee_bps / 10_000.0
    total: dict[str, Any] = {
        "orders": 0,
        "fills": 0,
        "closed_pnl": 0.0,
        "open_fee": 0.0,
        "trades": 0,
        "open": 0,
    }
    bars = 0
    sim_s = 0.0
    for f in files:
        closes, size_prec = load(f)
        bars += closes.shape[0]
        t = time.perf_counter()
        r = simulate(closes, size_prec, args.notional, fee_rate, args.fast, args.slow)
        sim_s += time.perf_counter() - t
        for k in total:
            total[k] += r[k]
        print(
            f"{f.name.split('.')[0]:<10} bars {closes.shape[0]:>6}  orders {r['orders']:>4}  "
            f"round trips {r['trades']:>4}  open {r['open']}  "
            f"realised PnL {r['closed_pnl'] - r['open_fee']:>9.2f} USDT"
        )
    pnl = total["closed_pnl"] - total["open_fee"]
    print(
        f"total: {len(files)} symbols, {bars:,} bars; orders {total['orders']}, fills "
        f"{total['fills']}, round trips {total['trades']}, {total['open']} open at the end; "
        f"realised PnL {pnl:.2f} USDT (closed trades {total['closed_pnl']:.2f}, entry fees of "
        f"open positions {total['open_fee']:.2f}); simulation {sim_s:.3f} s"
    )
    out = {
        "bars": bars,
        "symbols": len(files),
        "orders": total["orders"],
        "fills": total["fills"],
        "round_trips": total["trades"],
        "open_positions": total["open"],
        "pnl": round(pnl, 4),
        "closed_pnl": round(total["closed_pnl"], 4),
        "sim_s": round(sim_s, 4),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
