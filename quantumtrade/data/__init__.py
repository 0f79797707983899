"""Market data: everything between a feed and ``MarketState``.

Owns the ``Source`` protocol and its feeds (synthetic market, candle-file replay, ccxt), bar
validation, ``MarketState`` (the numpy columns every kernel reads), the orchestrator's fetch
workers and regime-priority schedule, the market-data caches, and ``factory``, which builds the
configured source from ``AppConfig``.
"""
