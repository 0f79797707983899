"""Scoring: indicators and the scan.

Owns the numba machinery every kernel module shares (the one set of jit flags, the intrinsics
numba lacks, serial twins), the indicator kernels over (symbols, bars) arrays (TA-Lib-exact
per-indicator references and the fused production pass) with the thin checked Python in front
of them, their bar-by-bar incremental form, and the scanner, which scores, filters and ranks
every symbol and publishes ``ScanCompleted``.
"""
