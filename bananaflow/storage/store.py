"""One store: create-only writes made atomic for each kind of storage.

Why a wrapper rather than raw fsspec: every write of an image is *create-only* (content-addressed
names mean an existing object with the same bytes is success, not an error, and different bytes
under the same name are a bug worth stopping for), and each backend needs its own way to make
that atomic:

- ``gs://`` (gcsfs): ``pipe_file(mode="create")`` sends ``ifGenerationMatch=0``, so GCS itself
  refuses to replace an object (412 -> ``FileExistsError``). Content type, custom metadata and
  ``Cache-Control`` are stored on the object.
- local paths: bytes go to a temp file in the target directory, are fsynced, then hard-linked into
  place; ``link`` fails if the name exists, so a crash never leaves a partial object and two
  writers never both win. A plain file cannot carry content type, metadata or cache-control:
  nothing extra is written, the manifest row carries them.
- ``memory://`` and other fsspec filesystems: ``pipe_file(mode="create")`` (exclusive open).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import fsspec
from pydantic import BaseModel, SecretStr

from bananaflow.config import StorageSettings
from bananaflow.errors import BananaflowError, InputError
from bananaflow.storage.names import check_relative
from bananaflow.storage.retry import retry_transient, short_error
from bananaflow.storage.urls import parse_url

T = TypeVar("T")


# gcsfs >= 2026 otherwise asks the gRPC Storage Control API for the bucket layout before every
# operation, which stalls ~60 s per call on emulators and needs gRPC egress in production. Our
# buckets are plain (non-HNS) buckets. gcsfs is imported lazily by fsspec, so this runs first
# unless something imported gcsfs earlier; users can still opt in by setting the variable.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
_TMP_PREFIX = ".bf-tmp-"
# Serialises the exists-check of stores whose exclusive create is only best effort (memory://).
_CREATE_LOCK = threading.Lock()


class StorageConflict(BananaflowError):
    """A create-only write found an existing object with different bytes under the same name."""

    def __init__(self, uri: str, existing_size: int, new_size: int):
        self.uri = uri
        super().__init__(
            f"storage conflict: {uri} already exists with different bytes "
            f"({existing_size} bytes stored, {new_size} bytes new); objects are never replaced"
        )


class StorageFull(BananaflowError):
    """The store refused a write for lack of room or rights: an answer, not an outage to retry."""

    def __init__(self, url: str, err: OSError):
        super().__init__(
            f"storage {url} cannot take more ({err.strerror or err.__class__.__name__}); "
            "free space (or fix permissions) and re-run: finished and paid images are kept"
        )


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG}


@contextlib.contextmanager
def _local_writes(url: str):  # type: ignore[no-untyped-def]
    try:
        yield
    except OSError as err:
        if err.errno in _FULL:
            raise StorageFull(url, err) from None
        raise


class PutResult(BaseModel):
    """Where an object landed and whether this call created it (False: identical one existed)."""

    uri: str
    path: str
    created: bool
    size: int


def open_store(settings: StorageSettings) -> Store:
    """The configured store, with the credentials a block put in ``credentials_info``."""
    return Store(settings.url, settings.options, credentials=settings.credentials_info)


class Store:
    """One storage location; object paths are relative to it and validated on every call."""

    def __init__(
        self,
        url: str,
        options: dict[str, Any] | None = None,
        *,
        credentials: SecretStr | None = None,
    ):
        """``credentials``: a service-account key's JSON (``storage.credentials_info``), given
        to the filesystem as its ``token``; kept out of ``options`` so that what callers log or
        pass along never holds the key."""
        self.protocol, self._root = parse_url(url)
        self._options = dict(options or {})
        if credentials is not None:
            self._options["token"] = json.loads(credentials.get_secret_value())
        self.url = self._root_url()
        self._local_root = Path(self._root) if self.protocol == "file" else None
        self._fs: Any = None
        self._once = threading.local()  # set while check_writable probes: fail fast there
        if self._local_root is None:
            try:
                self._fs = fsspec.filesystem(self.protocol, **self._options)
            except Exception as e:
                raise InputError(
                    "storage.url",
                    f"cannot open {self.url}: {e.__class__.__name__}: {short_error(e)}",
                    fix="check storage.options (endpoint_url, token, project)",
                ) from None

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # ----------------------------------------------------------------- naming

    def _root_url(self) -> str:
        if self.protocol == "file":
            return "file://" + self._root
        if self.protocol == "memory":
            return "memory://" + self._root.lstrip("/")
        return f"{self.protocol}://{self._root}"

    def _full(self, path: str) -> str:
        check_relative(path)
        return f"{self._root.rstrip('/')}/{path}"

    def uri(self, path: str) -> str:
        """Full URL of a relative object path (what the manifest records).

        ``uri("")`` is the root with a trailing slash, so ``uri.startswith(store.uri(""))``
        tells whether a recorded URI lives in this store (see also ``relative``).
        """
        base = self.url if self.url.endswith("/") else self.url + "/"
        return base + check_relative(path) if path else base

    def relative(self, uri: str) -> str | None:
        """The object path of a URI recorded from this store, or None if it is elsewhere."""
        base = self.uri("")
        if not uri.startswith(base) or uri == base:
            return None
        return check_relative(uri[len(base) :])

    def _remote(self, fn: Callable[[], T], what: str) -> T:
        """Run one remote-store call under the transient-error retry (local calls run as is)."""
        if self._local_root is not None or getattr(self._once, "on", False):
            return fn()
        return retry_transient(fn, f"{what} on {self.url}")

    @property
    def can_append(self) -> bool:
        """True when ``append`` is a real durable append (local files); object stores can't."""
        return self._local_root is not None

    # ----------------------------------------------------------------- writes

    def put(
        self,
        path: str,
        data: bytes,
        *,
        content_type: str,
        metadata: dict[str, str] | None = None,
        cache_control: str | None = None,
        create_only: bool = True,
    ) -> PutResult:
        """Store bytes under ``path``; with ``create_only`` an existing object is never replaced."""
        full = self._full(path)
        meta = _check_metadata(metadata)
        if self._local_root is not None:
            with _local_writes(self.url):
                created = self._put_local(Path(full), data, create_only)
        elif self.protocol == "gs":
            created = self._remote(
                lambda: self._put_gcs(full, data, content_type, meta, cache_control, create_only),
                f"put {path}",
            )
        else:
            created = self._remote(lambda: self._put_fsspec(full, data, create_only), f"put {path}")
        if not created:
            self._check_same(path, data)
        return PutResult(uri=self.uri(path), path=path, created=created, size=len(data))

    def create(self, path: str, data: bytes, *, content_type: str = "application/json") -> bool:
        """Exclusive create: True if this call made the object, False if anything was there.

        The ledger's claims rest on it: of two runs creating the same claim, exactly one wins
        (``file://``: a hard link; ``gs://``: ``ifGenerationMatch=0``).
        """
        full = self._full(path)
        if self._local_root is not None:
            with _local_writes(self.url):
                return self._put_local(Path(full), data, create_only=True)
        if self.protocol == "gs":
            return self._remote(
                lambda: self._put_gcs(full, data, content_type, None, "no-cache", True),
                f"create {path}",
            )
        return self._remote(lambda: self._put_fsspec(full, data, True), f"create {path}")

    def _put_local(self, dest: Path, data: bytes | Path, create_only: bool) -> bool:
        if create_only and dest.is_file():
            return False  # the common re-run case: skip writing a temp copy of the bytes
        tmp = _write_temp(dest, data)
        try:
            if not create_only:
                os.replace(tmp, dest)
                _fsync_dir(dest.parent)
                return True
            try:
                os.link(tmp, dest)
            except FileExistsError:
                return False
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                # No hard links here (some FUSE/SMB mounts): exists-then-rename, with a small race.
                if dest.exists():
                    return False
                os.replace(tmp, dest)
            _fsync_dir(dest.parent)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _put_gcs(
        self,
        full: str,
        data: bytes,
        content_type: str,
        metadata: dict[str, str] | None,
        cache_control: str | None,
        create_only: bool,
    ) -> bool:
        try:
            self._fs.pipe_file(
                full,
                data,
                mode="create" if create_only else "overwrite",
                content_type=content_type,
                metadata=metadata or None,
                fixed_key_metadata={"cache_control": cache_control} if cache_control else None,
            )
        except FileExistsError:
            return False
        return True

    def _put_fsspec(self, full: str, data: bytes, create_only: bool) -> bool:
        if not create_only:
            self._fs.pipe_file(full, data)
            return True
        with _CREATE_LOCK:
            try:
                if self._fs.exists(full):
                    return False
                self._fs.pipe_file(full, data, mode="create")
            except FileExistsError:
                return False
        return True

    def _check_same(self, path: str, data: bytes) -> None:
        """An existing object is fine only if it holds exactly these bytes."""
        info = self.info(path)
        size = int(info.get("size") or 0)
        if size == len(data):
            md5 = info.get("md5Hash")
            if md5 and md5 == base64.b64encode(hashlib.md5(data).digest()).decode():
                return
            if hashlib.sha256(self.get(path)).digest() == hashlib.sha256(data).digest():
                return
        raise StorageConflict(self.uri(path), size, len(data))

    def write_text(self, path: str, text: str, *, content_type: str = "application/json") -> str:
        """Overwrite a small text object (manifest, index entry); readers never see it torn."""
        full = self._full(path)
        data = text.encode("utf-8")
        if self._local_root is not None:
            with _local_writes(self.url):
                self._put_local(Path(full), data, create_only=False)
        elif self.protocol == "gs":
            # Mutable objects: without no-cache a public bucket serves them stale for an hour.
            self._remote(
                lambda: self._fs.pipe_file(
                    full,
                    data,
                    content_type=content_type,
                    fixed_key_metadata={"cache_control": "no-cache"},
                ),
                f"write {path}",
            )
        else:
            self._remote(lambda: self._fs.pipe_file(full, data), f"write {path}")
        return self.uri(path)

    def write_from_file(self, path: str, local: Path, *, content_type: str) -> str:
        """``write_text`` for a local file's bytes, streamed: a 10,000-row manifest is
        assembled on disk and uploaded without ever being whole in memory."""
        full = self._full(path)
        if self._local_root is not None:
            with _local_writes(self.url):
                self._put_local(Path(full), local, create_only=False)
        elif self.protocol == "gs":
            self._remote(
                lambda: self._fs.put_file(
                    str(local),
                    full,
                    content_type=content_type,
                    fixed_key_metadata={"cache_control": "no-cache"},
                    chunksize=_UPLOAD_CHUNK,
                ),
                f"write {path}",
            )
        else:
            self._remote(lambda: self._fs.put_file(str(local), full), f"write {path}")
        self._invalidate(full)
        return self.uri(path)

    def append(self, path: str, data: bytes, *, sync: bool = True) -> None:
        """Durable append (fsync before returning); only where ``can_append`` is True.
        ``sync=False`` leaves the fsync to a later append or ``sync``: for lines worth nothing
        if lost, where a re-run of 60 reused jobs spent 0.1 s of its 0.8 s in fsync."""
        if self._local_root is None:
            raise NotImplementedError(f"{self.protocol}:// objects cannot be appended to")
        dest = Path(self._full(path))
        dest.parent.mkdir(parents=True, exist_ok=True)
        new = not dest.exists()
        fd = os.open(dest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        before = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
            if sync:
                os.fsync(fd)
        except OSError as err:
            # No torn line may stay behind: a later append would bury it mid-file.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, before)
            if err.errno in _FULL:
                raise StorageFull(self.url, err) from None
            raise
        finally:
            os.close(fd)
        if new:
            _fsync_dir(dest.parent)

    def sync(self, path: str) -> None:
        """fsync a local file written by ``append(..., sync=False)``."""
        if self._local_root is None:
            raise NotImplementedError(f"{self.protocol}:// objects cannot be appended to")
        fd = os.open(self._full(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def delete(self, path: str) -> None:
        """Remove one object; missing is fine (used for probes and tests, never for images)."""
        full = self._full(path)
        with contextlib.suppress(FileNotFoundError):
            if self._local_root is not None:
                os.unlink(full)
            else:
                self._remote(lambda: self._fs.rm_file(full), f"delete {path}")

    # ----------------------------------------------------------------- reads

    def get(self, path: str) -> bytes:
        full = self._full(path)
        if self._local_root is not None:
            return Path(full).read_bytes()
        return self._remote(lambda: self._fs.cat_file(full), f"read {path}")

    def get_to_file(self, path: str, local: Path) -> None:
        """Copy one object to a local file in chunks, never whole in memory (batch outputs)."""
        full = self._full(path)
        if self._local_root is not None:
            shutil.copyfile(full, local)
            return
        self._remote(lambda: self._fs.get_file(full, str(local)), f"read {path}")

    def get_many(self, paths: list[str]) -> dict[str, bytes]:
        """Several objects at once; gcsfs fetches them concurrently (manifest rows, index)."""
        if self._local_root is not None or not paths:
            return {p: self.get(p) for p in paths}
        fulls = {self._full(p): p for p in paths}
        got = self._remote(lambda: self._fs.cat(list(fulls), on_error="raise"), "read many")
        return {fulls[self._fs._strip_protocol(k)]: v for k, v in got.items()}

    def read_text(self, path: str) -> str:
        return self.get(path).decode("utf-8")

    def lines(self, path: str) -> Iterator[str]:
        """A text object line by line (each with its newline): a 10,000-job manifest is read
        without holding it whole. Remote reads are not retried mid-stream."""
        full = self._full(path)
        if self._local_root is not None:
            with open(full, encoding="utf-8", newline="\n") as f:
                yield from f
            return
        with self._remote(lambda: self._fs.open(full, "rb"), f"open {path}") as f:
            for raw in f:
                yield raw.decode("utf-8")

    def exists(self, path: str) -> bool:
        full = self._full(path)
        if self._local_root is not None:
            return os.path.isfile(full)

        def probe() -> bool:
            self._invalidate(full)
            return bool(self._fs.isfile(full))

        return self._remote(probe, f"exists {path}")

    def info(self, path: str) -> dict[str, Any]:
        """At least ``size``; on gs:// also ``contentType``, ``metadata``, ``cacheControl``."""
        full = self._full(path)
        if self._local_root is not None:
            st = os.stat(full)
            return {
                "name": self.uri(path),
                "size": st.st_size,
                "type": "file",
                "mtime": st.st_mtime,
            }

        def read_info() -> dict[str, Any]:
            self._invalidate(full)
            return dict(self._fs.info(full))

        return self._remote(read_info, f"info {path}")

    def list(self, prefix: str = "") -> list[str]:
        """Relative paths of all objects under ``prefix`` (a directory-like prefix), sorted."""
        prefix = prefix.strip("/")
        if prefix:
            check_relative(prefix)
        base = f"{self._root.rstrip('/')}/{prefix}" if prefix else self._root
        if self._local_root is not None:
            return self._list_local(Path(base))

        def find() -> list[str]:
            self._invalidate(base)
            return self._fs.find(base)

        try:
            found = self._remote(find, f"list {prefix or '/'}")
        except FileNotFoundError:
            return []
        root = self._root.rstrip("/") + "/"
        return sorted(
            p[len(root) :]
            for p in (self._fs._strip_protocol(f) for f in found)
            if p.startswith(root)
        )

    def _list_local(self, base: Path) -> list[str]:
        if base.is_file():
            return [base.relative_to(self._local_root).as_posix()]  # type: ignore[arg-type]
        if not base.is_dir():
            return []
        out = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if not name.startswith(_TMP_PREFIX):
                    rel = Path(dirpath, name).relative_to(self._local_root)  # type: ignore[arg-type]
                    out.append(rel.as_posix())
        return sorted(out)

    def _invalidate(self, full: str) -> None:
        """gcsfs caches listings; another worker may have written since (stale exists/info)."""
        with contextlib.suppress(Exception):
            self._fs.invalidate_cache(full)

    # ----------------------------------------------------------------- checks

    def check_writable(self) -> None:
        """Write, read back and delete a probe object, so a bad URL fails before money is spent."""
        probe = f".bananaflow-probe-{uuid.uuid4().hex}"
        token = uuid.uuid4().hex
        self._once.on = True  # a bad URL must fail now, not after minutes of retries
        try:
            self.write_text(probe, token, content_type="text/plain")
            if self.read_text(probe) != token:
                raise OSError("the probe object read back different bytes")
            self.delete(probe)
        except Exception as e:
            raise InputError(
                "storage.url",
                f"cannot write to {self.url}: {e.__class__.__name__}: {short_error(e)}",
                fix="point storage.url at a writable directory or bucket, check credentials",
            ) from None
        finally:
            self._once.on = False


def _check_metadata(metadata: dict[str, str] | None) -> dict[str, str] | None:
    """GCS custom metadata is str -> str; a None or int would be stored as 'None'/'3' silently."""
    if not metadata:
        return None
    bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise TypeError(f"metadata values must be strings: {bad}")
    return dict(metadata)


# gcsfs reads a file to upload in chunks of this size (its default, 50 MiB, is one allocation
# of 50 MiB even for a 4 MB manifest); a multiple of 256 KiB, as resumable uploads require.
_UPLOAD_CHUNK = 4 * 2**20


def _write_temp(dest: Path, data: bytes | Path) -> str:
    """Bytes (or a local file's, copied in chunks) in a fsynced temp file next to ``dest``
    (same filesystem, so link/rename work)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=_TMP_PREFIX)
    try:
        if isinstance(data, Path):
            with data.open("rb") as src:
                while chunk := src.read(_UPLOAD_CHUNK):
                    _write_all(fd, chunk)
        else:
            _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would make published images unreadable to others
    return tmp


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    """Make a new directory entry durable (the file's own fsync does not cover its name)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
