"""Client for the emulator's control plane, for tests and the CLI.

Sync on purpose: tests call it between steps, and an async test can still call it (it is quick).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

from bananaflow.emulator.control_api import PREFIX
from bananaflow.tls import tls_context


class EmulatorControl:
    def __init__(self, url: str, *, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url + PREFIX, timeout=timeout, verify=tls_context()
        )

    def stats(self) -> dict[str, Any]:
        return self._get("/stats")

    def requests(self) -> list[dict[str, Any]]:
        return self._get("/requests")

    def pending_faults(self) -> list[dict[str, Any]]:
        return self._get("/faults")

    def reset(self) -> None:
        """Clear stats, the request log, queued faults and quota windows (tokens stay valid)."""
        self._client.post("/reset").raise_for_status()

    def force(
        self,
        fault: str,
        count: int = 1,
        backend: str | None = None,
        operation: str | None = None,
        after: int = 0,
        **params: Any,
    ) -> None:
        """Queue ``fault`` for the next ``count`` matching requests (see ``faults.ALL_FAULTS``),
        once ``after`` matching requests have passed untouched."""
        r = self._client.post(
            "/faults",
            json={
                "fault": fault,
                "count": count,
                "backend": backend,
                "operation": operation,
                "params": params,
                "after": after,
            },
        )
        if r.status_code == 400:
            raise ValueError(r.json().get("error", r.text))
        r.raise_for_status()

    def set_token_prefix(self, prefix: str) -> None:
        """Tokens issued from now on start with ``prefix`` (e.g. a canary for secret scans)."""
        r = self._client.post("/token-prefix", json={"prefix": prefix})
        if r.status_code == 400:
            raise ValueError(r.json().get("error", r.text))
        r.raise_for_status()

    def _get(self, path: str) -> Any:
        r = self._client.get(path)
        r.raise_for_status()
        return r.json()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> EmulatorControl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
