"""Market regime engine: per-symbol and market-wide regime labels with confidence."""
