"""Keep secrets out of logs and API answers."""

from __future__ import annotations

import re

_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def redact_url(url: str) -> str:
    """``scheme://user:***@host/db`` — a URL safe to log."""
    return _URL_PASSWORD.sub(r"\1***@", url)


def redact(value: str) -> str:
    """A hint of which key this is (first 3 characters), never the key."""
    return f"{value[:3]}***" if len(value) > 6 else "***"
