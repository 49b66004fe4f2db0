"""Running the emulator: in a background thread (tests, embedded mode) or in the foreground (CLI).

The socket is bound before uvicorn starts, so port 0 resolves to a real port and ``url`` is
known immediately, with no race between picking a free port and binding it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from types import TracebackType

import uvicorn

from bananaflow.config import EmulatorSettings
from bananaflow.emulator.app import create_app
from bananaflow.emulator.pipeline import DroppedConnection
from bananaflow.emulator.state import EmulatorState

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


class _QuietResets(logging.Filter):
    """The ``reset`` fault drops connections on purpose; uvicorn would log each as an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not _contains_dropped(exc)


def _contains_dropped(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    if isinstance(exc, DroppedConnection):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_contains_dropped(e) for e in exc.exceptions)
    return _contains_dropped(exc.__cause__ or exc.__context__)


_filter_lock = threading.Lock()
_filter_installed = False


def _install_log_filter() -> None:
    global _filter_installed
    with _filter_lock:
        if not _filter_installed:
            logging.getLogger("uvicorn.error").addFilter(_QuietResets())
            _filter_installed = True


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    return f"http://{shown}:{port}"


def _config(server_app: object) -> uvicorn.Config:
    # log_config=None: don't let uvicorn reconfigure the host process's logging.
    return uvicorn.Config(
        server_app,  # type: ignore[arg-type]
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )


class EmulatorServer:
    """uvicorn on loopback in a daemon thread; ``with EmulatorServer(s) as server: server.url``."""

    def __init__(self, settings: EmulatorSettings):
        self.settings = settings
        self.app = create_app(settings)
        self.host = settings.host
        self.port = settings.port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        return _url(self.host, self.port)

    @property
    def state(self) -> EmulatorState:
        """In-process access to counters and queues (the HTTP control plane is the public way)."""
        return self.app.state.emulator

    def start(self) -> EmulatorServer:
        if self._thread is not None:
            return self
        _install_log_filter()
        self._sock = _bind(self.host, self.port)
        self.port = self._sock.getsockname()[1]
        self._server = uvicorn.Server(_config(self.app))
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name=f"bananaflow-emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"emulator failed to start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _ForegroundServer(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM after shutting down; the CLI wants a clean exit instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def serve_forever(settings: EmulatorSettings) -> None:
    """Serve in the foreground until Ctrl-C or SIGTERM (uvicorn handles both in the main thread)."""
    _install_log_filter()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sock = _bind(settings.host, settings.port)
    url = _url(settings.host, sock.getsockname()[1])
    print(f"bananaflow emulator listening on {url}", flush=True)
    print(
        f"  Gemini API: {url}/v1beta/models/<model>:generateContent (x-goog-api-key: one of "
        f"emulator.api_keys)\n"
        f"  Vertex AI:  {url}/v1/projects/{settings.project}/locations/global/publishers/google/"
        f"models/<model>:generateContent (bearer from {url}/token)\n"
        f"  models:     GET {url}/v1beta/models[/<model>], POST .../<model>:countTokens\n"
        f"  control:    {url}/_emulator/stats | /requests | /reset | /faults\n"
        "  Ctrl-C to stop.",
        flush=True,
    )
    server = _ForegroundServer(_config(create_app(settings)))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    print("bananaflow emulator stopped", flush=True)
