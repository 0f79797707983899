"""Strategies: what turns the scan's features and the book into target positions.

Owns the ``Strategy`` protocol and what it sees and returns (``base``), the exits and
protections every strategy gets (``exits``), the built-ins (``builtin``: ``trend``,
``mean_reversion``, ``breakout``, ``regime_adaptive``), the loader that picks a built-in or a
user's ``module:Class`` from ``[strategy]`` (``loader``), and the engine that runs one in the
trading core and trades the difference between target and position (``engine``).
"""
