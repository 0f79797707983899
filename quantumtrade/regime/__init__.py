"""Market regimes: per-symbol and market-wide labels with a confidence.

Owns the regime model (TRENDING, RANGING, VOLATILE, BREAKOUT; its features, fitted parameters
and config) and the numba kernels that compute it, classification and per-symbol tracking with
a minimum dwell, the daemon's detector (keeps every symbol's regime current, publishes
``RegimeChanged``) and the evaluation against labelled markets (``quantumtrade regime``).
"""
