"""Paid bytes the store could not take (disk full, bucket down), kept on this machine.

A paid image must never be paid for again. When the store refuses the master, its bytes and
record go to a local spool (``$XDG_CACHE_HOME/bananaflow/spool/<store>/``) and the next run
against the same store moves them in before it considers paying.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from pydantic import ValidationError

from bananaflow.records import MasterRef


class Spool:
    def __init__(self, store_url: str, root: Path | None = None):
        base = root or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        digest = hashlib.sha256(store_url.encode()).hexdigest()[:16]
        self.dir = base / "bananaflow" / "spool" / digest

    def keep(self, key: str, data: bytes, ref: MasterRef) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        blob = self.dir / f"{key}.bin"
        blob.write_bytes(data)
        (self.dir / f"{key}.json").write_text(ref.model_dump_json())
        return blob

    def take(self, key: str) -> tuple[bytes, MasterRef] | None:
        meta = self.dir / f"{key}.json"
        try:
            ref = MasterRef.model_validate_json(meta.read_bytes())
            data = (self.dir / f"{key}.bin").read_bytes()
        except (FileNotFoundError, ValidationError):
            return None
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            return None
        return data, ref

    def drop(self, key: str) -> None:
        for suffix in (".bin", ".json"):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / f"{key}{suffix}").unlink()
