"""Loads that a retry cannot double: one batch of one entity, replaced whole in one transaction.

A client delivers an `Extraction` (`delivery`); `load_batch` makes it a `Batch` (`batch`: the
batch's id, counts, quarantined records and schema drift, and the steps every load shares —
reject-share check, quarantine rows, drift, incidents, high-water mark, audit) and loads it by
one of two kinds:

* `window` — REST and SQL records of an interval: COPY into a temporary table, then replace
  the target's rows of [window start, interval end) with the distinct new rows;
* `files` — batches scoped by source (file drops, SQL snapshots): replace the rows and the
  quarantine rows of exactly the files read; files set aside whole; a file over the reject
  threshold set aside alone; the historian's exports COPYed as bytes (`historian`).

After the commit, the extraction's `on_committed` runs (files move to the archive), then
`on_file_rejected` for each file set aside by the threshold.
"""

from __future__ import annotations

from datetime import datetime

from factory_platform.extract.load.batch import (
    Batch,
    EmptyAnswerRefused,
    IncompleteAnswerRefused,
    LoadRejected,
    LoadResult,
    LoadTarget,
    batch_id_for,
    ensure_raw_table,
)
from factory_platform.extract.load.delivery import (
    DelimitedFile,
    Extraction,
    SetAsideFile,
    SourceRecord,
)
from factory_platform.extract.load.files import load_files
from factory_platform.extract.load.historian import ensure_historian_tables
from factory_platform.extract.load.window import load_window
from factory_platform.warehouse import ensure_warehouse_once

__all__ = [
    "DelimitedFile",
    "EmptyAnswerRefused",
    "Extraction",
    "IncompleteAnswerRefused",
    "LoadRejected",
    "LoadResult",
    "LoadTarget",
    "SetAsideFile",
    "SourceRecord",
    "batch_id_for",
    "ensure_historian_tables",
    "ensure_raw_table",
    "load_batch",
]


def load_batch(
    dsn: str,
    target: LoadTarget,
    extraction: Extraction,
    *,
    interval_start: datetime,
    interval_end: datetime,
    window_start: datetime,
    run_id: str | None = None,
    watermark: str = "advance",
) -> LoadResult:
    """Load one batch: replace the target rows of [window_start, interval_end) (or of the
    extraction's `replace_sources`, for file drops) with the distinct valid records;
    quarantine the rest. Calls the extraction's `on_committed` after the commit.

    `watermark` (see `Batch.record_watermark`): "advance" moves the entity's high-water mark
    to `interval_end` when the batch starts at or before it; "start" also creates a missing
    mark (a scheduled run); "keep" leaves it alone (a snapshot has no time position)."""
    ensure_warehouse_once(dsn)
    batch = Batch(target, extraction, interval_start=interval_start, interval_end=interval_end,
                  window_start=window_start, run_id=run_id, watermark=watermark)
    if extraction.replace_sources is not None:
        load_files(dsn, batch)
    else:
        load_window(dsn, batch)
    if extraction.on_committed:
        extraction.on_committed()
    if extraction.on_file_rejected:
        for name, reason in batch.result.files_rejected.items():
            extraction.on_file_rejected(name, reason)
    return batch.result
