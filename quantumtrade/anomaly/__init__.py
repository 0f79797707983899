"""Live anomaly detection: per-symbol robust scores of every new bar (and ticker).

Owns the anomaly kinds and their config (``model.py``, no numba), the kernel that advances
every symbol of a ``BarsUpdated`` batch by its new bars (``kernels.py``) and the detector that
keeps the state rows, publishes ``AnomalyDetected`` / ``AnomalyCleared`` and answers which
anomalies are active (``detector.py``). The risk manager reads only the events.
"""
