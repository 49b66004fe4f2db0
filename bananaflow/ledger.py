"""The job ledger: claim before paying, keep what was paid, never report what is not there.

It lives in the same store as the images (``ledger/…``), so it travels with the bucket and every
run on every machine consults the same one before spending. Per paid identity (``master_key``:
job, backend, model) it holds create-only records of the job's life:

- ``jobs/<key>/claim-<n>.json``: run R may pay for this image until ``expires_at``. Claims are
  numbered; taking over a dead or released claim ``n`` means creating ``n+1``, which only one
  contender can do (``file://``: exclusive create; ``gs://``: ``ifGenerationMatch=0``).
- ``jobs/<key>/release-<n>.json``: claim ``n`` ended without payment (a failure), so the next
  run may claim at once instead of waiting for the expiry.
- ``jobs/<key>/paid.json``: the master's durable path (relative to the store root), size and
  hash. Written only by the claim holder, after the bytes are durable.
- ``done/<output_key>.json``: the published result (paths relative to the store root). Trusted
  only after looking: every object it names must exist with the recorded size.

A claim whose holder died expires and is taken over; a holder on this host whose process is
gone is dead at once (a SIGKILLed run's re-run does not wait out the expiry).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Literal

from pydantic import BaseModel, ValidationError

from bananaflow.errors import BananaflowError
from bananaflow.records import ManifestRow, MasterRef
from bananaflow.storage import Store, check_relative

log = logging.getLogger("bananaflow")

HOST = socket.gethostname()


class ClaimRecord(BaseModel):
    """Who may pay for an image, and until when."""

    run_id: str
    host: str
    pid: int
    expires_at: float
    batch: str | None = None  # a provider batch that will pay for it (batch delivery)


class Claim(BaseModel):
    """A claim this process holds."""

    key: str
    number: int
    record: ClaimRecord


class Verdict(BaseModel):
    """What the ledger says about an image before anyone spends on it."""

    state: Literal["paid", "claimed", "held"]
    master: MasterRef | None = None  # paid: the durable master, already verified
    claim: Claim | None = None  # claimed: ours to pay for
    holder: ClaimRecord | None = None  # held: someone else's live claim


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ledger:
    """One run's view of the shared ledger in ``store``."""

    def __init__(self, store: Store, run_id: str, *, claim_ttl_s: float):
        self.store = store
        self.run_id = run_id
        self.claim_ttl_s = claim_ttl_s

    # ------------------------------------------------------------------ paths

    @staticmethod
    def _job_dir(key: str) -> str:
        return check_relative(f"ledger/jobs/{key}", field="master_key")

    def _paid_path(self, key: str) -> str:
        return f"{self._job_dir(key)}/paid.json"

    @staticmethod
    def _done_path(output_key: str) -> str:
        return check_relative(f"ledger/done/{output_key}.json", field="output_key")

    # ------------------------------------------------------------------ paid

    def paid(self, key: str) -> MasterRef | None:
        """The paid master of ``key`` when its bytes are really in the store, else None.

        A record whose object is missing or of another size is not trusted: the image is gone
        (deleted, or the store was moved without it) and must be paid for again.
        """
        try:
            data = self.store.get(self._paid_path(key))
        except FileNotFoundError:
            return None
        try:
            ref = MasterRef.model_validate_json(data)
        except ValidationError:
            log.warning("ledger: unreadable %s; treating the image as unpaid", key)
            return None
        if not self._has(ref.path, ref.bytes):
            log.warning("ledger: paid master %s is missing from the store", ref.path)
            return None
        return ref.model_copy(update={"uri": self.store.uri(ref.path)})

    def record_paid(self, claim: Claim, ref: MasterRef) -> None:
        """Only the claim holder writes it, after the bytes are durable (so overwrite is safe)."""
        self.store.write_text(self._paid_path(claim.key), ref.model_dump_json())

    def _has(self, path: str, size: int) -> bool:
        try:
            return int(self.store.info(path).get("size") or 0) == size
        except FileNotFoundError:
            return False

    # ------------------------------------------------------------------ claims

    def _claims(self, key: str) -> tuple[int, ClaimRecord | None, bool]:
        """(highest claim number, its record, whether it was released)."""
        names = [p.rsplit("/", 1)[-1] for p in self.store.list(self._job_dir(key))]
        numbers = [int(n[6:-5]) for n in names if n.startswith("claim-") and n.endswith(".json")]
        if not numbers:
            return 0, None, False
        top = max(numbers)
        released = f"release-{top:06d}.json" in names
        try:
            record = ClaimRecord.model_validate_json(
                self.store.get(f"{self._job_dir(key)}/claim-{top:06d}.json")
            )
        except (FileNotFoundError, ValidationError):
            record = None
        return top, record, released

    @staticmethod
    def _live(record: ClaimRecord | None) -> bool:
        if record is None or record.expires_at <= time.time():
            return False
        if record.batch is not None:
            return True  # a provider batch pays, not the process that submitted it
        return not (record.host == HOST and not _pid_alive(record.pid))

    def try_claim(self, key: str, ttl_s: float | None = None) -> Verdict:
        """Paid already, claimed now by us, or held by a live claim of another run.

        ``ttl_s`` replaces the run's claim TTL for a slower purchase (a flex call).
        """
        master = self.paid(key)
        if master is not None:
            return Verdict(state="paid", master=master)
        top, record, released = self._claims(key)
        if record is not None and not released and self._live(record):
            if record.run_id == self.run_id and record.pid == os.getpid():
                raise BananaflowError(f"ledger: {key} is already claimed by this run")
            return Verdict(state="held", holder=record)
        mine = ClaimRecord(
            run_id=self.run_id,
            host=HOST,
            pid=os.getpid(),
            expires_at=time.time() + (self.claim_ttl_s if ttl_s is None else ttl_s),
        )
        path = f"{self._job_dir(key)}/claim-{top + 1:06d}.json"
        if not self.store.create(path, mine.model_dump_json().encode()):
            return self.try_claim(key, ttl_s)  # another run won this number: look again
        # The previous holder may have paid between our two looks.
        master = self.paid(key)
        if master is not None:
            self.release(Claim(key=key, number=top + 1, record=mine))
            return Verdict(state="paid", master=master)
        return Verdict(state="claimed", claim=Claim(key=key, number=top + 1, record=mine))

    async def acquire(self, key: str, poll_s: float, ttl_s: float | None = None) -> Verdict:
        """Claim ``key``, waiting while another run's live claim may still pay for it.

        Waiting (rather than skipping) is what makes two overlapping runs of one batch both
        end with every job: the second reuses what the first paid for.
        """
        announced = False
        while True:
            verdict = await asyncio.to_thread(self.try_claim, key, ttl_s)
            if verdict.state != "held":
                return verdict
            if not announced and verdict.holder is not None:
                log.info(
                    "job %s is being rendered by run %s (%s); waiting for it, not paying twice",
                    key[:8],
                    verdict.holder.run_id,
                    verdict.holder.host,
                )
                announced = True
            await asyncio.sleep(poll_s)

    def attach_batch(self, claim: Claim, batch: str, ttl_s: float) -> Claim:
        """The claim now waits on provider batch ``batch``: held (whoever submitted it dies)
        until the batch must have ended. Only the holder rewrites its own claim."""
        record = claim.record.model_copy(update={"batch": batch, "expires_at": time.time() + ttl_s})
        path = f"{self._job_dir(claim.key)}/claim-{claim.number:06d}.json"
        self.store.write_text(path, record.model_dump_json())
        return claim.model_copy(update={"record": record})

    def batch_claim(self, key: str) -> Claim | None:
        """The live claim of ``key`` by a provider batch, which any run may collect."""
        top, record, released = self._claims(key)
        if record is None or record.batch is None or released or not self._live(record):
            return None
        return Claim(key=key, number=top, record=record)

    def release(self, claim: Claim) -> None:
        """The claim ended without (further) payment: the next run need not wait."""
        path = f"{self._job_dir(claim.key)}/release-{claim.number:06d}.json"
        try:
            self.store.create(path, b"{}")
        except Exception as err:  # best effort: the claim still expires on its own
            log.warning("ledger: cannot release %s (%s)", claim.key[:8], err.__class__.__name__)

    # ------------------------------------------------------------------ published

    def get_done(self, output_key: str) -> ManifestRow | None:
        """The published result, only when every object it names is in the store as recorded."""
        path = self._done_path(output_key)
        try:
            data = self.store.get(path)
        except FileNotFoundError:
            return None
        except Exception as err:
            log.warning("ledger: cannot read %s (%s: %s)", path, err.__class__.__name__, err)
            return None
        try:
            row = ManifestRow.model_validate_json(data)
        except ValidationError:
            log.warning("ledger: unreadable %s; the job is redone", path)
            return None
        if not row.path or not self._has(row.path, row.bytes_final):
            log.warning("ledger: published image of job %s is missing; redoing it", row.job_id)
            return None
        if not all(self._exists(p) for p in row.thumbnail_paths):
            log.warning("ledger: a thumbnail of job %s is missing; redoing it", row.job_id)
            return None
        return row

    def _exists(self, path: str) -> bool:
        try:
            return self.store.exists(path)
        except Exception:
            return False

    def put_done(self, row: ManifestRow) -> None:
        """Mark a job published. Best effort: without it a re-run republishes at no cost."""
        if row.status != "uploaded":
            raise ValueError(f"only uploaded jobs are done; {row.job_id} is {row.status}")
        path = self._done_path(row.output_key)
        try:
            self.store.write_text(path, row.model_dump_json())
        except Exception as err:
            log.warning("ledger: cannot write %s (%s: %s)", path, err.__class__.__name__, err)
