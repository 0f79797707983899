"""Exchange API credentials, read from the environment; their values never print.

``BINANCE_API_KEY``, ``BINANCE_SECRET_KEY`` (and ``BINANCE_PASSPHRASE`` where the exchange has
one), and the same for every name in ``EXCHANGES``. A leaf: ``config`` reads ``Secrets`` and the
ccxt clients take ``Credentials``, so neither needs the other.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from quantumtrade.redaction import redact

EXCHANGES = ("binance", "coinbase", "kraken", "kucoin", "okx")
"""The exchanges whose keys are read from the environment (ccxt_source's ``EXCHANGE_IDS``)."""


class Credentials(msgspec.Struct, frozen=True):
    api_key: str
    secret: str
    password: str = ""
    """The API passphrase some exchanges need (KuCoin, OKX): ``<EXCHANGE>_PASSPHRASE``."""

    def __repr__(self) -> str:
        return f"Credentials(api_key='{redact(self.api_key)}', secret='***')"

    __str__ = __repr__


class Secrets:
    """Exchange credentials from the environment; values never appear in repr or logs."""

    def __init__(self, credentials: Mapping[str, Credentials]) -> None:
        self._credentials = dict(credentials)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Secrets:
        found: dict[str, Credentials] = {}
        for exchange in EXCHANGES:
            key = environ.get(f"{exchange.upper()}_API_KEY", "")
            secret = environ.get(f"{exchange.upper()}_SECRET_KEY", "")
            password = environ.get(f"{exchange.upper()}_PASSPHRASE", "")
            if key or secret:
                found[exchange] = Credentials(api_key=key, secret=secret, password=password)
        return cls(found)

    def get(self, exchange: str) -> Credentials | None:
        return self._credentials.get(exchange)

    def exchanges(self) -> list[str]:
        return sorted(self._credentials)

    def __repr__(self) -> str:
        return f"Secrets(exchanges={self.exchanges()})"
