"""Risk: what stands between the strategy and the router.

Owns the risk manager (pre-trade checks as plain functions returning a refusal reason, exposure
including orders in flight, the ACTIVE / REDUCING / HALTED trading state, kill switches) and
value at risk (``var``).
"""
