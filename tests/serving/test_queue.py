"""The batch files a night keeps before scoring, and puts back when it fails."""

from __future__ import annotations

import pandas as pd

from serving import queue as queue_file


def test_kept_batch_files_are_put_back_whole(tmp_path) -> None:
    path = queue_file.write_queue(
        pd.DataFrame({"rank": [1], "customer_id": ["c1"]}), tmp_path, {"queue_date": "2025-01-01"}
    )
    stored = path.read_bytes()
    kept = queue_file.keep_batch(tmp_path)
    queue_file.write_queue(
        pd.DataFrame({"rank": [1, 2], "customer_id": ["c2", "c3"]}), tmp_path, {}
    )
    queue_file.write_queue(pd.DataFrame({"x": [1]}), tmp_path, {}, queue_file.EFFECTS_FILE)
    queue_file.restore_batch(tmp_path, kept)
    assert path.read_bytes() == stored
    # Files the night wrote anew are gone again; so is what was kept.
    assert sorted(p.name for p in tmp_path.iterdir()) == [queue_file.QUEUE_FILE]


def test_dropping_what_was_kept_leaves_the_new_batch(tmp_path) -> None:
    kept = queue_file.keep_batch(tmp_path)
    path = queue_file.write_queue(pd.DataFrame({"rank": [1]}), tmp_path, {})
    queue_file.drop_kept(kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
