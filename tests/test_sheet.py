"""The contact sheet's index: a re-run cuts reused jobs' cells from the earlier run's sheet.

Real files, real Pillow encodes; the store is the real local store, counting what it reads.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from bananaflow.records import ManifestRow
from bananaflow.sheet import (
    CELL,
    COLUMNS,
    MIN_CELLS_TO_CUT,
    SheetDraft,
    sheet_path,
    write_contact_sheet,
)
from bananaflow.storage import Store

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (90, 9, 90)]


class CountingStore(Store):
    """The local store, remembering every path read."""

    def __init__(self, url: str):
        super().__init__(url)
        self.reads: list[str] = []

    def get(self, path: str) -> bytes:
        self.reads.append(path)
        return super().get(path)


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (512, 512), colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _first_run(store: Store, n: int) -> list[ManifestRow]:
    rows = []
    for i in range(n):
        path = f"images/{i}.jpg"
        store.put(path, _jpeg(COLOURS[i]), content_type="image/jpeg", create_only=False)
        rows.append(
            ManifestRow(
                run_id="run-a",
                job_id=f"job{i}" + "0" * 12,
                output_key=f"k{i}",
                status="uploaded",
                stage="dev",
                path=path,
                uri=store.uri(path),
            )
        )
    return rows


def _reused(rows: list[ManifestRow]) -> list[ManifestRow]:
    return [r.model_copy(update={"run_id": "run-b", "reused_from_run": "run-a"}) for r in rows]


def _centre(sheet: bytes, i: int) -> tuple[int, ...]:
    im = Image.open(io.BytesIO(sheet)).convert("RGB")
    x, y = (i % COLUMNS) * CELL + CELL // 2, (i // COLUMNS) * CELL + CELL // 3
    return im.getpixel((x, y))


def _close(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return all(abs(p - q) <= 12 for p, q in zip(a, b, strict=True))


def test_a_rerun_of_the_same_jobs_copies_the_earlier_sheet_and_reads_no_image(
    tmp_path: Path,
) -> None:
    store = CountingStore(f"file://{tmp_path}")
    rows = _first_run(store, 5)
    _, first = write_contact_sheet(store, "run-a", rows) or ("", b"")
    store.reads.clear()

    uri, again = write_contact_sheet(store, "run-b", _reused(rows)) or ("", b"")

    assert again == first
    assert not [p for p in store.reads if p.startswith("images/")]
    assert uri == store.uri(sheet_path("run-b")) and store.get(sheet_path("run-b")) == first


def test_reused_cells_are_cut_from_the_earlier_sheet_new_jobs_are_read(tmp_path: Path) -> None:
    store = CountingStore(f"file://{tmp_path}")
    rows = _first_run(store, 6)
    write_contact_sheet(store, "run-a", rows[:5])
    store.reads.clear()
    # Reversed order, plus a job the first run never drew: cells move, the new one is read.
    mixed = [*reversed(_reused(rows[:5])), rows[5].model_copy(update={"run_id": "run-b"})]
    assert len(mixed) - 1 >= MIN_CELLS_TO_CUT

    _, sheet = write_contact_sheet(store, "run-b", mixed) or ("", b"")

    assert [p for p in store.reads if p.startswith("images/")] == ["images/5.jpg"]
    for position, colour in enumerate([COLOURS[i] for i in (4, 3, 2, 1, 0, 5)]):
        assert _close(_centre(sheet, position), colour), position


def test_without_an_earlier_index_every_image_is_read(tmp_path: Path) -> None:
    store = CountingStore(f"file://{tmp_path}")
    rows = _first_run(store, 5)
    write_contact_sheet(store, "run-a", rows)
    store.delete("runs/run-a/contact-sheet.json")
    store.reads.clear()

    _, sheet = write_contact_sheet(store, "run-b", list(reversed(_reused(rows)))) or ("", b"")

    assert sorted(p for p in store.reads if p.startswith("images/")) == [
        f"images/{i}.jpg" for i in range(5)
    ]
    assert _close(_centre(sheet, 0), COLOURS[4])


def test_cells_drawn_while_the_run_renders_are_not_read_again(tmp_path: Path) -> None:
    store = CountingStore(f"file://{tmp_path}")
    rows = _first_run(store, 5)
    draft = SheetDraft(store)
    for row in rows[1:]:  # the first job's row never reached the draft (a batch delivery)
        draft.offer(row)
    assert all(draft.cell(row.job_id) for row in rows[1:])  # drawn in the background
    store.reads.clear()

    _, sheet = write_contact_sheet(store, "run-a", rows, draft) or ("", b"")
    draft.close()

    assert [p for p in store.reads if p.startswith("images/")] == ["images/0.jpg"]
    for position in range(5):
        assert _close(_centre(sheet, position), COLOURS[position]), position
