"""A run's contact sheet: its first stored images on one JPEG, and which job sits in which cell.

``runs/{run}/contact-sheet.jpg`` is what the Prefect UI shows; ``contact-sheet.json`` beside it
indexes the cells. A re-run's reused jobs are cut from the sheet of the run that stored them
(one read and one decode per earlier run) instead of each image being read and decoded again:
for a re-run of 60 reused 1K JPEGs that was 0.5 s of its 1.3 s, and on GCS 60 GETs. A first
run's cells are drawn while it renders (``SheetDraft``), not after its last image.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from PIL import Image
from pydantic import BaseModel

from bananaflow.errors import BananaflowError
from bananaflow.imaging import contact_sheet, cut_cells, sheet_cell
from bananaflow.records import ManifestRow
from bananaflow.storage import Store, check_relative

# A glance, not an archive: the sheet shows the first images and the manifest lists them all.
# Unbounded, it held every image's bytes plus a canvas of N/4 rows of 256 px in memory (about
# 0.7 GB at 1000 images).
MAX_SHEET_IMAGES = 64
CELL, COLUMNS = 256, 4
READERS = 8  # images read at once: one GET after another is 64 round trips to GCS
# Below this many cells, reading and decoding an earlier run's whole sheet costs more than
# reading the images themselves.
MIN_CELLS_TO_CUT = 4


class SheetIndex(BaseModel):
    """The job of each cell of a sheet, row by row."""

    cell: int
    columns: int
    jobs: list[str]


def sheet_path(run_id: str) -> str:
    return f"runs/{check_relative(run_id, field='run_id')}/contact-sheet.jpg"


def _index_path(run_id: str) -> str:
    return sheet_path(run_id).removesuffix(".jpg") + ".json"


class SheetDraft:
    """The cells of a run's sheet, drawn in the background as its jobs upload.

    A first run mostly waits on Google's quota; reading and decoding its images for the sheet
    after the last one arrived was about 0.5 s of the run's tail (60 1K images). The first
    ``MAX_SHEET_IMAGES`` jobs to upload are drawn; the sheet shows the first uploaded rows in
    job order, so in a larger run a few cells may still be drawn at the end.
    """

    def __init__(self, store: Store):
        self._store = store
        self._pool: ThreadPoolExecutor | None = None
        self._cells: dict[str, Future[bytes | None]] = {}

    def offer(self, row: ManifestRow) -> None:
        """Called as each row ends; returns at once."""
        if row.status != "uploaded" or row.reused_from_run or len(self._cells) >= MAX_SHEET_IMAGES:
            return  # a reused job's cell comes from its own run's sheet
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="sheet-draft")
        path = _image_path(self._store, row)
        self._cells[row.job_id] = self._pool.submit(self._draw, path)

    def _draw(self, path: str | None) -> bytes | None:
        data = _read(self._store, path)
        return sheet_cell(data, CELL) if data else None

    def cell(self, job_id: str) -> bytes | None:
        """The drawn cell of a job (waiting for it if need be); None if not drawn."""
        future = self._cells.get(job_id)
        try:
            return future.result() if future else None
        except Exception:  # a cell is a glance: the image is read again at the end
            return None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._cells.clear()


def read_images(store: Store, paths: Sequence[str | None]) -> list[bytes | None]:
    """Each path's bytes, several at a time; None for a missing path or object (deleted since:
    a sheet shows the others)."""
    with ThreadPoolExecutor(READERS) as pool:
        return list(pool.map(lambda path: _read(store, path), paths))


def _read(store: Store, path: str | None) -> bytes | None:
    try:
        return store.get(path) if path else None
    except FileNotFoundError:
        return None


def write_contact_sheet(
    store: Store, run_id: str, rows: list[ManifestRow], draft: SheetDraft | None = None
) -> tuple[str, bytes] | None:
    """Draw, store and index the sheet of the first uploaded rows; None if none can be read."""
    shown = [row for row in rows if row.status == "uploaded"][:MAX_SHEET_IMAGES]
    by_run: dict[str, list[int]] = defaultdict(list)  # positions of reused rows, by their run
    for i, row in enumerate(shown):
        if row.reused_from_run:
            by_run[row.reused_from_run].append(i)
    # Only runs worth an index read: enough cells to cut, or the one run a re-run reused.
    indexes = {
        run: _read_index(store, run)
        for run, positions in by_run.items()
        if len(positions) >= MIN_CELLS_TO_CUT or len(by_run) == 1
    }
    same = _same_sheet(store, shown, indexes) if len(by_run) == 1 else None
    if same is not None:
        return _store(store, run_id, same, [row.job_id for row in shown])
    items: dict[int, bytes | Image.Image] = {}
    for run, positions in by_run.items():
        index = indexes.get(run)
        if index is not None and len(positions) >= MIN_CELLS_TO_CUT:
            items.update(_cut_from(store, run, index, {shown[i].job_id: i for i in positions}))
    if draft is not None:
        drawn = {i: draft.cell(row.job_id) for i, row in enumerate(shown) if i not in items}
        items.update({i: cell for i, cell in drawn.items() if cell})
    todo = [i for i in range(len(shown)) if i not in items]
    read = read_images(store, [_image_path(store, shown[i]) for i in todo])
    items.update({i: data for i, data in zip(todo, read, strict=True) if data})
    kept = [(row, items[i]) for i, row in enumerate(shown) if i in items]
    if not kept:
        return None
    sheet = contact_sheet(
        [item for _, item in kept],
        [f"{row.job_id[:8]} {row.aspect_ratio}" for row, _ in kept],
        columns=COLUMNS,
        cell=CELL,
    )
    return _store(store, run_id, sheet, [row.job_id for row, _ in kept])


def _store(store: Store, run_id: str, sheet: bytes, jobs: list[str]) -> tuple[str, bytes]:
    uri = store.put(sheet_path(run_id), sheet, content_type="image/jpeg", create_only=False).uri
    index = SheetIndex(cell=CELL, columns=COLUMNS, jobs=jobs)
    store.put(
        _index_path(run_id),
        index.model_dump_json().encode(),
        content_type="application/json",
        create_only=False,
    )
    return uri, sheet


def _image_path(store: Store, row: ManifestRow) -> str | None:
    return (row.thumbnail_paths or [row.path])[0] or store.relative(row.uri)


def _read_index(store: Store, run: str) -> SheetIndex | None:
    """An earlier run's index, if it has one of this sheet's cell size and columns (a sheet from
    before the index, or of another size, has none to offer)."""
    try:
        index = SheetIndex.model_validate_json(store.get(_index_path(run)))
    except (OSError, ValueError, BananaflowError):
        return None
    return index if (index.cell, index.columns) == (CELL, COLUMNS) else None


def _same_sheet(
    store: Store, shown: list[ManifestRow], indexes: dict[str, SheetIndex | None]
) -> bytes | None:
    """An earlier run's sheet when this one would be the same cells in the same order (a re-run
    that reused every shown job of one run): its bytes, neither decoded nor encoded again."""
    if any(row.reused_from_run is None for row in shown):
        return None
    ((run, index),) = indexes.items()
    if index is None or index.jobs != [row.job_id for row in shown]:
        return None
    try:
        return store.get(sheet_path(run))
    except (OSError, BananaflowError):  # gone or unreadable: the cells are drawn again
        return None


def _cut_from(
    store: Store, run: str, index: SheetIndex, wanted: dict[str, int]
) -> dict[int, Image.Image]:
    """``wanted``: job id -> position on the new sheet. A sheet missing or unreadable is {}:
    those images are then read as usual."""
    found = {k: wanted[job] for k, job in enumerate(index.jobs) if job in wanted}
    if not found:
        return {}
    try:
        sheet = store.get(sheet_path(run))
        cells = cut_cells(sheet, CELL, COLUMNS, list(found))
    except (OSError, ValueError, BananaflowError):
        return {}
    return {found[k]: im for k, im in cells.items()}
