"""Caches, generic over what they hold: L1 in memory, and read-through over Redis as L2.

Owns ``l1`` (TTL on the injected clock, LRU bound, single-flight) and ``tiered`` (L1, then
Redis behind a circuit breaker, then the loader). What is cached under which key is decided by
the users (``data``, ``execution``).
"""
