"""The audit trail of a run: ``runs/{run_id}/manifest.jsonl``, one row per job, durable per row.

Durability comes first: a row is on disk (or in the bucket) when ``append`` returns, so a worker
killed right after an image was uploaded still leaves the proof that it was paid for. Local
stores append one line and fsync (a reused job's row, which records nothing paid, is synced with
the next paid row or at ``close``). Object stores cannot append, and rewriting one growing object
per row would cost O(n^2) bytes and race between workers, so each row is its own object under
``runs/{run_id}/rows/`` and ``close()`` assembles ``manifest.jsonl`` from them.

What a job cost and where its image is, across runs, is the ledger's (``bananaflow.ledger``).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from pydantic import ValidationError

from bananaflow.errors import BananaflowError, InputError
from bananaflow.records import ManifestRow
from bananaflow.storage import Store, check_relative

log = logging.getLogger("bananaflow")

_FETCH = 256  # row objects read at once while a manifest is assembled


def manifest_path(run_id: str) -> str:
    return f"runs/{_segment(run_id, 'run_id')}/manifest.jsonl"


def _rows_dir(run_id: str) -> str:
    return f"runs/{_segment(run_id, 'run_id')}/rows"


def _segment(value: str, what: str) -> str:
    """One path segment; ids go into object names, so they must not contain '/' or '..'."""
    if "/" in value:
        raise InputError(what, f"{value!r} contains '/'", fix="use one path segment")
    return check_relative(value, field=what)


def _row_object(run_id: str, job_id: str) -> str:
    # job ids are normally hashes; quoting keeps any other id a single, reversible segment.
    return f"{_rows_dir(run_id)}/{quote(job_id, safe='')}.json"


def _latest_per_job(rows: Iterable[ManifestRow]) -> list[ManifestRow]:
    """Latest row per job_id, in the order each job first appeared (dicts keep first position)."""
    latest: dict[str, ManifestRow] = {}
    for row in rows:
        latest[row.job_id] = row
    return list(latest.values())


class ManifestWriter:
    """Appends one row per job event; thread-safe, durable per call (a reused job's row: by the
    next paid row or ``close``), idempotent ``close``.

    A row that cannot be written (storage down past its retries) is kept in memory and written
    before the next one and at ``close``: one failed write must not sink a batch whose images
    are already paid for, and ``close`` fails loudly if the rows still cannot be written.
    """

    def __init__(self, store: Store, run_id: str):
        self.store = store
        self.run_id = run_id
        self.path = manifest_path(run_id)
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[str, bool]] = {}  # job id -> (line, fsync it), in order
        self._unsynced = False  # lines appended without their fsync since the last one

    @property
    def pending(self) -> int:
        """Rows waiting for storage to come back."""
        return len(self._pending)

    def append(self, row: ManifestRow) -> None:
        if row.run_id != self.run_id:
            raise ValueError(f"row of run {row.run_id!r} appended to manifest of {self.run_id!r}")
        line = row.model_dump_json() + "\n"
        # A reused job's row records nothing paid for in this run: lost in a crash, the next
        # run reuses the job again. It is synced with the next paid row, or at ``close``.
        sync = row.reused_from_run is None
        with self._lock:
            self._pending.pop(row.job_id, None)  # a newer row replaces an unwritten older one
            self._pending[row.job_id] = (line, sync)
            try:
                self._flush()
            except Exception as err:
                log.warning(
                    "manifest: %d row(s) of run %s not written yet (%s: %s); kept for retry",
                    len(self._pending),
                    self.run_id,
                    err.__class__.__name__,
                    err,
                )

    def _flush(self) -> None:
        """Write pending rows in order; stop at the first failure (the caller holds the lock)."""
        while self._pending:
            job_id, (line, sync) = next(iter(self._pending.items()))
            if self.store.can_append:
                self.store.append(self.path, line.encode("utf-8"), sync=sync)
                self._unsynced = not sync
            else:
                self.store.write_text(_row_object(self.run_id, job_id), line)
            del self._pending[job_id]

    def close(self) -> str:
        """Rewrite ``manifest.jsonl`` as one line per job (its latest row); returns its URI."""
        with self._lock:
            try:
                self._flush()
            except Exception as err:
                raise BananaflowError(
                    f"manifest of run {self.run_id}: {len(self._pending)} row(s) could not be "
                    f"written to {self.store.url} ({err.__class__.__name__}: {err}); "
                    "re-run the same batch once storage is back: finished images are reused"
                ) from None
            if self._unsynced:
                self.store.sync(self.path)
                self._unsynced = False
            if self.store.can_append and self._one_line_per_job():
                return self.store.uri(self.path)
            with tempfile.TemporaryDirectory(prefix="bananaflow-manifest-") as tmp:
                assembled = Path(tmp) / "manifest.jsonl"
                _assemble(self.store, self.run_id, assembled)
                return self.store.write_from_file(
                    self.path, assembled, content_type="application/x-ndjson"
                )

    def _one_line_per_job(self) -> bool:
        """True when the file already is what ``close`` would write: every line a whole row,
        one per job. Read a line at a time, so closing a 10,000-job run does not hold every
        row (and the text) at once; a duplicate or a torn line takes the rewrite."""
        if not self.store.exists(self.path):
            return False
        seen: set[str] = set()
        for line in self.store.lines(self.path):
            try:
                job_id = ManifestRow.model_validate_json(line).job_id
            except ValidationError:
                return False
            if job_id in seen or not line.endswith("\n"):
                return False
            seen.add(job_id)
        return True


def _assemble(store: Store, run_id: str, out: Path) -> None:
    """What ``read_manifest`` returns, written to ``out`` one line per job, holding an index
    entry per job and one chunk of rows, never every row: closing a 10,000-job run on a bucket
    once read all its row objects at once (about 7 KiB each, parsed).

    Same rules: the jobs of an earlier ``manifest.jsonl`` first, in their order, then the jobs
    only in row objects, in the order they started; each job's latest row, and a row object is
    never older than the jsonl."""
    spooled: dict[str, tuple[int, int]] = {}  # job id -> (offset, length) of its latest line
    order: list[str] = []  # jobs of manifest.jsonl, in order
    started: list[tuple[str, str]] = []  # (started_at, job id) of jobs only in row objects
    with tempfile.TemporaryFile() as spool:
        path = manifest_path(run_id)
        if store.exists(path):
            for row in _jsonl_rows(store, path):
                if row.job_id not in spooled:
                    order.append(row.job_id)
                spooled[row.job_id] = _spool(spool, row)
        if not store.can_append:
            known = set(order)
            paths = [p for p in store.list(_rows_dir(run_id)) if p.endswith(".json")]
            for i in range(0, len(paths), _FETCH):
                for row in _parsed_objects(store, paths[i : i + _FETCH]):
                    if row.job_id not in known:
                        started.append((row.started_at, row.job_id))
                    spooled[row.job_id] = _spool(spool, row)
        order += [job_id for _, job_id in sorted(started)]
        with out.open("wb") as f:
            for job_id in order:
                offset, length = spooled[job_id]
                spool.seek(offset)
                f.write(spool.read(length))


def _spool(spool: BinaryIO, row: ManifestRow) -> tuple[int, int]:
    spool.seek(0, 2)
    line = (row.model_dump_json() + "\n").encode("utf-8")
    return spool.tell(), spool.write(line)


def _jsonl_rows(store: Store, path: str) -> Iterator[ManifestRow]:
    """A manifest's rows a line at a time; only a torn final line (a crash mid-write, so no
    newline) is tolerated."""
    for i, line in enumerate(store.lines(path), start=1):
        if not line.strip():
            continue
        try:
            yield ManifestRow.model_validate_json(line)
        except ValidationError:
            if not line.endswith("\n"):
                return  # the last line, torn by a crash mid-write
            raise BananaflowError(f"corrupt manifest line {i} in {store.uri(path)}") from None


def _parsed_objects(store: Store, paths: list[str]) -> list[ManifestRow]:
    blobs = store.get_many(paths)
    rows = []
    for path in paths:
        try:
            rows.append(ManifestRow.model_validate_json(blobs[path]))
        except ValidationError:
            raise BananaflowError(f"corrupt manifest row {store.uri(path)}") from None
    return rows


def iter_manifest(store: Store, run_id: str) -> Iterator[ManifestRow]:
    """A closed run's rows, one at a time (``close`` leaves one line per job, in order)."""
    for line in store.lines(manifest_path(run_id)):
        if line.strip():
            yield ManifestRow.model_validate_json(line)


def _row_objects(store: Store, run_id: str) -> list[ManifestRow]:
    paths = [p for p in store.list(_rows_dir(run_id)) if p.endswith(".json")]
    # Each object is already the latest row of its job; order them as they started.
    return sorted(_parsed_objects(store, paths), key=lambda r: (r.started_at, r.job_id))


def read_manifest(store: Store, run_id: str) -> list[ManifestRow]:
    """All jobs of a run, latest row per job; works mid-run, after a crash and after close."""
    path = manifest_path(run_id)
    rows: list[ManifestRow] = []
    if store.exists(path):
        rows = list(_jsonl_rows(store, path))
    if not store.can_append:
        # rows/ objects are written at append time, so they are never older than the jsonl.
        rows += _row_objects(store, run_id)
    return _latest_per_job(rows)


def run_ids(store: Store) -> list[str]:
    """Every run with something under ``runs/`` in a store, sorted (ids start with a UTC stamp)."""
    found = {p.split("/")[1] for p in store.list("runs") if p.count("/") >= 2}
    return sorted(found)
