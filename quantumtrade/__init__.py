"""QuantumTrade: an asyncio crypto trading daemon.

One process, one event loop, one typed bus. Each package's ``__init__`` says what it owns;
docs/architecture.md ("Packages and what they may import") says what each may import, and
tests/unit/test_import_graph.py checks it.
"""

import os

# numba's parallel kernels (scoring, regimes, data validation, the synthetic market) are called
# from the event loop thread only. On a small shared box (2 cores, other processes busy) the
# OpenMP layer's barriers made them 3-5x slower than numba's own "workqueue" layer (measured
# with scripts/bench/orchestrator.py); workqueue is not safe for parallel kernels launched from
# several threads at once, which we never do. An explicit NUMBA_THREADING_LAYER still wins.
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
