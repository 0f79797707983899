"""The admin API: the embedded aiohttp server (``server``) on 127.0.0.1 by default.

Owns the HTTP routes (``/health``, ``/metrics``, the seed's ``/api/trading/...`` endpoints, the
OpenAPI document) and the bearer-token check on POSTs. It reads and commands the components
``app`` hands it; it builds none of them.
"""
