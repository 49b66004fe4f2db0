"""An ephemeral Prefect API for one CLI run, in its own session.

Prefect's own ephemeral server is a child in the CLI's process group, so a terminal's Ctrl-C
reaches it too and the API vanishes while the run is saving what it already paid for. This
one is started in a session of its own (the same uvicorn app, the same settings Prefect's
ephemeral mode uses) and stopped when the run ends; Ctrl-C then reaches only the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from bananaflow.errors import BananaflowError
from bananaflow.tls import tls_context

STARTUP_S = 90.0
# Started in its own session, the API would outlive a CLI killed with SIGKILL: on Linux the
# kernel ends it with its parent (PR_SET_PDEATHSIG), then the command line is exec'd as is.
_DIE_WITH_PARENT = """
import ctypes, os, signal, sys
parent = int(sys.argv[1])
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
except (OSError, AttributeError):
    pass
if os.getppid() != parent:
    sys.exit(0)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def ephemeral_api() -> Iterator[str | None]:
    """Yield the API URL for this run; None when ``PREFECT_API_URL`` already names a server."""
    if os.environ.get("PREFECT_API_URL"):
        yield None
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _DIE_WITH_PARENT,
            str(os.getpid()),
            "-m",
            "uvicorn",
            "--factory",
            "prefect.server.api.server:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # a terminal's Ctrl-C goes to the run, not to its API
    )
    try:
        _wait_healthy(url, proc)
        os.environ["PREFECT_API_URL"] = url
        yield url
    finally:
        _drain_prefect()
        os.environ.pop("PREFECT_API_URL", None)
        _stop(proc)


def _drain_prefect() -> None:
    """Send Prefect's queued logs and events while their API is still there (else each one
    ends as "Error logging to API" on the terminal after the summary)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            service.drain_all(timeout=10)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll with one client on the process's one TLS context (``bananaflow.tls``): each bare
    ``httpx.get`` builds a context of its own (the CA bundle parsed again, tens of ms of CPU),
    and a cold API takes dozens of polls."""
    deadline = time.monotonic() + STARTUP_S
    with httpx.Client(timeout=2, verify=tls_context()) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BananaflowError(
                    f"the ephemeral Prefect API exited with code {proc.returncode}; "
                    "check PREFECT_HOME is writable, or set PREFECT_API_URL to a running server"
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}/health").status_code == 200:
                    return
            time.sleep(0.2)
    raise BananaflowError(
        f"the ephemeral Prefect API did not answer within {STARTUP_S:.0f} s; "
        "set PREFECT_API_URL to a running server"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
