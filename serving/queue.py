"""The outreach queue file and the record of queued actions.

`score_batch` writes the day's queue as one Parquet file, atomically (a temporary file in
the same folder, then a rename), so schedulers and the service only ever see a whole queue.
The service keeps it in memory and reloads it when the file changes. Every queued action is
also appended to a history file, which the frequency cap counts.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from models.served.atomic import write_atomic as write_file_atomic

T = TypeVar("T")

QUEUE_FILE = "outreach_queue.parquet"
HISTORY_FILE = "outreach_history.parquet"
# Per customer, the action of highest predicted uplift in the latest batch.
EFFECTS_FILE = "outreach_effects.parquet"
_META_KEY = b"aftersale"


def write_atomic(table: pa.Table, path: Path) -> Path:
    """Write a Parquet file so readers see the old file or the new one, never a part."""
    return write_file_atomic(path, lambda scratch: pq.write_table(table, scratch))


# The files one batch writes together: kept before a night scores, put back if it fails.
BATCH_FILES = (QUEUE_FILE, EFFECTS_FILE, HISTORY_FILE)
KEPT_FOLDER = ".kept"


def keep_batch(folder: Path) -> Path:
    """Keep the current batch files (hard links: every writer replaces a file by renaming,
    so a link holds the old content) for `restore_batch`; returns where they are kept."""
    kept = folder / KEPT_FOLDER
    shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir(parents=True)
    for name in BATCH_FILES:
        if (folder / name).is_file():
            os.link(folder / name, kept / name)
    return kept


def restore_batch(folder: Path, kept: Path) -> None:
    """Put back the batch files `keep_batch` kept; a file that did not exist then is removed."""
    for name in BATCH_FILES:
        if (kept / name).is_file():
            os.replace(kept / name, folder / name)
        else:
            (folder / name).unlink(missing_ok=True)
    shutil.rmtree(kept, ignore_errors=True)


def drop_kept(kept: Path) -> None:
    """Forget the files `keep_batch` kept, once the new batch stands."""
    shutil.rmtree(kept, ignore_errors=True)


def write_queue(queue: pd.DataFrame, folder: Path, meta: dict, name: str = QUEUE_FILE) -> Path:
    """Write the queue (or another batch table) with its metadata (as_of, queue date, known
    regions, models)."""
    table = pa.Table.from_pandas(queue, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()}
    )
    return write_atomic(table, folder / name)


# The history holds the `outreach` contract table's columns (sent and held-out actions, with
# the propensity of their arm) and when each was queued.
HISTORY_COLUMNS = {
    "outreach_id": object,
    "customer_id": object,
    "ts": "datetime64[us, UTC]",
    "action": object,
    "channel": object,
    "subject_id": object,
    "propensity": np.float64,
    "holdout": bool,
    "queued_ts": "datetime64[us, UTC]",
    "queue_date": object,
}


def read_history(folder: Path) -> pd.DataFrame:
    """Actions queued so far, sent and held out (`HISTORY_COLUMNS`)."""
    path = folder / HISTORY_FILE
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in HISTORY_COLUMNS.items()})
    return pq.read_table(path).to_pandas()


def outreach_log(history: pd.DataFrame) -> pd.DataFrame:
    """The history as rows of the `outreach` contract table: what the next training learns
    from, held-out actions included."""
    from features.contract.schema import OUTREACH

    return history.loc[:, [c.name for c in OUTREACH.columns]].reset_index(drop=True)


def record_queued(queue: pd.DataFrame, folder: Path, as_of: pd.Timestamp) -> Path:
    """Add the queue's actions to the history, replacing an earlier queue of the same day
    (scoring a day twice does not count its actions twice).

    Args:
        queue: The day's queue; `holdout` and `propensity` when a holdout was drawn (else
            every action is sent, with propensity 1).
        folder: The serving folder.
        as_of: The queue's decision instant.
    """
    day = as_of.strftime("%Y-%m-%d")
    history = read_history(folder)
    history = history[history["queue_date"] != day]
    n = len(queue)
    held = queue["holdout"] if "holdout" in queue else pd.Series(False, index=queue.index)
    propensity = queue["propensity"] if "propensity" in queue else pd.Series(1.0, index=queue.index)
    sent_at = pd.to_datetime(
        queue["send_window_start"]
        if "send_window_start" in queue
        else pd.Series(as_of, index=queue.index),
        utc=True,
    )
    new = pd.DataFrame(
        {
            "outreach_id": [f"q{as_of:%Y%m%d}-{int(r):06d}" for r in queue["rank"]]
            if "rank" in queue
            else [f"q{as_of:%Y%m%d}-{i + 1:06d}" for i in range(n)],
            "customer_id": queue["customer_id"].astype(object),
            "ts": sent_at.astype("datetime64[us, UTC]"),
            "action": queue["action"].astype(object),
            "channel": queue["channel"].astype(object) if "channel" in queue else None,
            "subject_id": queue["subject_id"].astype(object) if "subject_id" in queue else None,
            "propensity": propensity.astype(np.float64),
            "holdout": held.astype(bool),
            "queued_ts": pd.Series(as_of, index=queue.index).astype("datetime64[us, UTC]"),
            "queue_date": day,
        }
    )
    frames = [f for f in (history, new) if len(f)]
    merged = pd.concat(frames, ignore_index=True) if frames else new
    table = pa.Table.from_pandas(merged, preserve_index=False)
    return write_atomic(table, folder / HISTORY_FILE)


@dataclass(frozen=True)
class LoadedQueue:
    """A queue file read into memory."""

    frame: pd.DataFrame
    meta: dict
    stamp: tuple[int, int]


class ChangedFile(Generic[T]):
    """A value read from a file published whole, read again only when the file's path,
    modification time or size changes; requests in between get the value held."""

    def __init__(self) -> None:
        self._held: tuple[Path, tuple[int, int], T] | None = None
        self._lock = threading.Lock()

    def get(self, path: Path, load: Callable[[Path, tuple[int, int]], T]) -> T | None:
        """The value `load(path, stamp)` read from the file as it is now (None when there
        is no file)."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        held = self._held
        if held is not None and held[:2] == (path, stamp):
            return held[2]
        with self._lock:
            if self._held is None or self._held[:2] != (path, stamp):
                self._held = (path, stamp, load(path, stamp))
            return self._held[2]


def _read_queue(path: Path, stamp: tuple[int, int]) -> LoadedQueue:
    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
    return LoadedQueue(table.to_pandas(), meta, stamp)


class QueueCache:
    """The served queue (or another batch table), re-read when the file's modification time
    or size changes."""

    def __init__(self, folder: Path, name: str = QUEUE_FILE) -> None:
        self.path = folder / name
        self._file: ChangedFile[LoadedQueue] = ChangedFile()

    def get(self) -> LoadedQueue | None:
        """The current queue, or None when none was written yet."""
        return self._file.get(self.path, _read_queue)
