"""Remote-store calls retried through an outage, within a deadline; final answers are not.

A remote store (gs://) that stops answering is retried by gcsfs itself for ~33 s per call; on
top of that each call gets a few more tries within this budget, so an outage of a minute or
two (a restarted emulator, a GCS blip) delays a run instead of failing paid-for work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("bananaflow")
T = TypeVar("T")


# A remote store (gs://) that stops answering is retried by gcsfs itself for ~33 s per call;
# on top of that each call gets a few more tries within this budget, so an outage of a minute
# or two (a restarted emulator, a GCS blip) delays a run instead of failing paid-for work.
REMOTE_RETRY_DEADLINE_S = 90.0
REMOTE_RETRY_FIRST_WAIT_S = 0.5
REMOTE_RETRY_MAX_WAIT_S = 8.0
# Answers, not outages: retrying them cannot change the outcome.
_FINAL_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


def is_transient_storage_error(err: BaseException) -> bool:
    """Connection refused/reset, timeouts and 5xx-like failures; never a definite answer."""
    if isinstance(err, _FINAL_ERRORS):
        return False
    if isinstance(err, OSError | TimeoutError | asyncio.TimeoutError | ConnectionError):
        return True
    # gcsfs raises its own HttpError for HTTP failures it gave up on; 5xx/408/429 are outages.
    code = getattr(err, "code", None)
    return (
        type(err).__name__ == "HttpError"
        and isinstance(code, int)
        and (code >= 500 or code in (408, 429))
    )


def retry_transient(
    fn: Callable[[], T],
    what: str,
    *,
    deadline_s: float = REMOTE_RETRY_DEADLINE_S,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` until it succeeds, fails for good, or ``deadline_s`` would be overrun."""
    started = time.monotonic()
    wait = REMOTE_RETRY_FIRST_WAIT_S
    while True:
        try:
            return fn()
        except Exception as err:
            if not is_transient_storage_error(err):
                raise
            if time.monotonic() - started + wait > deadline_s:
                raise
            log.warning(
                "storage: %s failed (%s: %s); retrying in %.1f s",
                what,
                err.__class__.__name__,
                short_error(err, 120),
                wait,
            )
            sleep(wait)
            wait = min(wait * 2, REMOTE_RETRY_MAX_WAIT_S)


def short_error(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
