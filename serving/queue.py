"""The outreach queue file and the record of queued actions.

`score_batch` writes the day's queue as one Parquet file, atomically (a temporary file in
the same folder, then a rename), so schedulers and the service only ever see a whole queue.
The service keeps it in memory and reloads it when the file changes. Every queued action is
also appended to a history file, which the frequency cap counts.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

QUEUE_FILE = "outreach_queue.parquet"
HISTORY_FILE = "outreach_history.parquet"
_META_KEY = b"aftersale"


def write_atomic(table: pa.Table, path: Path) -> Path:
    """Write a Parquet file so readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        pq.write_table(table, scratch)
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    return path


def write_queue(queue: pd.DataFrame, folder: Path, meta: dict) -> Path:
    """Write the queue with its metadata (as_of, queue date, known regions, models)."""
    table = pa.Table.from_pandas(queue, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()}
    )
    return write_atomic(table, folder / QUEUE_FILE)


def read_history(folder: Path) -> pd.DataFrame:
    """Actions queued so far: customer_id, action, queued_ts, queue_date."""
    path = folder / HISTORY_FILE
    if not path.is_file():
        return pd.DataFrame(
            {
                "customer_id": pd.Series(dtype=object),
                "action": pd.Series(dtype=object),
                "queued_ts": pd.Series(dtype="datetime64[us, UTC]"),
                "queue_date": pd.Series(dtype=object),
            }
        )
    return pq.read_table(path).to_pandas()


def record_queued(queue: pd.DataFrame, folder: Path, as_of: pd.Timestamp) -> Path:
    """Add the queue's actions to the history, replacing an earlier queue of the same day
    (scoring a day twice does not count its actions twice)."""
    day = as_of.strftime("%Y-%m-%d")
    history = read_history(folder)
    history = history[history["queue_date"] != day]
    new = pd.DataFrame(
        {
            "customer_id": queue["customer_id"].astype(object),
            "action": queue["action"].astype(object),
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


class QueueCache:
    """The served queue, re-read when the file's modification time or size changes."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / QUEUE_FILE
        self._loaded: LoadedQueue | None = None
        self._lock = threading.Lock()

    def get(self) -> LoadedQueue | None:
        """The current queue, or None when none was written yet."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        loaded = self._loaded
        if loaded is not None and loaded.stamp == stamp:
            return loaded
        with self._lock:
            if self._loaded is None or self._loaded.stamp != stamp:
                table = pq.read_table(self.path)
                meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
                self._loaded = LoadedQueue(table.to_pandas(), meta, stamp)
            return self._loaded
