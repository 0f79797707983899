"""The HTML backtest report: self-contained, and drawn by a real headless Chromium.

The browser tests need Debian's ``chromium`` (``scripts/browser.sh`` installs it); they skip
without it, except under CI=true, where a missing browser fails. Each check has a negative
control: a copy of the report with a broken script, a network image and a hidden body must
trip the console, network and blank-screenshot checks.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image  # a dependency of matplotlib, itself a dependency of quantumtrade

from quantumtrade.backtest.model import EquityCurve, Trade
from quantumtrade.backtest.report import PriceTrack, minmax_indices, monthly_returns, write_report

HOUR_MS = 3_600_000
START_MS = 1_708_819_200_000  # 2024-02-25 00:00 UTC: 400 hourly bars span February and March
BARS = 400
SYMBOLS = ("BTC/USDT", "ETH/USDT")
TITLE = 'EMA cross <fast=12> & "slow" — synthetic'
COMMAND = "quantumtrade backtest --symbols BTC/USDT,ETH/USDT --out 'r.html' 2>&1 | tee <log>"
CHROMIUM_TIMEOUT_S = 90.0
# Charts in the synthetic report: equity, drawdown, PnL per symbol, PnL per regime, 2 prices.
EXPECTED_SVGS = 6
METRIC_KEYS = (
    "total_return cagr volatility sharpe sortino calmar max_drawdown max_drawdown_bars win_rate "
    "profit_factor expectancy avg_hold_bars exposure turnover fees trades final_equity"
).split()


# --- a small synthetic backtest result ------------------------------------------------------


@dataclass(frozen=True)
class Result:
    summary: dict[str, Any]
    curve: EquityCurve
    benchmark: EquityCurve
    trades: list[Trade]
    prices: dict[str, PriceTrack]


def _regimes(n: int, rng: np.random.Generator) -> list[str | None]:
    """None for a 30-bar warm-up, then blocks of 20-70 bars cycling through the four regimes."""
    out: list[str | None] = [None] * min(30, n)
    names = ("TRENDING", "RANGING", "VOLATILE", "BREAKOUT")
    k = 0
    while len(out) < n:
        out.extend([names[k % 4]] * int(rng.integers(20, 70)))
        k += 1
    return out[:n]


def _curve(ts: np.ndarray, equity: np.ndarray, exposure: np.ndarray) -> EquityCurve:
    return EquityCurve(
        ts_ms=ts.astype(np.int64),
        cash=equity - exposure,
        position_value=exposure,
        equity=equity.astype(np.float64),
        gross_exposure=np.abs(exposure),
    )


def _synthetic(bars: int = BARS, seed: int = 7) -> Result:
    rng = np.random.default_rng(seed)
    ts = START_MS + HOUR_MS * np.arange(bars, dtype=np.int64)
    start_price = {"BTC/USDT": 52_000.0, "ETH/USDT": 3_100.0}
    prices = {
        sym: PriceTrack(
            ts_ms=ts,
            close=start_price[sym] * np.exp(np.cumsum(rng.normal(0.0, 0.006, bars))),
            regime=_regimes(bars, rng),
        )
        for sym in SYMBOLS
    }
    plan = {
        "BTC/USDT": [
            ("LONG", 40, 90),
            ("SHORT", 120, 160),
            ("LONG", 200, 260),
            ("SHORT", 300, 399),
        ],
        "ETH/USDT": [
            ("SHORT", 50, 70),
            ("LONG", 100, 180),
            ("SHORT", 250, 330),
            ("LONG", 340, 380),
        ],
    }
    trades: list[Trade] = []
    marked = np.zeros(bars)
    exposure = np.zeros(bars)
    for sym, legs in plan.items():
        close = prices[sym].close
        for side, a, b in legs:
            b = min(b, bars - 1)
            sign = 1.0 if side == "LONG" else -1.0
            qty = 2_000.0 / close[a]
            fees = 0.001 * qty * (close[a] + close[b])
            path = sign * qty * (close[a : b + 1] - close[a])
            marked[a : b + 1] += path
            marked[b + 1 :] += path[-1] - fees
            exposure[a : b + 1] += sign * qty * close[a : b + 1]
            trades.append(
                Trade(
                    symbol=sym,
                    side=side,
                    entry_ts_ms=int(ts[a]),
                    exit_ts_ms=int(ts[b]),
                    entry_bar=a,
                    exit_bar=b,
                    quantity=qty,
                    entry_price=float(close[a]),
                    exit_price=float(close[b]),
                    fees=fees,
                    pnl=float(path[-1] - fees),
                    regime=prices[sym].regime[a],
                    exit_reason="end_of_data" if b == bars - 1 else "signal",
                )
            )
    equity = 10_000.0 + marked
    bench = 10_000.0 * np.mean([p.close / p.close[0] for p in prices.values()], axis=0)
    curve, benchmark = _curve(ts, equity, exposure), _curve(ts, bench, bench)

    def group(key: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for t in trades:
            name = getattr(t, key) or "UNKNOWN"
            g = out.setdefault(name, {"trades": 0, "pnl": 0.0, "wins": 0})
            g["trades"] += 1
            g["pnl"] += t.pnl
            g["wins"] += t.pnl > 0
        for g in out.values():
            g["win_rate"] = g.pop("wins") / g["trades"]
            g["signal_accuracy"] = {h: float(rng.uniform(0.4, 0.65)) for h in ("1", "6", "24")}
        return out

    strategy = _stats(curve, trades) | {"calmar": None}
    benchmark_stats = _stats(benchmark, []) | {"win_rate": None}
    summary = {
        "strategy": strategy,
        "benchmark": benchmark_stats,
        "signal_accuracy": {"1": 0.531, "6": 0.552, "24": 0.58},
        "signal_accuracy_baseline": {"1": 0.5, "6": 0.51, "24": 0.56},
        "by_regime": group("regime"),
        "by_symbol": group("symbol"),
        "run": {
            "data": "synthetic (test_backtest_report.py, seed 7)",
            "period": "2024-02-25 → 2024-03-12",
            "symbols": list(SYMBOLS),
            "timeframe": "1h",
            "config": {"fast": 12, "slow": 26, "note": "<not html>"},
        },
    }
    return Result(summary, curve, benchmark, trades, prices)


def _stats(curve: EquityCurve, trades: list[Trade]) -> dict[str, Any]:
    """The headline figures of a curve, computed plainly so the synthetic report reads true."""
    equity = curve.equity
    returns = np.diff(equity) / equity[:-1]
    per_year = 24 * 365
    years = max(len(curve) - 1, 1) / per_year
    vol = float(np.std(returns) * math.sqrt(per_year))
    downside = float(np.std(np.minimum(returns, 0.0)) * math.sqrt(per_year))
    mean = float(np.mean(returns) * per_year)
    underwater = curve.drawdown > 0
    longest = run = 0
    for flag in underwater:
        run = run + 1 if flag else 0
        longest = max(longest, run)
    pnl = np.array([t.pnl for t in trades])
    gains, losses = pnl[pnl > 0].sum(), -pnl[pnl < 0].sum()
    return {
        "total_return": float(equity[-1] / equity[0] - 1.0),
        "cagr": float((equity[-1] / equity[0]) ** (1.0 / years) - 1.0),
        "volatility": vol,
        "sharpe": mean / vol if vol else None,
        "sortino": mean / downside if downside else None,
        "calmar": None,
        "max_drawdown": float(curve.drawdown.max()),
        "max_drawdown_bars": longest,
        "win_rate": float(np.mean(pnl > 0)) if trades else None,
        "profit_factor": float(gains / losses) if losses else None,
        "expectancy": float(pnl.mean()) if trades else None,
        "avg_hold_bars": float(np.mean([t.hold_bars for t in trades])) if trades else None,
        "exposure": float(np.mean(curve.gross_exposure > 0)),
        "turnover": float(sum(2 * t.notional for t in trades) / equity.mean()),
        "fees": float(sum(t.fees for t in trades)),
        "trades": len(trades),
        "final_equity": float(equity[-1]),
    }


def _write(path: Path, result: Result, *, title: str = TITLE) -> Path:
    return write_report(
        path,
        title=title,
        summary=result.summary,
        curve=result.curve,
        benchmark=result.benchmark,
        trades=result.trades,
        prices=result.prices,
        command=COMMAND,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("report") / "report.html", _synthetic())


# --- self-containment (static) --------------------------------------------------------------


_CSS_REFERENCE = re.compile(r"@import[^;]*|url\(\s*['\"]?(?!#|data:)[^)]*\)")


class _References(HTMLParser):
    """Every reference that would make the page load something beside itself."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self._in_style = tag == "style"
        if tag == "link":  # stylesheets, fonts, icons, preloads: none belongs in the file
            self.found.append(f"<link {values}>")
            return
        for name, value in values.items():
            # In-page fragments (#id, used by SVG <use>) and data: URIs are part of the file.
            if name in {"src", "href", "xlink:href", "srcset", "data", "poster"} and not (
                value.startswith("#") or value.startswith("data:")
            ):
                self.found.append(f"<{tag} {name}={value}>")
            if name == "style":
                self.found.extend(f"<{tag} style> {m}" for m in _CSS_REFERENCE.findall(value))

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.found.extend(f"<style> {m}" for m in _CSS_REFERENCE.findall(data))


def _external_references(text: str) -> list[str]:
    parser = _References()
    parser.feed(text)
    parser.close()
    return parser.found


def test_report_is_one_self_contained_file(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert _external_references(text) == []
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert "<script" not in text.lower()
    assert "<link" not in text.lower()
    assert text.count("<svg") == EXPECTED_SVGS
    assert 50_000 < len(text) < 2_000_000, len(text)


def test_reference_check_catches_each_kind_of_external_reference() -> None:
    page = (
        '<html><head><link rel="stylesheet" href="https://cdn.example/x.css">'
        "<style>@import 'theme.css'; body{background:url(bg.png)}</style>"
        '<script src="https://cdn.example/plotly.js"></script></head><body>'
        '<img src="chart.png"><svg><image xlink:href="http://example.com/a.png"/>'
        '<use xlink:href="#glyph"/></svg></body></html>'
    )
    found = _external_references(page)
    assert len(found) == 6, found
    assert not any("#glyph" in f for f in found)


def test_text_is_escaped_and_every_metric_shown(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert TITLE not in text
    assert "EMA cross &lt;fast=12&gt; &amp; &quot;slow&quot;" in text
    assert "--out &#x27;r.html&#x27; 2&gt;&amp;1 | tee &lt;log&gt;" in text
    assert "&lt;not html&gt;" in text and "<not html>" not in text
    headline = text[text.index("Headline") : text.index("Command")]
    assert headline.count("<tr>") == 1 + len(METRIC_KEYS)
    # Calmar and, for the trade-less benchmark, the trade figures are None: each reads "—".
    result = _synthetic()
    missing = [
        (side, key)
        for side in ("strategy", "benchmark")
        for key, value in result.summary[side].items()
        if value is None
    ]
    assert ("strategy", "calmar") in missing and len(missing) >= 3
    assert headline.count("<td>—</td>") == len(missing)


# --- real headless Chromium ---------------------------------------------------------------


def _chromium() -> str:
    """Path of chromium; skip without it, except under CI=true, where it fails."""
    exe = shutil.which("chromium")
    if exe is not None:
        return exe
    message = "chromium is not on PATH (install it with scripts/browser.sh)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class Visit:
    stdout: str
    stderr: str
    seconds: float
    netlog: Path


def _visit(page: Path, workdir: Path, *extra: str) -> Visit:
    exe = _chromium()
    profile = tempfile.mkdtemp(prefix="profile-", dir=workdir)
    netlog = Path(tempfile.mkdtemp(prefix="netlog-", dir=workdir)) / "net.json"
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        f"--log-net-log={netlog}",
        *extra,
        page.resolve().as_uri(),
    ]
    started = time.perf_counter()
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False
    )
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    return Visit(done.stdout, done.stderr, seconds, netlog)


def _screenshot(page: Path, workdir: Path) -> tuple[Visit, Path]:
    shot = Path(tempfile.mkdtemp(prefix="shot-", dir=workdir)) / "shot.png"
    visit = _visit(page, workdir, f"--screenshot={shot}", "--window-size=1400,3000")
    assert shot.is_file(), visit.stderr[-3000:]
    return visit, shot


# Chromium logs every console message, console.error and uncaught exceptions included, as
# `[pid:tid:time:INFO:CONSOLE:line] "message", source: url (line)`: the level is INFO whatever
# the message, and its own ERROR lines (dbus, no GPU) are not the page's. So the report, which
# has no script at all, must produce no CONSOLE line; the uncaught ones are picked out to say
# what broke.
_CONSOLE = re.compile(r"^\[[^\]]*:CONSOLE[:(\]]")


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if _CONSOLE.match(line)]


def _console_errors(stderr: str) -> list[str]:
    return [line for line in _console_lines(stderr) if "Uncaught" in line or ":ERROR:" in line]


def _page_requests(netlog: Path) -> list[str]:
    """URLs the page asked the network for (Chromium's own background requests left out)."""
    log = json.loads(netlog.read_text(encoding="utf-8"))
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        # A request made for a file:// page is keyed to that page's site; the browser's own
        # update and account requests are keyed to google.com or to nothing ("null").
        if event["type"] == start_job and "file://" in params.get("network_isolation_key", ""):
            urls.append(params["url"])
    return urls


def _pixel_shares(png: Path) -> tuple[float, float]:
    """(ink, colour): shares of pixels unlike the two commonest colours, and strongly tinted."""
    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.int32).reshape(-1, 3)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    values, counts = np.unique(packed, return_counts=True)
    backgrounds = values[np.argsort(counts)[-2:]]  # the page and the white cards
    near_background = np.zeros(rgb.shape[0], dtype=bool)
    for value in backgrounds:
        colour = np.array([(value >> 16) & 255, (value >> 8) & 255, value & 255])
        near_background |= np.abs(rgb - colour).max(axis=1) <= 10
    ink = float(np.mean(~near_background))
    colour_share = float(np.mean((rgb.max(axis=1) - rgb.min(axis=1)) >= 60))
    return ink, colour_share


# Measured on the synthetic report (1400x3000 window): ink ~ 0.11, colour ~ 0.009 (the lines,
# markers, regime bands and tinted cells); a blank or hidden page gives 0 for both.
MIN_INK = 0.03
MIN_COLOUR = 0.003


@pytest.fixture(scope="module")
def browser_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _chromium()
    return tmp_path_factory.mktemp("chromium")


@pytest.mark.browser
def test_report_renders_in_chromium_without_errors(browser_dir: Path, report: Path) -> None:
    visit, shot = _screenshot(report, browser_dir)
    assert _console_lines(visit.stderr) == []
    assert _page_requests(visit.netlog) == []
    ink, colour = _pixel_shares(shot)
    assert ink >= MIN_INK, f"screenshot nearly blank: ink share {ink:.4f}"
    assert colour >= MIN_COLOUR, f"no coloured chart pixels: share {colour:.4f}"
    print(f"chromium screenshot {visit.seconds:.2f} s, ink {ink:.3f}, colour {colour:.3f}")


@pytest.mark.browser
def test_dom_holds_every_chart_as_svg(browser_dir: Path, report: Path) -> None:
    visit = _visit(report, browser_dir, "--dump-dom")
    dom = visit.stdout
    assert dom.count("<svg") == EXPECTED_SVGS
    # The synthetic run spans February and March 2024: two shaded cells in one year row.
    assert dom.count('class="m" style="background') == 2
    assert _console_lines(visit.stderr) == []


@pytest.mark.browser
def test_checks_fail_on_a_broken_page(browser_dir: Path, report: Path) -> None:
    """Negative control: a broken script, a network image and a hidden body are each caught."""
    text = report.read_text(encoding="utf-8")
    broken = text.replace(
        "<body>", '<body>\n<img src="http://127.0.0.1:9/pixel.png" alt="">', 1
    ).replace(
        "</body>",
        "<script>document.body.style.visibility = 'hidden'; renderCharts();</script>\n</body>",
        1,
    )
    assert broken != text
    page = browser_dir / "broken.html"
    page.write_text(broken, encoding="utf-8")

    visit, shot = _screenshot(page, browser_dir)
    errors = _console_errors(visit.stderr)
    assert any("renderCharts is not defined" in line for line in errors), visit.stderr[-3000:]
    assert set(_page_requests(visit.netlog)) == {"http://127.0.0.1:9/pixel.png"}
    ink, colour = _pixel_shares(shot)
    assert ink < MIN_INK and colour < MIN_COLOUR, (ink, colour)
    assert len(_external_references(broken)) == 1


# --- edge cases and size --------------------------------------------------------------------


def test_no_trades_one_bar_and_missing_values(tmp_path: Path) -> None:
    one = _curve(np.array([START_MS]), np.array([10_000.0]), np.array([0.0]))
    summary: dict[str, Any] = {
        "strategy": dict.fromkeys(METRIC_KEYS),
        "benchmark": dict.fromkeys(METRIC_KEYS),
        "signal_accuracy": {"1": None, "6": None, "24": None},
        "signal_accuracy_baseline": None,
        "by_regime": {},
        "by_symbol": {},
        "run": None,
    }
    track = PriceTrack(
        ts_ms=np.array([START_MS], dtype=np.int64), close=np.array([100.0]), regime=[None]
    )
    path = write_report(
        tmp_path / "one.html",
        title="one bar",
        summary=summary,
        curve=one,
        benchmark=one,
        trades=[],
        prices={"BTC/USDT": track},
        command="quantumtrade backtest",
    )
    text = path.read_text(encoding="utf-8")
    headline = text[text.index("Headline") : text.index("Command")]
    assert headline.count("<td>—</td>") == 2 * len(METRIC_KEYS)
    assert text.count("No trades.") == 2
    assert text.count("<svg") == 3  # equity, drawdown, the one price chart
    assert _external_references(text) == []


def test_price_track_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="one entry per bar"):
        PriceTrack(ts_ms=np.arange(3, dtype=np.int64), close=np.ones(3), regime=[None, None])


def test_monthly_returns_from_month_end_equity() -> None:
    jan31_23h = 1_706_742_000_000  # 2024-01-31 23:00 UTC
    ts = np.array(
        [jan31_23h - HOUR_MS, jan31_23h, jan31_23h + HOUR_MS, jan31_23h + 30 * 24 * HOUR_MS]
    )
    equity = np.array([100.0, 110.0, 99.0, 121.0])  # last bar: 2024-03-01 23:00
    got = monthly_returns(_curve(ts, equity, np.zeros(4)))
    assert got.keys() == {(2024, 1), (2024, 2), (2024, 3)}
    assert math.isclose(got[(2024, 1)], 0.10)
    assert math.isclose(got[(2024, 2)], 99.0 / 110.0 - 1.0)
    assert math.isclose(got[(2024, 3)], 121.0 / 99.0 - 1.0)


def test_long_series_are_cut_but_keep_their_extremes(tmp_path: Path) -> None:
    bars = 30_000
    result = _synthetic(bars=bars, seed=3)
    choppy = [("TRENDING", "VOLATILE")[i % 2] for i in range(bars)]  # a new run every bar
    prices = {s: PriceTrack(p.ts_ms, p.close, choppy) for s, p in result.prices.items()}
    started = time.perf_counter()
    path = write_report(
        tmp_path / "long.html",
        title="long",
        summary=result.summary,
        curve=result.curve,
        benchmark=result.benchmark,
        trades=result.trades,
        prices=prices,
        command="quantumtrade backtest",
    )
    seconds = time.perf_counter() - started
    size = path.stat().st_size
    assert size < 2_500_000, f"{size:,} bytes"
    assert seconds < 30.0, seconds

    equity = result.curve.equity
    keep = minmax_indices(equity, 2_000)
    assert keep.shape[0] <= 2_002
    assert np.all(np.diff(keep) > 0)
    assert {0, bars - 1, int(np.argmin(equity)), int(np.argmax(equity))} <= set(keep.tolist())
