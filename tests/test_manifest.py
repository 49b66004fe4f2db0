"""Manifest durability and the completion index on local files, memory:// and fake GCS."""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import fsspec
import pytest

from bananaflow.errors import InputError
from bananaflow.manifest import ManifestWriter, read_manifest
from bananaflow.records import ManifestRow, MasterRef
from bananaflow.storage import Store

RUN = "run-20261124-abc"


def _factory(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Builds fresh Store objects on one location, as a restarted process would."""
    if kind == "file":
        return lambda: Store(f"file://{tmp_path}/out")
    if kind == "memory":
        name = f"bf-test-{uuid.uuid4().hex[:8]}"

        def cleanup() -> None:
            with contextlib.suppress(FileNotFoundError):
                fsspec.filesystem("memory").rm(f"/{name}", recursive=True)

        request.addfinalizer(cleanup)
        return lambda: Store(f"memory://{name}")
    url, options = request.getfixturevalue("gcs_bucket")
    return lambda: Store(url, options)


@pytest.fixture(params=["file", "memory", "gs"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return _factory(request.param, request, tmp_path)


def row(job: str, status: str = "uploaded", **kw: Any) -> ManifestRow:
    fields: dict[str, Any] = {
        "run_id": RUN,
        "job_id": job,
        "output_key": f"key-{job}",
        "status": status,
        "stage": "dev",
        "prompt": f"a banana number {job}",
    }
    return ManifestRow(**{**fields, **kw})


def test_append_close_and_read_back(store_factory: Any) -> None:
    store = store_factory()
    writer = ManifestWriter(store, RUN)
    assert writer.path == f"runs/{RUN}/manifest.jsonl"
    for i in range(5):
        writer.append(row(f"j{i}", sha256=f"{i:064x}", bytes_final=100 + i))
    uri = writer.close()
    assert uri == store.uri(writer.path)
    lines = store.read_text(writer.path).splitlines()
    assert [json.loads(line)["job_id"] for line in lines] == [f"j{i}" for i in range(5)]
    got = read_manifest(store_factory(), RUN)
    assert [r.job_id for r in got] == [f"j{i}" for i in range(5)]
    assert got[3].bytes_final == 103 and got[3].sha256 == f"{3:064x}"


def test_crash_without_close_loses_nothing(store_factory: Any) -> None:
    writer = ManifestWriter(store_factory(), RUN)
    for i in range(4):
        writer.append(row(f"j{i}"))
    del writer  # the process dies here: no close()
    got = read_manifest(store_factory(), RUN)
    assert sorted(r.job_id for r in got) == ["j0", "j1", "j2", "j3"]


def test_latest_row_per_job_wins(store_factory: Any) -> None:
    store = store_factory()
    writer = ManifestWriter(store, RUN)
    writer.append(row("a", "failed", error="timeout", error_kind="timeout"))
    writer.append(row("b"))
    writer.append(row("a", "uploaded", attempts=2))
    before_close = {r.job_id: r for r in read_manifest(store, RUN)}
    assert before_close["a"].status == "uploaded" and before_close["a"].attempts == 2
    writer.close()
    lines = store.read_text(writer.path).splitlines()
    assert len(lines) == 2
    after = {r.job_id: r for r in read_manifest(store_factory(), RUN)}
    assert after["a"].status == "uploaded" and after["a"].error is None
    assert set(after) == {"a", "b"}


def test_appends_from_many_threads(store_factory: Any) -> None:
    writer = ManifestWriter(store_factory(), RUN)

    def work(t: int) -> None:
        for i in range(10):
            writer.append(row(f"t{t}-{i}"))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    got = read_manifest(store_factory(), RUN)
    assert len(got) == 60 and len({r.job_id for r in got}) == 60


def test_empty_or_unknown_run_reads_as_empty(store_factory: Any) -> None:
    assert read_manifest(store_factory(), "never-ran") == []


def test_local_append_is_on_disk_immediately_and_torn_tail_is_tolerated(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    writer = ManifestWriter(store, RUN)
    writer.append(row("a"))
    on_disk = (tmp_path / "runs" / RUN / "manifest.jsonl").read_text()
    assert json.loads(on_disk)["job_id"] == "a"
    with (tmp_path / "runs" / RUN / "manifest.jsonl").open("a") as f:
        f.write('{"run_id": "run-20261124-abc", "job_id": "b", "sta')  # crash mid-line
    assert [r.job_id for r in read_manifest(store, RUN)] == ["a"]


class _SyncLog(Store):
    """A real local store that records which appends were fsynced and each later ``sync``."""

    def __init__(self, url: str):
        super().__init__(url)
        self.log: list[str] = []

    def append(self, path: str, data: bytes, *, sync: bool = True) -> None:
        super().append(path, data, sync=sync)
        self.log.append(json.loads(data)["job_id"] + ("+fsync" if sync else ""))

    def sync(self, path: str) -> None:
        super().sync(path)
        self.log.append("fsync")


def test_a_paid_row_is_fsynced_as_it_is_appended_a_reused_one_by_close(tmp_path: Path) -> None:
    """A reused job's row records nothing paid in this run (a crash costs only its re-reuse):
    its fsync waits for the next paid row or ``close``, which never reports an unsynced file."""
    store = _SyncLog(str(tmp_path))
    writer = ManifestWriter(store, RUN)
    writer.append(row("old1", reused_from_run="run-earlier"))
    writer.append(row("new1"))  # paid: synced now, with old1's line before it
    writer.append(row("old2", reused_from_run="run-earlier"))
    assert store.log == ["old1", "new1+fsync", "old2"]
    writer.close()
    assert store.log == ["old1", "new1+fsync", "old2", "fsync"]
    writer.close()  # nothing new since: no second fsync
    assert store.log.count("fsync") == 1
    assert [r.job_id for r in read_manifest(Store(str(tmp_path)), RUN)] == ["old1", "new1", "old2"]


def test_a_run_of_paid_rows_needs_no_fsync_at_close(tmp_path: Path) -> None:
    store = _SyncLog(str(tmp_path))
    writer = ManifestWriter(store, RUN)
    writer.append(row("old1", reused_from_run="run-earlier"))
    writer.append(row("new1"))
    writer.close()
    assert store.log == ["old1", "new1+fsync"]


@pytest.mark.parametrize("kind", ["memory", "gs"])
def test_object_store_keeps_one_object_per_job(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = _factory(kind, request, tmp_path)()
    assert not store.can_append
    writer = ManifestWriter(store, RUN)
    writer.append(row("a"))
    writer.append(row("odd/id"))
    assert store.list(f"runs/{RUN}/rows") == [
        f"runs/{RUN}/rows/a.json",
        f"runs/{RUN}/rows/odd%2Fid.json",
    ]
    assert not store.exists(writer.path)
    writer.close()
    assert {r.job_id for r in read_manifest(store, RUN)} == {"a", "odd/id"}


def test_rows_of_another_run_and_bad_run_ids_are_refused(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    with pytest.raises(ValueError):
        ManifestWriter(store, RUN).append(row("a").model_copy(update={"run_id": "other"}))
    for bad in ("a/b", "..", ""):
        with pytest.raises(InputError):
            read_manifest(store, bad)


# --------------------------------------------------------------------------- completion index


def master_ref(store: Store) -> MasterRef:
    return MasterRef(
        uri=store.uri("masters/ab/abc.png"),
        path="masters/ab/abc.png",
        sha256="ab" * 32,
        mime_type="image/png",
        width=1024,
        height=1024,
        bytes=1_234_567,
        backend="vertex",
        model="gemini-3-pro-image",
        estimated_usd=0.134,
    )


def test_close_writes_what_read_manifest_returns_a_chunk_of_rows_at_a_time(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closed twice, with rows that replace, rows that arrive out of start order and (on
    object stores) more row objects than one fetch reads: the file is exactly the rows
    ``read_manifest`` gave before the close, one line per job, in its order."""
    import bananaflow.manifest as manifest

    monkeypatch.setattr(manifest, "_FETCH", 2)  # chunk boundaries with a handful of rows
    store = store_factory()
    writer = ManifestWriter(store, RUN)
    for job, started in (("c", "2026-11-30T00:00:03Z"), ("a", "2026-11-30T00:00:01Z")):
        writer.append(row(job, status="failed", started_at=started))
    writer.close()
    writer = ManifestWriter(store_factory(), RUN)
    writer.append(row("a", started_at="2026-11-30T00:00:01Z", attempts=2))  # replaces a
    for job, started in (("e", "2026-11-30T00:00:09Z"), ("b", "2026-11-30T00:00:02Z")):
        writer.append(row(job, started_at=started))
    writer.append(row("d", started_at="2026-11-30T00:00:02Z"))
    expected = [r.model_dump_json() for r in read_manifest(store_factory(), RUN)]
    uri = writer.close()
    lines = store_factory().read_text(writer.path).splitlines()
    assert lines == expected and uri == store.uri(writer.path)
    jobs = [json.loads(line)["job_id"] for line in lines]
    assert set(jobs[:2]) == {"a", "c"}  # the first close's jobs keep their places
    # then the new jobs: as appended (a local file), or as they started (row objects)
    assert jobs[2:] == (["e", "b", "d"] if store.can_append else ["b", "d", "e"])
    assert json.loads(lines[jobs.index("a")])["attempts"] == 2
