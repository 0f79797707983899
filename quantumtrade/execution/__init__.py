"""Execution: getting orders filled.

Owns the ``Venue`` protocol and the venues (paper against the book, ``bar_fill`` for next-bar
fills, ccxt with one adapter per exchange), the order router (cost ranking and splits), order
tracking for the admin API, and reconciliation of the event log with what the venues hold.
"""
