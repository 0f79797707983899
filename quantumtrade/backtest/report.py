"""One self-contained HTML file per backtest: tables plus matplotlib charts inlined as SVG.

The file opens offline: no script, no external stylesheet, font or image. Charts are drawn on
an Agg canvas (no GUI, no pyplot state) and saved as SVG with text as paths, so they look the
same on every machine; long series are cut to ~2,000 points per line keeping each bucket's
low and high, so a spike or the deepest drawdown survives the cut.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.dates as mdates
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator
from numpy.typing import NDArray

from quantumtrade.backtest.model import EquityCurve, Trade

__all__ = ["PriceTrack", "minmax_indices", "monthly_returns", "write_report"]

MAX_POINTS_PER_LINE = 2000
DASH = "—"

REGIME_COLOURS: Mapping[str, str] = {
    "TRENDING": "#2ca02c",
    "VOLATILE": "#d62728",
    "RANGING": "#1f77b4",
    "BREAKOUT": "#9467bd",
}
OTHER_REGIME_COLOUR = "#7f7f7f"
STRATEGY_COLOUR = "#1f4e9c"
BENCHMARK_COLOUR = "#e07b00"
LONG_COLOUR = "#15803d"
SHORT_COLOUR = "#c81e1e"
EXIT_COLOUR = "#111827"
GAIN_RGB = (22, 163, 74)
LOSS_RGB = (220, 38, 38)

_SVG_METADATA: dict[str, Any] = {"Date": None, "Creator": None, "Format": None, "Type": None}


@dataclass(frozen=True, slots=True)
class PriceTrack:
    """One symbol's bar closes and the regime detected on each bar, for its price chart."""

    ts_ms: NDArray[np.int64]
    close: NDArray[np.float64]
    regime: Sequence[str | None] | NDArray[Any]
    """One label per bar (TRENDING, VOLATILE, RANGING, BREAKOUT, ...) or None before warm-up."""

    def __post_init__(self) -> None:
        n = self.ts_ms.shape[0]
        if self.close.shape[0] != n or len(self.regime) != n:
            raise ValueError(
                f"PriceTrack: ts_ms ({n}), close ({self.close.shape[0]}) and regime "
                f"({len(self.regime)}) must have one entry per bar"
            )


def write_report(
    path: Path,
    *,
    title: str,
    summary: Mapping[str, Any],
    curve: EquityCurve,
    benchmark: EquityCurve,
    trades: Sequence[Trade],
    prices: Mapping[str, PriceTrack],
    command: str,
) -> Path:
    """Write the HTML report to ``path`` (parents created) and return ``path``."""
    with _chart_style():
        body = _render_body(
            title=title,
            summary=summary,
            curve=curve,
            benchmark=benchmark,
            trades=trades,
            prices=prices,
            command=command,
        )
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}</body>\n"
        "</html>\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


# --- page -----------------------------------------------------------------------------------

_CSS = """
body{margin:0;background:#f3f4f6;color:#111827;
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
main{max-width:1240px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:22px;margin:4px 0 2px}
h2{font-size:16px;margin:0 0 10px}
h3{font-size:14px;margin:14px 0 6px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:16px 18px;
 margin:14px 0}
.sub{color:#4b5563;margin:0 0 6px}
.note{color:#6b7280;font-size:12px;margin:6px 0 0}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid #eef0f3;text-align:right;white-space:nowrap}
th{background:#f9fafb;font-weight:600;color:#374151}
th:first-child,td:first-child{text-align:left}
tr.base td{color:#6b7280;font-style:italic;border-top:1px solid #d1d5db}
.pos{color:#15803d}.neg{color:#b91c1c}
.grid2{display:grid;grid-template-columns:minmax(0,2fr) minmax(0,3fr);gap:18px;
 align-items:start}
.scroll{overflow-x:auto}
pre{background:#f9fafb;border:1px solid #e5e7eb;border-radius:6px;padding:8px 10px;margin:0;
 white-space:pre-wrap;word-break:break-all;font:12px/1.4 ui-monospace,"DejaVu Sans Mono",
 Menlo,Consolas,monospace}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 14px;margin:0}
dt{color:#4b5563;font-weight:600}dd{margin:0}
figure{margin:6px 0}
figure svg{display:block;width:100%;height:auto}
td.m{min-width:52px}
"""

_METRICS: tuple[tuple[str, str, str], ...] = (
    ("total_return", "Total return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("volatility", "Volatility (annualised)", "pct"),
    ("sharpe", "Sharpe", "ratio"),
    ("sortino", "Sortino", "ratio"),
    ("calmar", "Calmar", "ratio"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("max_drawdown_bars", "Longest drawdown (bars)", "int"),
    ("win_rate", "Win rate", "pct"),
    ("profit_factor", "Profit factor", "ratio"),
    ("expectancy", "Expectancy per trade", "money"),
    ("avg_hold_bars", "Average hold (bars)", "one"),
    ("exposure", "Exposure", "pct"),
    ("turnover", "Turnover (traded / initial equity)", "ratio"),
    ("fees", "Fees", "money"),
    ("trades", "Trades", "int"),
    ("final_equity", "Final equity", "money"),
)
_SUMMARY_SECTIONS = frozenset(
    (
        "strategy",
        "benchmark",
        "attribution",
        "signal_accuracy",
        "signal_accuracy_baseline",
        "by_regime",
        "by_symbol",
        "var_backtest",
        "run",
    )
)
"""Summary keys drawn in their own section; any other key is listed with the run info."""
_SIGNED_KEYS = {"total_return", "cagr", "expectancy", "sharpe", "sortino", "calmar"}


def _render_body(
    *,
    title: str,
    summary: Mapping[str, Any],
    curve: EquityCurve,
    benchmark: EquityCurve,
    trades: Sequence[Trade],
    prices: Mapping[str, PriceTrack],
    command: str,
) -> str:
    strategy = _mapping(summary.get("strategy"))
    bench = _mapping(summary.get("benchmark"))
    run = _mapping(summary.get("run"))
    parts = [
        "<main>\n",
        f"<h1>{_e(title)}</h1>\n",
        _run_header(run, curve),
        _headline_section(strategy, bench, command),
        _signal_section(
            _mapping(summary.get("signal_accuracy")),
            _mapping(summary.get("signal_accuracy_baseline")),
        ),
        _equity_section(curve, benchmark),
        _monthly_section(curve),
        _attribution_section(_mapping(summary.get("attribution"))),
        _breakdown_section(
            "PnL per symbol",
            "Symbol",
            _mapping(summary.get("by_symbol")),
            _mapping(summary.get("signal_accuracy_baseline")),
        ),
        _breakdown_section(
            "PnL per regime (at entry)",
            "Regime",
            _mapping(summary.get("by_regime")),
            _mapping(summary.get("signal_accuracy_baseline")),
        ),
        _prices_section(prices, trades),
        _var_backtest_section(_mapping(summary.get("var_backtest"))),
        _run_section(run, {k: v for k, v in summary.items() if k not in _SUMMARY_SECTIONS}),
        "</main>\n",
    ]
    return "".join(parts)


def _run_header(run: Mapping[str, Any], curve: EquityCurve) -> str:
    bits: list[str] = []
    for key in ("data", "period", "timeframe"):
        if run.get(key) is not None:
            bits.append(f"{key}: {_plain(run[key])}")
    if len(curve):
        bits.append(
            f"{len(curve):,} bars, {_utc(int(curve.ts_ms[0]))} → {_utc(int(curve.ts_ms[-1]))}"
        )
    return f'<p class="sub">{_e(" · ".join(bits))}</p>\n' if bits else ""


def _headline_section(strategy: Mapping[str, Any], bench: Mapping[str, Any], command: str) -> str:
    known = [key for key, _, _ in _METRICS]
    extra = [k for k in [*strategy, *bench] if k not in known]
    rows: list[str] = []
    for key, label, kind in [*_METRICS, *((k, k, "auto") for k in dict.fromkeys(extra))]:
        cells = "".join(
            _td(
                _fmt(side.get(key), kind), _sign_class(side.get(key)) if key in _SIGNED_KEYS else ""
            )
            for side in (strategy, bench)
        )
        rows.append(f"<tr><td>{_e(label)}</td>{cells}</tr>")
    table = (
        "<table><thead><tr><th>Metric</th><th>Strategy</th><th>Benchmark</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return (
        "<section><h2>Headline: strategy vs benchmark</h2>"
        f'<div class="scroll">{table}</div>'
        f"<h3>Command</h3><pre>{_e(command)}</pre></section>\n"
    )


def _signal_section(accuracy: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    horizons = _horizons([accuracy, baseline])
    if not horizons:
        return ""
    rows = []
    for h in horizons:
        acc, base = _num(accuracy.get(h)), _num(baseline.get(h))
        edge = None if acc is None or base is None else (acc - base) * 100.0
        edge_text = DASH if edge is None else f"{edge:+.2f} pp"
        rows.append(
            f"<tr><td>+{_e(h)} {'bar' if h == '1' else 'bars'}</td>"
            f"{_td(_fmt(acc, 'pct'))}{_td(_fmt(base, 'pct'))}"
            f"{_td(edge_text, _sign_class(edge))}</tr>"
        )
    return (
        "<section><h2>Signal accuracy</h2>"
        "<table><thead><tr><th>Horizon</th><th>Signals</th><th>Baseline</th><th>Edge</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        '<p class="note">Share of signals whose forward return over the horizon had the '
        "signal's sign. Baseline: signalling every bar with the same long/short mix.</p>"
        "</section>\n"
    )


def _var_backtest_section(levels: Mapping[str, Any]) -> str:
    if not levels:
        return ""
    rows = []
    for level in _horizons([levels]):
        v = _mapping(levels[level])
        p = _num(v.get("kupiec_p"))
        rows.append(
            f"<tr><td>{_e(_fmt(_num(level), 'pct'))}</td>{_td(_fmt(v.get('observations'), 'int'))}"
            f"{_td(_fmt(v.get('exceedances'), 'int'))}{_td(_fmt(v.get('rate'), 'pct'))}"
            f"{_td(_fmt(v.get('expected_rate'), 'pct'))}{_td(_fmt(v.get('mean_var'), 'money'))}"
            f"{_td(_fmt(v.get('kupiec_lr'), 'ratio'))}"
            f"{_td(_fmt(p, 'ratio'), 'neg' if p is not None and p < 0.05 else '')}"
            f"{_td(_fmt(v.get('christoffersen_lr'), 'ratio'))}"
            f"{_td(_fmt(v.get('christoffersen_p'), 'ratio'))}</tr>"
        )
    return (
        "<section><h2>VaR backtest</h2>"
        "<table><thead><tr><th>VaR level</th><th>Bars</th><th>Exceedances</th><th>Rate</th>"
        "<th>Expected</th><th>Mean VaR</th><th>Kupiec LR</th><th>p</th>"
        "<th>Christoffersen LR</th><th>p</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        '<p class="note">Each bar the risk manager\'s one-bar VaR ([risk] var_method) of the '
        "book held at its close, against that book's P&amp;L over the next bar at the closes "
        "(no fills or fees); bars holding nothing are left out. An exceedance is a loss "
        "beyond the VaR. Kupiec: is the exceedance rate the expected one (p &lt; 0.05 rejects, "
        "in red); Christoffersen: does one exceedance make the next likelier.</p>"
        "</section>\n"
    )


def _equity_section(curve: EquityCurve, benchmark: EquityCurve) -> str:
    return (
        "<section><h2>Equity and drawdown</h2>"
        f"<figure>{_equity_chart(curve, benchmark)}</figure>"
        f"<figure>{_drawdown_chart(curve, benchmark)}</figure></section>\n"
    )


def _monthly_section(curve: EquityCurve) -> str:
    table = _monthly_table(curve)
    return (
        "<section><h2>Monthly returns (strategy)</h2>"
        f'<div class="scroll">{table}</div>'
        '<p class="note">From the equity curve at each month\'s last bar (UTC); the first month '
        "starts from the first bar's equity.</p></section>\n"
    )


_BRINSON_ROWS = (
    ("allocation", "Allocation (segment weights)"),
    ("selection", "Selection (within segments)"),
    ("interaction", "Interaction"),
    ("trading", "Trading (fills within the bar, fees)"),
    ("active_return", "Active return"),
    ("portfolio_return", "Strategy return"),
    ("benchmark_return", "Benchmark return"),
)


def _attribution_section(attribution: Mapping[str, Any]) -> str:
    if not attribution:
        return ""
    brinson = _mapping(attribution.get("brinson"))
    effects = "".join(
        f"<tr><td>{_e(label)}</td>"
        f"{_td(_fmt(brinson.get(key), 'pct'), _sign_class(brinson.get(key)))}</tr>"
        for key, label in _BRINSON_ROWS
    )
    strategies = _mapping(attribution.get("by_strategy"))
    clusters = {str(k): _num(v) for k, v in _mapping(attribution.get("by_cluster")).items()}
    pnl_rows = "".join(
        f"<tr><td>{_e(dimension)}</td><td>{_e(name)}</td>"
        f"{_td(_fmt(pnl, 'money'), _sign_class(pnl))}</tr>"
        for dimension, groups in (("Strategy", strategies), ("Cluster", clusters))
        for name, pnl in sorted(groups.items(), key=lambda kv: -(_num(kv[1]) or 0.0))
    )
    total, change = attribution.get("total_pnl"), attribution.get("equity_change")
    return (
        "<section><h2>Attribution</h2>"
        f'<div class="grid2"><figure>{_pnl_bar_chart(clusters)}</figure><div class="scroll">'
        "<table><thead><tr><th>Against the equal-weight benchmark</th><th>Sum over bars</th>"
        f"</tr></thead><tbody>{effects}</tbody></table>"
        "<table><thead><tr><th>By</th><th>Name</th><th>Net PnL</th></tr></thead>"
        f"<tbody>{pnl_rows}</tbody></table></div></div>"
        '<p class="note">Brinson-Fachler, per bar, segments = correlation clusters at that bar '
        "(a symbol in none is its own) and cash; the benchmark holds every priced symbol in "
        "equal weights, rebalanced each bar. Allocation + selection + interaction is the held "
        "book's return over the benchmark's; trading is what the bar's fills and fees added. "
        "Bar effects are summed (not linked). Net PnL by cluster at entry (chart), by "
        "strategy, and by symbol and regime in the sections below, each sums to "
        f"{_e(_fmt(total, 'money'))} (equity change {_e(_fmt(change, 'money'))}).</p>"
        "</section>\n"
    )


def _breakdown_section(
    heading: str, label: str, groups: Mapping[str, Any], baseline: Mapping[str, Any]
) -> str:
    if not groups:
        return f'<section><h2>{_e(heading)}</h2><p class="sub">No trades.</p></section>\n'
    stats = {str(name): _mapping(value) for name, value in groups.items()}
    horizons = _horizons([_mapping(s.get("signal_accuracy")) for s in stats.values()] + [baseline])
    head = "".join(f"<th>Acc. +{_e(h)}</th>" for h in horizons)
    rows: list[str] = []
    for name, s in sorted(stats.items(), key=lambda kv: -(_num(kv[1].get("pnl")) or 0.0)):
        acc = _mapping(s.get("signal_accuracy"))
        acc_cells = "".join(_accuracy_td(acc.get(h), baseline.get(h)) for h in horizons)
        pnl = s.get("pnl")
        rows.append(
            f"<tr><td>{_e(name)}</td>{_td(_fmt(s.get('trades'), 'int'))}"
            f"{_td(_fmt(pnl, 'money'), _sign_class(pnl))}{_td(_fmt(s.get('win_rate'), 'pct'))}"
            f"{acc_cells}</tr>"
        )
    if horizons:
        base_cells = "".join(_td(_fmt(baseline.get(h), "pct")) for h in horizons)
        rows.append(
            f'<tr class="base"><td>Baseline</td><td></td><td></td><td></td>{base_cells}</tr>'
        )
    table = (
        f"<table><thead><tr><th>{_e(label)}</th><th>Trades</th><th>PnL</th><th>Win rate</th>"
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    pnl_by_name = {name: _num(s.get("pnl")) for name, s in stats.items()}
    return (
        f"<section><h2>{_e(heading)}</h2>"
        f'<div class="grid2"><figure>{_pnl_bar_chart(pnl_by_name)}</figure>'
        f'<div class="scroll">{table}</div></div>'
        '<p class="note">Acc. +h: share of the signals whose forward return over h bars had '
        "the signal's sign; green above the baseline, red below it.</p>"
        "</section>\n"
    )


def _prices_section(prices: Mapping[str, PriceTrack], trades: Sequence[Trade]) -> str:
    if not prices:
        return ""
    figures = "".join(
        f"<figure>{_price_chart(symbol, track, trades)}</figure>"
        for symbol, track in prices.items()
    )
    return (
        "<section><h2>Prices, regimes and trades</h2>"
        '<p class="note">Background: regime on each bar. ▲ long entry, ▼ short entry, '
        "\N{MULTIPLICATION SIGN} exit; a dotted line joins each entry to its exit "
        "(green a gain, red a loss).</p>"
        f"{figures}</section>\n"
    )


def _run_section(run: Mapping[str, Any], other: Mapping[str, Any]) -> str:
    if not run and not other:
        return ""
    items = []
    for key, value in [*other.items(), *run.items()]:
        items.append(f"<dt>{_e(str(key))}</dt><dd>{_run_value(value)}</dd>")
    return f"<section><h2>Run</h2><dl>{''.join(items)}</dl></section>\n"


def _run_value(value: Any) -> str:
    """A scalar or a short flat list/mapping inline; anything bigger as JSON, folded."""
    scalars = (str, int, float, bool, type(None), np.integer, np.floating)
    if isinstance(value, Mapping) and len(value) <= 6:
        if all(isinstance(v, scalars) for v in value.values()):
            return _e(", ".join(f"{k}: {_fmt(v, 'auto')}" for k, v in value.items()) or "{}")
    elif isinstance(value, list | tuple) and all(isinstance(v, scalars) for v in value):
        return _e(", ".join(_fmt(v, "auto") for v in value))
    elif isinstance(value, scalars):
        return _e(_fmt(value, "auto"))
    text = json.dumps(value, indent=2, default=str, ensure_ascii=False)
    lines = text.count("\n") + 1
    return f"<details><summary>JSON, {lines} lines</summary><pre>{_e(text)}</pre></details>"


# --- tables ---------------------------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def monthly_returns(curve: EquityCurve) -> dict[tuple[int, int], float]:
    """(year, month) -> the strategy's return over that calendar month (UTC), as a fraction."""
    if len(curve) == 0:
        return {}
    months = curve.ts_ms.astype("datetime64[ms]").astype("datetime64[M]")
    last_of_month = np.flatnonzero(np.append(months[1:] != months[:-1], True))
    end_equity = curve.equity[last_of_month]
    start_equity = np.concatenate(([curve.equity[0]], end_equity[:-1]))
    out: dict[tuple[int, int], float] = {}
    for month, start, end in zip(months[last_of_month], start_equity, end_equity, strict=True):
        index = int(month.astype(np.int64))  # months since 1970-01
        ret = float(end / start - 1.0) if start > 0 else math.nan
        out[(1970 + index // 12, index % 12 + 1)] = ret
    return out


def _monthly_table(curve: EquityCurve) -> str:
    returns = monthly_returns(curve)
    if not returns:
        return '<p class="sub">No bars.</p>'
    finite = [abs(r) for r in returns.values() if math.isfinite(r)]
    scale = max([*finite, 1e-9])
    head = "".join(f"<th>{m}</th>" for m in _MONTHS)
    rows = []
    for year in sorted({y for y, _ in returns}):
        cells = []
        compounded = 1.0
        for month in range(1, 13):
            r = returns.get((year, month))
            if r is None:
                cells.append('<td class="m"></td>')
                continue
            compounded *= 1.0 + r if math.isfinite(r) else math.nan
            cells.append(_heat_td(r, scale))
        year_ret = compounded - 1.0
        rows.append(
            f"<tr><td>{year}</td>{''.join(cells)}"
            f"{_td(_fmt(year_ret, 'pct'), _sign_class(year_ret))}</tr>"
        )
    return (
        f"<table><thead><tr><th>Year</th>{head}<th>Total</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _heat_td(ret: float, scale: float) -> str:
    if not math.isfinite(ret):
        return f'<td class="m">{DASH}</td>'
    rgb = GAIN_RGB if ret >= 0 else LOSS_RGB
    alpha = 0.08 + 0.55 * min(1.0, abs(ret) / scale)
    style = f"background:rgba({rgb[0]},{rgb[1]},{rgb[2]},{alpha:.2f})"
    return f'<td class="m" style="{style}">{_e(_fmt(ret, "pct"))}</td>'


def _accuracy_td(value: Any, baseline: Any) -> str:
    acc, base = _num(value), _num(baseline)
    cls = (
        ""
        if acc is None or base is None
        else ("pos" if acc > base else "neg" if acc < base else "")
    )
    return _td(_fmt(acc, "pct"), cls)


def _td(text: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{_e(text)}</td>"


def _horizons(maps: Iterable[Mapping[str, Any]]) -> list[str]:
    keys = dict.fromkeys(str(k) for m in maps for k in m)
    return sorted(keys, key=lambda k: (0, float(k), "") if _is_number(k) else (1, 0.0, k))


# --- charts ---------------------------------------------------------------------------------


def _chart_style() -> AbstractContextManager[None]:
    """Our chart look, set for the report only (the caller's rcParams are left alone)."""
    return matplotlib.rc_context(
        {
            "svg.fonttype": "path",
            "font.size": 9.0,
            "axes.titlesize": 10.0,
            "axes.titleweight": "bold",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.color": "#e5e7eb",
            "grid.linewidth": 0.6,
            "legend.fontsize": 8.0,
            "legend.frameon": False,
            "timezone": "UTC",
        }
    )


def _new_figure(height_in: float) -> Figure:
    fig = Figure(figsize=(11.0, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata=_SVG_METADATA)
    text = buf.getvalue()
    # Drop the XML prolog and DOCTYPE: inline SVG in HTML starts at the <svg> element.
    return text[text.index("<svg") :]


def _dates(ts_ms: NDArray[np.int64]) -> NDArray[np.float64]:
    days = mdates.date2num(ts_ms.astype("datetime64[ms]"))  # type: ignore[no-untyped-call]
    return np.asarray(days, dtype=np.float64)


def _date_axis(ax: Any) -> None:
    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    concise = mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(concise)


def _legend_above(ax: Any, show: bool) -> None:
    """Legend in a row above the plot's top right, clear of the lines."""
    if show:
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, borderaxespad=0.2)


def _plot_line(ax: Any, x: NDArray[np.float64], y: NDArray[np.float64], **kwargs: Any) -> None:
    keep = minmax_indices(y, MAX_POINTS_PER_LINE)
    # A one-bar series draws no line: give it a marker so the point is visible.
    marker = "o" if keep.shape[0] == 1 else None
    ax.plot(x[keep], y[keep], marker=marker, **kwargs)


def _equity_chart(curve: EquityCurve, benchmark: EquityCurve) -> str:
    fig = _new_figure(3.6)
    ax = fig.add_subplot()
    if len(benchmark):
        _plot_line(
            ax,
            _dates(benchmark.ts_ms),
            benchmark.equity,
            color=BENCHMARK_COLOUR,
            linewidth=1.1,
            label="Benchmark",
        )
    if len(curve):
        _plot_line(
            ax,
            _dates(curve.ts_ms),
            curve.equity,
            color=STRATEGY_COLOUR,
            linewidth=1.4,
            label="Strategy",
        )
    ax.set_title("Equity (quote currency)", loc="left")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    _date_axis(ax)
    _legend_above(ax, len(curve) > 0 or len(benchmark) > 0)
    return _svg(fig)


def _drawdown_chart(curve: EquityCurve, benchmark: EquityCurve) -> str:
    fig = _new_figure(2.6)
    ax = fig.add_subplot()
    if len(benchmark):
        _plot_line(
            ax,
            _dates(benchmark.ts_ms),
            -100.0 * benchmark.drawdown,
            color=BENCHMARK_COLOUR,
            linewidth=1.0,
            label="Benchmark",
        )
    if len(curve):
        x, y = _dates(curve.ts_ms), -100.0 * curve.drawdown
        keep = minmax_indices(y, MAX_POINTS_PER_LINE)
        ax.fill_between(x[keep], y[keep], 0.0, color=STRATEGY_COLOUR, alpha=0.25, linewidth=0)
        _plot_line(ax, x, y, color=STRATEGY_COLOUR, linewidth=1.0, label="Strategy")
    ax.set_title("Drawdown from the running peak", loc="left")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f}%"))
    ax.set_ylim(top=0.5)
    _date_axis(ax)
    _legend_above(ax, len(curve) > 0 or len(benchmark) > 0)
    return _svg(fig)


def _pnl_bar_chart(pnl_by_name: Mapping[str, float | None]) -> str:
    items = sorted(((n, p) for n, p in pnl_by_name.items() if p is not None), key=lambda kv: kv[1])
    fig = Figure(figsize=(4.6, 0.7 + 0.3 * max(len(items), 2)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = [n for n, _ in items]
    values = [p for _, p in items]
    colours = [_hex(GAIN_RGB) if v >= 0 else _hex(LOSS_RGB) for v in values]
    bars = ax.barh(range(len(items)), values, color=colours, height=0.65)
    ax.bar_label(bars, labels=[_compact(v) for v in values], padding=3, fontsize=8)
    ax.margins(x=0.3)
    ax.set_yticks(range(len(items)), names)
    ax.axvline(0.0, color="#6b7280", linewidth=0.8)
    ax.grid(axis="y", visible=False)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _compact(v)))
    ax.set_title("Net PnL (after fees)", loc="left")
    return _svg(fig)


def _price_chart(symbol: str, track: PriceTrack, trades: Sequence[Trade]) -> str:
    fig = _new_figure(3.4)
    ax = fig.add_subplot()
    x = _dates(track.ts_ms)
    handles: list[Any] = []
    if x.shape[0]:
        for regime, spans in _regime_spans(x, track.regime).items():
            colour = REGIME_COLOURS.get(regime, OTHER_REGIME_COLOUR)
            verts = [((a, 0.0), (a, 1.0), (b, 1.0), (b, 0.0)) for a, b in spans]
            ax.add_collection(
                PolyCollection(
                    verts,
                    facecolors=colour,
                    alpha=0.14,
                    linewidths=0,
                    transform=ax.get_xaxis_transform(),
                ),
                autolim=False,
            )
            handles.append(Patch(facecolor=colour, alpha=0.35, label=regime))
        _plot_line(ax, x, track.close, color="#1f2937", linewidth=1.0)
        handles.insert(0, Line2D([], [], color="#1f2937", linewidth=1.0, label="Close"))
    mine = [t for t in trades if t.symbol == symbol]
    if mine:
        entry_x = _dates(np.array([t.entry_ts_ms for t in mine], dtype=np.int64))
        exit_x = _dates(np.array([t.exit_ts_ms for t in mine], dtype=np.int64))
        segments = [
            ((ex, t.entry_price), (xx, t.exit_price))
            for ex, xx, t in zip(entry_x, exit_x, mine, strict=True)
        ]
        ax.add_collection(
            LineCollection(
                segments,
                colors=[_hex(GAIN_RGB) if t.pnl >= 0 else _hex(LOSS_RGB) for t in mine],
                linewidths=0.9,
                linestyles=":",
            ),
            autolim=False,
        )
        for side, marker, colour, label in (
            ("LONG", "^", LONG_COLOUR, "Long entry"),
            ("SHORT", "v", SHORT_COLOUR, "Short entry"),
        ):
            picked = [i for i, t in enumerate(mine) if t.side.upper() == side]
            if picked:
                ax.scatter(
                    entry_x[picked],
                    [mine[i].entry_price for i in picked],
                    marker=marker,
                    s=64,
                    color=colour,
                    edgecolors="white",
                    linewidths=0.5,
                    zorder=4,
                    label=label,
                )
                handles.append(
                    Line2D([], [], marker=marker, color=colour, linestyle="", label=label)
                )
        ax.scatter(
            exit_x,
            [t.exit_price for t in mine],
            marker="x",
            s=44,
            color=EXIT_COLOUR,
            linewidths=1.1,
            zorder=5,
        )
        handles.append(Line2D([], [], marker="x", color=EXIT_COLOUR, linestyle="", label="Exit"))
    if x.shape[0]:
        # A little room on the right so an exit on the last bar is not cut in half.
        span = max(float(x[-1] - x[0]), 1.0 / 24.0)
        ax.set_xlim(x[0], x[0] + span * 1.01)
    ax.set_title(f"{symbol}: close, regime and trades ({len(mine)})", loc="left")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.6g}"))
    _date_axis(ax)
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.5)
    return _svg(fig)


def _regime_spans(
    x: NDArray[np.float64], regime: Sequence[str | None] | NDArray[Any]
) -> dict[str, list[tuple[float, float]]]:
    """Regime -> [(start, end)] runs of consecutive bars; a run ends where the next one starts."""
    labels = ["" if r is None else str(r) for r in regime]
    n = len(labels)
    changes = sum(1 for i in range(1, n) if labels[i] != labels[i - 1])
    # Too many runs for one chart: read the regime every `stride` bars instead of on each bar.
    stride = 1 if changes <= MAX_POINTS_PER_LINE else math.ceil(n / MAX_POINTS_PER_LINE)
    at = range(0, n, stride)
    starts = [k for k in range(len(at)) if k == 0 or labels[at[k]] != labels[at[k - 1]]]
    bar = float(np.median(np.diff(x))) if n > 1 else 1.0 / 24.0
    spans: dict[str, list[tuple[float, float]]] = {}
    for a, k in enumerate(starts):
        label = labels[at[k]]
        if not label:
            continue
        end = float(x[at[starts[a + 1]]]) if a + 1 < len(starts) else float(x[-1]) + bar
        spans.setdefault(label, []).append((float(x[at[k]]), end))
    order = {name: k for k, name in enumerate(REGIME_COLOURS)}
    return dict(sorted(spans.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def minmax_indices(values: NDArray[np.float64], max_points: int) -> NDArray[np.intp]:
    """Sorted indices to plot ``values`` with at most ~``max_points`` points.

    Every index when the series is short enough; otherwise the first and last point and, in
    each of ``max_points // 2`` equal buckets, the index of its lowest and of its highest value.
    """
    n = int(values.shape[0])
    if n <= max_points:
        return np.arange(n, dtype=np.intp)
    buckets = max(1, (max_points - 2) // 2)
    width = math.ceil(n / buckets)
    padded = np.concatenate((values, np.full(buckets * width - n, values[-1])))
    finite = np.where(np.isfinite(padded), padded, np.nan).reshape(buckets, width)
    safe_low = np.where(np.isnan(finite), np.inf, finite)
    safe_high = np.where(np.isnan(finite), -np.inf, finite)
    offsets = np.arange(buckets, dtype=np.intp) * width
    picked = np.concatenate(
        ([0, n - 1], offsets + np.argmin(safe_low, axis=1), offsets + np.argmax(safe_high, axis=1))
    )
    return np.unique(np.minimum(picked, n - 1)).astype(np.intp)


# --- formatting -----------------------------------------------------------------------------


def _fmt(value: Any, kind: str) -> str:
    """Text for one table cell; None, NaN and missing values read as a dash."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    number = _num(value)
    if number is None:
        return _plain(value)
    if math.isnan(number):
        return DASH
    if math.isinf(number):
        return "∞" if number > 0 else "\N{MINUS SIGN}∞"
    if abs(number) >= 1e9 or (kind == "pct" and abs(number) >= 1e5):
        # An annualised figure over a few days can reach 1e12 %: three digits say enough.
        return f"{number * 100.0:.3g}%" if kind == "pct" else f"{number:.3g}"
    formats: dict[str, Callable[[float], str]] = {
        "pct": lambda v: f"{v * 100.0:,.2f}%",
        "ratio": lambda v: f"{v:,.2f}",
        "money": lambda v: f"{v:,.2f}",
        "int": lambda v: f"{v:,.0f}",
        "one": lambda v: f"{v:,.1f}",
    }
    if kind in formats:
        text = formats[kind](number)
    elif isinstance(value, int | np.integer):
        text = f"{int(number):,}"
    else:
        text = f"{number:,.6g}"
    # A value that rounds to zero reads as 0, not -0.00.
    return text[1:] if re.fullmatch(r"-[0.,]+%?", text) else text


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    return float(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sign_class(value: Any) -> str:
    number = _num(value)
    if number is None or not math.isfinite(number) or number == 0:
        return ""
    return "pos" if number > 0 else "neg"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _plain(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _compact(value: float) -> str:
    """Short text for a chart label: 1,234 -> 1.23k, 2,500,000 -> 2.5M, 12.345 -> 12.35."""
    size = abs(value)
    for bound, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if size >= bound:
            return f"{value / bound:.3g}{suffix}"
    return f"{value:.2f}".rstrip("0").rstrip(".") if size else "0"


def _utc(ts_ms: int) -> str:
    return str(np.datetime64(ts_ms, "ms").astype("datetime64[m]")).replace("T", " ") + " UTC"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _e(text: str) -> str:
    return html.escape(text, quote=True)
