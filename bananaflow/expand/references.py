"""Reference images named by a spec: found, read once, sniffed and hashed before anything is paid.

A spec names its references as the user thinks of them: a local path (relative to the batch
file), a ``file://``/``gs://`` URL (through the fsspec store layer), or ``{run, job}``, the image
an earlier run made. Each becomes a :class:`~bananaflow.records.ReferenceRef`: the bytes stay
where they are, the job carries their hash (part of its id) and the URL to read them from when
the request is made (:func:`load_reference`), which checks the hash again, so a photo replaced
between planning and paying fails the job instead of silently rendering another picture.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from bananaflow.config import StorageSettings
from bananaflow.errors import BananaflowError, InputError
from bananaflow.expand.specs import RunOutput
from bananaflow.imagetype import identify
from bananaflow.manifest import read_manifest
from bananaflow.records import ReferenceRef
from bananaflow.storage import Store, open_store

MIN_JOB_PREFIX = 6


def absolute(reference: str | RunOutput, base_dir: Path) -> str | RunOutput:
    """A relative path in a batch file means "next to the batch file", wherever it is run."""
    if isinstance(reference, RunOutput) or "://" in reference:
        return reference
    path = Path(reference).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


class ReferenceResolver:
    """Resolves each distinct reference of a run once (a batch often reuses one photo)."""

    def __init__(self, storage: StorageSettings):
        self._storage = storage
        self._seen: dict[str, ReferenceRef] = {}

    def resolve(self, reference: str | RunOutput, label: str) -> ReferenceRef:
        key = str(reference) if isinstance(reference, RunOutput) else reference
        found = self._seen.get(key)
        if found is None:
            found = self._seen[key] = self._resolve(reference, label)
        return found

    def _resolve(self, reference: str | RunOutput, label: str) -> ReferenceRef:
        if isinstance(reference, RunOutput):
            uri = self._run_output_uri(reference, label)
        elif "://" in reference:
            uri = reference
        else:
            uri = Path(reference).expanduser().resolve().as_uri()
        data = read_url(uri, self._storage, label, source=str(reference))
        return describe(str(reference), uri, data, label)

    def _run_output_uri(self, ref: RunOutput, label: str) -> str:
        store = open_store(self._storage)
        try:
            rows = read_manifest(store, ref.run)
        except (InputError, OSError, ValueError):
            rows = []
        if not rows:
            raise InputError(
                "references",
                f"{label}: run {ref.run} has no manifest in {store.url}",
                fix="name a run of this config's storage (its id is the runs/<id>/ folder)",
            )
        hits = [r for r in rows if r.job_id == ref.job]
        if not hits and len(ref.job) >= MIN_JOB_PREFIX:
            hits = [r for r in rows if r.job_id.startswith(ref.job)]
        if len(hits) != 1:
            what = "no job" if not hits else f"{len(hits)} jobs"
            raise InputError(
                "references",
                f"{label}: {what} of run {ref.run} matches {ref.job!r}",
                fix="copy the job id from that run's manifest (6+ characters)",
            )
        row = hits[0]
        path = row.master_path or row.path
        if row.status != "uploaded" or not path:
            raise InputError(
                "references",
                f"{label}: job {row.job_id} of run {ref.run} has no image ({row.status})",
                fix="name a job that was uploaded",
            )
        return store.uri(path)


def read_url(uri: str, storage: StorageSettings, label: str, *, source: str) -> bytes:
    """The bytes at ``uri``; the config's storage options apply to URLs of the same scheme
    (the GCS endpoint and credentials of ``gs://`` storage serve ``gs://`` references too)."""
    parent, _, name = uri.rstrip("/").rpartition("/")
    if not name or parent.endswith(":/"):
        raise InputError("references", f"{label}: {source!r} names no file", fix="name a file")
    same_scheme = uri.split("://")[0] == storage.url.split("://")[0]
    try:
        if not same_scheme:
            return Store(parent, {}).get(name)
        return Store(parent, storage.options, credentials=storage.credentials_info).get(name)
    except FileNotFoundError:
        raise InputError(
            "references",
            f"{label}: reference {source!r} does not exist",
            fix="check the path (relative paths start at the batch file's folder)",
        ) from None
    except IsADirectoryError:
        raise InputError(
            "references", f"{label}: reference {source!r} is a directory", fix="name a file"
        ) from None
    except InputError as err:
        raise InputError("references", f"{label}: {err.problem}", fix=err.fix) from None
    except (OSError, BananaflowError) as err:
        raise InputError(
            "references", f"{label}: cannot read reference {source!r}: {type(err).__name__}"
        ) from None


def describe(source: str, uri: str, data: bytes, label: str) -> ReferenceRef:
    """What the bytes are, from the bytes (the extension may lie)."""
    try:
        info = identify(data)
    except ValueError as err:
        raise InputError(
            "references",
            f"{label}: reference {source!r} is not a readable image ({err})",
            fix="use a PNG, JPEG, WebP or HEIC file",
        ) from None
    return ReferenceRef(
        source=source,
        uri=uri,
        sha256=hashlib.sha256(data).hexdigest(),
        mime_type=info.mime_type,
        bytes=len(data),
        width=info.width,
        height=info.height,
    )


def load_reference(ref: ReferenceRef, storage: StorageSettings, job_id: str) -> bytes:
    """The reference's bytes for the request, refused when they changed since the job was made."""
    data = read_url(ref.uri, storage, f"job {job_id}", source=ref.source)
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise InputError(
            "references",
            f"job {job_id}: reference {ref.source!r} changed since the job was planned",
            fix="run the batch again to plan it with the new image",
        )
    return data
