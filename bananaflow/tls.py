"""One TLS context per process, shared by every httpx client bananaflow opens.

httpx builds a context per client unless given one, parsing the CA bundle again each time:
about 40 ms of CPU, paid by every run's backends and every emulator control client. The
context is read-only once built, so sharing it is what httpx's own docs suggest.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()
