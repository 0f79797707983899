"""Portfolio construction: the allocator between the strategy and the risk manager (equal
weight, inverse volatility, risk parity on a shrunk covariance), correlation clusters, the
beta hedge and the rebalancing rule."""
