"""The processes a benchmark run owns: emulators, a Prefect server, and measuring them.

Everything is started in its own session (process group) and stopped by its pid, so a benchmark
never leaves a server behind and never touches a process it did not start. CPU and memory come
from ``/proc`` (Linux), which needs no extra package and can read a whole process tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from bananaflow.config import EmulatorSettings
from bananaflow.emulator.control import EmulatorControl

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PREFECT_QUIET = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- /proc


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces; everything after its closing paren is fixed.
    return raw[raw.rindex(")") + 2 :].split()


def tree_pids(root: int) -> list[int]:
    """``root`` and every live descendant (uvicorn workers, ephemeral servers, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pid: int, *, tree: bool = True) -> float:
    """User + system CPU of a process (and its live descendants and reaped children)."""
    total = 0.0
    for p in tree_pids(pid) if tree else [pid]:
        fields = _stat_fields(p)
        if fields:
            # utime stime cutime cstime are fields 14-17 of stat; here index 11-14.
            total += sum(int(x) for x in fields[11:15]) / CLOCK_TICKS
    return total


def self_cpu() -> float:
    """This process's CPU (all threads), the measure for the in-process peers."""
    return time.process_time()


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """This process's peak resident set since it started (``VmHWM``).

    Not ``ru_maxrss``: Linux carries that over from the parent across fork + exec, so a child
    of a big benchmark process would report the parent's size as its own peak.
    """
    return _status_mb("VmHWM")


def rss_mb() -> float:
    """This process's resident set now (``VmRSS``)."""
    return _status_mb("VmRSS")


# ----------------------------------------------------------------------------- processes


@dataclass
class Child:
    """A process we started in its own session; stopped by pid (its group) on exit."""

    proc: subprocess.Popen[str]
    name: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        if self.proc.stdin:
            self.proc.stdin.close()

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def spawn(name: str, cmd: list[str], env: dict[str, str], workdir: Path) -> Child:
    log = workdir / f"{name}.log"
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        start_new_session=True,
    )
    return Child(proc, name, log)


@dataclass
class EmulatorProcess:
    """An emulator in a subprocess (``emulator_proc``), its cache warmed with ``warm`` items."""

    name: str
    settings: EmulatorSettings
    warm: list[list[str]] = field(default_factory=list)
    child: Child | None = None
    url: str = ""
    control: EmulatorControl | None = None
    rendered_at_start: int = 0

    def start(self, workdir: Path) -> EmulatorProcess:
        spec = workdir / f"{self.name}.json"
        spec.write_text(
            json.dumps({"settings": self.settings.model_dump(mode="json"), "warm": self.warm})
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "benchmarks.emulator_proc", str(spec)]
        self.child = spawn(self.name, cmd, env, workdir)
        return self

    def wait_ready(self, timeout: float = 600.0) -> EmulatorProcess:
        assert self.child is not None and self.child.proc.stdout is not None
        ready, _, _ = select.select([self.child.proc.stdout], [], [], timeout)
        line = self.child.proc.stdout.readline() if ready else ""
        if not line.startswith("READY "):
            raise RuntimeError(f"emulator {self.name} did not start:\n{self.child.tail()}")
        parts = line.split()
        self.url = parts[1]
        self.rendered_at_start = int(parts[2].split("=")[1])
        self.control = EmulatorControl(self.url, timeout=120)
        return self

    @property
    def pid(self) -> int:
        assert self.child is not None
        return self.child.pid

    def reset(self) -> None:
        assert self.control is not None
        self.control.reset()

    def stats(self) -> dict[str, Any]:
        assert self.control is not None
        return self.control.stats()

    def generation_log(self) -> list[dict[str, Any]]:
        """Image ``generateContent`` calls since the last reset, in start order."""
        assert self.control is not None
        entries = [
            e
            for e in self.control.requests()
            if e.get("operation") == "generateContent" and "image_size" in e
        ]
        return sorted(entries, key=lambda e: e["t"])

    def stop(self) -> None:
        if self.control is not None:
            self.control.close()
        if self.child is not None:
            self.child.stop()


class PrefectServer:
    """``prefect server start`` on a free loopback port with a throwaway home (SQLite).

    One server for the whole run so that the subprocess measurements (peak RSS, scaling) talk
    to the same API as the in-process ones instead of each starting an ephemeral server. It is
    always its own server, even when ``PREFECT_API_URL`` names one (CI's): the server's CPU per
    image is one of the figures, and only a child process's CPU can be read from ``/proc``.
    """

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.child: Child | None = None
        self.url = ""
        self.started_s = 0.0

    def start(self) -> PrefectServer:
        port = free_port()
        home = Path(tempfile.mkdtemp(prefix="prefect-home-", dir=self.workdir))
        env = {**os.environ, **PREFECT_QUIET, "PREFECT_HOME": str(home)}
        env.pop("PREFECT_API_URL", None)
        prefect = str(Path(sys.executable).with_name("prefect"))
        cmd = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        self._t0 = time.monotonic()
        self.child = spawn("prefect-server", cmd, env, self.workdir)
        self.url = f"http://127.0.0.1:{port}/api"
        return self

    def wait_ready(self, timeout: float = 180.0) -> PrefectServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.child is not None and self.child.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited:\n{self.child.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        if self.child is not None:
                            self.started_s = time.monotonic() - self._t0
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prefect server not healthy at {self.url}")

    def cpu(self) -> float:
        return cpu_seconds(self.child.pid) if self.child is not None else float("nan")

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


class Processes:
    """Stops everything it was given, in reverse order, whatever happened."""

    def __init__(self) -> None:
        self._items: list[Any] = []

    def add(self, item: Any) -> Any:
        self._items.append(item)
        return item

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for item in reversed(self._items):
            try:
                item.stop()
            except Exception as err:  # stopping must go on for the others
                print(f"warning: could not stop {item!r}: {err}", file=sys.stderr)
