"""Storage on real backends: local files, memory://, and gcsfs against fake-gcs-server."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from bananaflow.errors import InputError
from bananaflow.storage import StorageConflict, Store, object_name, redact_url

KINDS = ["file", "bare", "memory", "gs"]


def make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    if kind == "file":
        return Store(f"file://{tmp_path}/out")
    if kind == "bare":
        return Store(os.path.relpath(tmp_path / "bare", Path.cwd()))
    if kind == "memory":
        name = f"bf-test-{uuid.uuid4().hex[:8]}"

        def cleanup() -> None:
            with contextlib.suppress(FileNotFoundError):
                fsspec.filesystem("memory").rm(f"/{name}", recursive=True)

        request.addfinalizer(cleanup)
        return Store(f"memory://{name}")
    url, options = request.getfixturevalue("gcs_bucket")
    return Store(f"{url}/pre/fix", options)


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield make_store(request.param, tmp_path, request)


# --------------------------------------------------------------------------- basics


def test_put_get_exists_info_list(store: Store) -> None:
    data = b"\x89PNG fake image bytes" * 100
    res = store.put("images/ab/abcd.png", data, content_type="image/png")
    assert res.created and res.size == len(data) and res.path == "images/ab/abcd.png"
    assert res.uri == store.uri("images/ab/abcd.png") == f"{store.url}/images/ab/abcd.png"
    assert store.uri("") == f"{store.url}/"
    assert store.relative(res.uri) == "images/ab/abcd.png"
    assert store.relative("gs://elsewhere/images/ab/abcd.png") is None
    assert store.get("images/ab/abcd.png") == data
    assert store.exists("images/ab/abcd.png")
    assert not store.exists("images/ab/missing.png")
    assert store.info("images/ab/abcd.png")["size"] == len(data)
    store.put("images/cd/cdef.png", b"x", content_type="image/png")
    store.write_text("runs/r1/manifest.jsonl", "{}\n")
    assert store.list("images") == ["images/ab/abcd.png", "images/cd/cdef.png"]
    assert store.list("images/ab/") == ["images/ab/abcd.png"]
    assert store.list("nothing/here") == []
    assert set(store.list("")) >= {"images/ab/abcd.png", "runs/r1/manifest.jsonl"}
    with pytest.raises(FileNotFoundError):
        store.get("images/ab/missing.png")


def test_create_only_identical_bytes_is_not_a_rewrite(store: Store) -> None:
    data = os.urandom(4096)
    assert store.put("a/obj.bin", data, content_type="application/octet-stream").created
    before = store.info("a/obj.bin")
    again = store.put("a/obj.bin", data, content_type="application/octet-stream")
    assert again.created is False and again.size == len(data)
    after = store.info("a/obj.bin")
    for key in ("generation", "mtime", "created"):  # whichever the backend reports
        assert after.get(key) == before.get(key)
    assert store.get("a/obj.bin") == data


def test_create_only_different_bytes_conflict(store: Store) -> None:
    store.put("a/obj.bin", b"first", content_type="text/plain")
    with pytest.raises(StorageConflict) as err:
        store.put("a/obj.bin", b"other", content_type="text/plain")  # same size, other bytes
    assert store.uri("a/obj.bin") in str(err.value)
    with pytest.raises(StorageConflict):
        store.put("a/obj.bin", b"longer bytes", content_type="text/plain")
    assert store.get("a/obj.bin") == b"first"


def test_overwrite_when_asked(store: Store) -> None:
    store.put("a/obj.bin", b"first", content_type="text/plain")
    res = store.put("a/obj.bin", b"second", content_type="text/plain", create_only=False)
    assert res.created and store.get("a/obj.bin") == b"second"


def test_write_text_overwrites_and_reads_back(store: Store) -> None:
    uri = store.write_text("runs/r/manifest.jsonl", "one\n")
    assert uri == store.uri("runs/r/manifest.jsonl")
    store.write_text("runs/r/manifest.jsonl", "two ✓\n")
    assert store.read_text("runs/r/manifest.jsonl") == "two ✓\n"


def test_concurrent_create_only_has_exactly_one_winner(store: Store) -> None:
    results: list[str] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        try:
            res = store.put("race/obj", f"payload-{i % 2}".encode(), content_type="text/plain")
            outcome = "created" if res.created else "same"
        except StorageConflict:
            outcome = "conflict"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Four writers carry each payload: one wins, its three twins see "same", the rest conflict.
    assert results.count("created") == 1
    assert results.count("same") == 3 and results.count("conflict") == 4
    assert store.get("race/obj") in (b"payload-0", b"payload-1")


def test_check_writable_passes_and_leaves_nothing(store: Store) -> None:
    store.check_writable()
    assert store.list("") == []


@pytest.mark.parametrize("bad", ["../escape", "/abs/path", "a//b", "a\\b", "a/./b", ""])
def test_object_paths_must_stay_inside(store: Store, bad: str) -> None:
    with pytest.raises(InputError):
        store.put(bad, b"x", content_type="text/plain")


# --------------------------------------------------------------------------- gs:// specifics


def test_gcs_object_carries_type_metadata_and_cache_control(
    gcs_bucket: tuple[str, dict[str, Any]],
) -> None:
    url, options = gcs_bucket
    store = Store(url, options)
    meta = {"prompt_sha256": "ab" * 32, "backend": "vertex", "run_id": "r-1"}
    res = store.put(
        "images/x.webp",
        b"RIFF....WEBP",
        content_type="image/webp",
        metadata=meta,
        cache_control="public, max-age=31536000, immutable",
    )
    assert res.uri == f"{url}/images/x.webp"
    info = store.info("images/x.webp")
    assert info["contentType"] == "image/webp"
    assert info["metadata"] == meta
    assert info["cacheControl"] == "public, max-age=31536000, immutable"
    store.write_text("runs/r/manifest.jsonl", "{}\n", content_type="application/x-ndjson")
    text_info = store.info("runs/r/manifest.jsonl")
    assert text_info["contentType"] == "application/x-ndjson"
    assert text_info["cacheControl"] == "no-cache"
    # A second, identical put with other metadata changes nothing (create-only).
    again = store.put("images/x.webp", b"RIFF....WEBP", content_type="text/plain", metadata={})
    assert not again.created
    assert store.info("images/x.webp")["contentType"] == "image/webp"


def test_gcs_rejects_non_string_metadata(gcs_bucket: tuple[str, dict[str, Any]]) -> None:
    store = Store(*gcs_bucket)
    with pytest.raises(TypeError):
        store.put("m.bin", b"x", content_type="text/plain", metadata={"n": 3})  # type: ignore[dict-item]


def test_gcs_missing_bucket_is_not_writable(gcs_bucket: tuple[str, dict[str, Any]]) -> None:
    _url, options = gcs_bucket
    with pytest.raises(InputError) as err:
        Store(f"gs://bf-missing-{uuid.uuid4().hex[:8]}", options).check_writable()
    assert err.value.field == "storage.url" and "cannot write to gs://bf-missing-" in str(err.value)


# --------------------------------------------------------------------------- local specifics


def test_local_writes_leave_no_temp_files_and_are_readable(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    store.put("a/b.jpg", b"jpeg", content_type="image/jpeg")
    store.put("a/b.jpg", b"jpeg", content_type="image/jpeg")
    with pytest.raises(StorageConflict):
        store.put("a/b.jpg", b"JPEG", content_type="image/jpeg")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.jpg"]
    assert (tmp_path / "a" / "b.jpg").stat().st_mode & 0o777 == 0o644
    # content type, metadata and cache-control cannot live in a plain file: nothing extra exists
    assert store.info("a/b.jpg")["size"] == 4


def test_bare_relative_path_is_a_local_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = Store("./output")
    assert store.url == f"file://{tmp_path}/output"
    store.put("x.txt", b"hi", content_type="text/plain")
    assert (tmp_path / "output" / "x.txt").read_bytes() == b"hi"
    assert Store("file://./output").url == store.url


def test_check_writable_fails_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_bytes(b"not a directory")
    store = Store(f"file://{tmp_path}/afile/sub")
    with pytest.raises(InputError) as err:
        store.check_writable()
    assert err.value.field == "storage.url"
    assert f"cannot write to file://{tmp_path}/afile/sub" in str(err.value)


# --------------------------------------------------------------------------- URL validation


@pytest.mark.parametrize(
    "url",
    [
        "ftp2://x/y",
        "https://example.com/x",
        "zip://a.zip",
        "gs://",
        "gs://UPPER_case",
        "file://",
        "",
        "memory://a::gs://b",
        "gs://b?x=1",
    ],
)
def test_bad_urls_are_input_errors(url: str, tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        Store(url)
    assert err.value.field == "storage.url"
    assert "storage.url" in str(err.value)
    assert redact_url(url) in str(err.value)


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed")
def test_s3_without_s3fs_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"storage\.url"):
        Store("s3://bucket/prefix")


def test_root_of_the_filesystem_still_makes_clean_uris() -> None:
    assert Store("file:///").uri("a/b") == "file:///a/b"
    assert Store("memory://").uri("a/b") == "memory://a/b"


def test_credentials_never_appear_in_errors() -> None:
    with pytest.raises(InputError) as err:
        Store("gs://user:s3cret@Bad_Bucket/x")
    assert "s3cret" not in str(err.value)


# --------------------------------------------------------------------------- object_name


def test_object_name_expands_fields_and_slices() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    name = object_name("{prefix}/{sha[:2]}/{sha}.{ext}", prefix="images", sha=sha, ext="webp")
    assert name == f"images/{sha[:2]}/{sha}.webp"
    assert object_name("{sha[-4:]}/{sha[2:4]}{{x}}", sha="abcdef12") == "ef12/cd{x}"
    assert object_name("dev/{prefix}/{k}", prefix="a/b", k="c") == "dev/a/b/c"


@pytest.mark.parametrize(
    ("template", "fields"),
    [
        ("{prefix}/{sha}", {"prefix": "../up", "sha": "ab"}),
        ("/{sha}", {"sha": "ab"}),
        ("{sha.__class__}", {"sha": "ab"}),
        ("{sha[0]}", {"sha": "ab"}),
        ("{sha!r}", {"sha": "ab"}),
        ("{sha:>9}", {"sha": "ab"}),
        ("{unknown}", {"sha": "ab"}),
        ("{prefix}//{sha}", {"prefix": "p", "sha": "ab"}),
        ("{prefix}\\{sha}", {"prefix": "p", "sha": "ab"}),
        ("{sha", {"sha": "ab"}),
        ("{prefix}/{sha}", {"prefix": "", "sha": "ab"}),
    ],
)
def test_object_name_rejections(template: str, fields: dict[str, str]) -> None:
    with pytest.raises(InputError) as err:
        object_name(template, **fields)
    assert err.value.field == "upload.name_template"
