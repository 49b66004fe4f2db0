"""What one run's steps share: clients, store, ledger, spool, manifest and budget.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from bananaflow.backends import create_backend
from bananaflow.backends.base import ImageBackend
from bananaflow.chain.uploads import ReferenceUploads
from bananaflow.config import Settings
from bananaflow.errors import InputError
from bananaflow.generation import BackendName, Delivery
from bananaflow.ledger import Ledger
from bananaflow.limits import LimitedBackend, Limiter, LocalLimiter
from bananaflow.manifest import ManifestWriter
from bananaflow.pricing import Budget
from bananaflow.sheet import SheetDraft
from bananaflow.spool import Spool
from bananaflow.storage import Store, check_relative, object_name, open_store
from bananaflow.workdir import new_work_dir


class ChainContext:
    """Everything one run's steps share. Built once per flow run, closed at its end.

    A plain class on purpose, not a dataclass or a pydantic model: it is every task's first
    argument, and Prefect walks the fields of those to track task inputs, while other jobs'
    threads change ``reserved`` ("dictionary changed size during iteration" failed a job).
    Opaque, it is passed as it is and costs Prefect nothing to look at.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        run_id: str,
        store: Store,
        ledger: Ledger,
        spool: Spool,
        manifest: ManifestWriter,
        budget: Budget,
        backends: dict[BackendName, ImageBackend],
        work_dir: Path,
        reuse: bool = True,
        owns_work_dir: bool = True,
        uploads: ReferenceUploads | None = None,
    ):
        self.settings = settings
        self.run_id = run_id
        self.store = store
        self.ledger = ledger
        self.spool = spool
        self.manifest = manifest
        self.budget = budget
        self.backends = backends
        self.work_dir = work_dir
        self.reuse = reuse  # False: render even when the ledger has it (compare measures)
        self.reserved: dict[str, float] = {}  # job id -> budget held for it
        self.uploads = uploads or ReferenceUploads(settings, store)
        self.sheet = SheetDraft(store)  # the report's contact sheet, drawn as jobs upload
        self._owns_work_dir = owns_work_dir

    def __repr__(self) -> str:
        return f"ChainContext(run_id={self.run_id!r}, store={self.store!r})"

    async def aclose(self) -> None:
        for backend in self.backends.values():
            await backend.aclose()
        await self.uploads.aclose()
        await asyncio.to_thread(self.sheet.close)
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def open_context(
    settings: Settings,
    run_id: str,
    backends_needed: set[BackendName],
    *,
    limiter_for: dict[BackendName, Limiter] | None = None,
    reuse: bool = True,
) -> ChainContext:
    """Create clients, store, manifest and budget for a run; fails before any spending."""
    check_upload_names(settings)
    store = open_store(settings.storage)
    store.check_writable()
    backends: dict[BackendName, ImageBackend] = {}
    for name in sorted(backends_needed):
        backend = create_backend(name, settings)
        limiter = (limiter_for or {}).get(name) or local_limiter(settings, name)
        backends[name] = LimitedBackend(backend, limiter)
    return ChainContext(
        settings=settings,
        run_id=run_id,
        store=store,
        ledger=Ledger(store, run_id, claim_ttl_s=claim_ttl_s(settings)),
        spool=Spool(store.url),
        manifest=ManifestWriter(store, run_id),
        budget=Budget(settings.budget.max_usd),
        backends=backends,
        work_dir=new_work_dir(run_id),
        reuse=reuse,
    )


def check_upload_names(settings: Settings) -> None:
    """Expand ``upload.prefix`` + ``upload.name_template`` once with dummy values.

    Names are otherwise first built at upload time, i.e. after the image was paid for; a
    prefix with ``..`` or a template reaching for attributes must fail before that.
    """
    prefix = settings.upload.prefix.strip("/")
    if prefix:
        check_relative(prefix, field="upload.prefix")
    template = settings.upload.name_template
    for sub in ("", "masters", "thumbs/256"):
        joined = "/".join(p for p in (prefix, sub) if p)
        try:
            object_name(template, prefix=joined, sha="0" * 64, ext="webp")
        except InputError as err:
            if err.field != "upload.name_template" or "{" in err.problem:
                raise
            raise InputError(
                "upload.name_template",
                f"{template!r} makes names outside the store ({err.problem})",
                fix="keep names relative, e.g. {prefix}/{sha[:2]}/{sha}.{ext}",
            ) from None


def claim_ttl_s(settings: Settings, delivery: Delivery = "online") -> float:
    """How long a claim holds: the longest a generation may take (every retry and fallback),
    plus storing the master. A holder that outlives it has died or hung.

    Per backend that is the delivery's deadline (flex has a longer one), plus its fallback's
    when a shed call is bought again another way (``route.delivery_fallback``).
    """
    retry = settings.generate.retry
    per_backend = retry.delivery_deadline_s.get(delivery, retry.deadline_s)
    fallback = settings.route.delivery_fallback.get(delivery)
    if fallback is not None:
        per_backend += retry.delivery_deadline_s.get(fallback, retry.deadline_s)
    return per_backend * 2 + 120.0


def local_limiter(settings: Settings, name: BackendName) -> LocalLimiter:
    """The backend's quota for one process; scaled with the embedded emulator's clock."""
    cfg = settings.backends.aistudio if name == "aistudio" else settings.backends.vertex
    scale = settings.emulator.time_scale if settings.emulator.embedded else 1.0
    return LocalLimiter(cfg.requests_per_minute, cfg.concurrency, window_s=60.0 * scale)
