"""Backtest: the daemon's own decision path over history on a data-driven clock.

Owns the runner (candles in, the trading core stepped bar by bar), the trade ledger and equity
curve, the performance metrics, the attribution (PnL by strategy, symbol, regime and cluster;
Brinson-Fachler against the equal-weight benchmark) and the HTML report. May import every
domain package; nothing in the daemon imports it.
"""
