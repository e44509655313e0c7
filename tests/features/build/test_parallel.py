"""The multi-process build publishes exactly what the single-process build does."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.build.parallel import build_parallel, plan, watermark_of
from features.build.shipments import shipment_feature_chunks
from features.build.tables import BUILDERS, conform, write_feature_tables
from features.contract.io import read_validated
from features.instants import watermark
from features.repo import feature_views

pytestmark = pytest.mark.slow


def test_parallel_equals_sequential(sim_dir, tmp_path) -> None:
    tables = read_validated(sim_dir)
    assert watermark_of(sim_dir) == watermark(tables)
    assert watermark_of(sim_dir, happened=True) == watermark(tables, happened=True)
    sequential = write_feature_tables(tables, tmp_path / "one")
    parallel = build_parallel(sim_dir, tmp_path / "two", workers=2, chunk_customers=150)
    units = plan(sim_dir, 150)
    assert len([u for u in units if u.view == "customer_snapshots"]) == 3
    # Shipment rows come in ranges of shipments inside one part, like one process writes.
    ranges = list(shipment_feature_chunks(tables, chunk_shipments=500))
    assert len(ranges) >= 2
    view = next(v for v in feature_views() if v.name == "shipment_events")
    in_ranges = pa.concat_tables([conform(r, view, watermark(tables)) for r in ranges])
    assert in_ranges.equals(pq.read_table(sequential / "shipment_events"))
    for _, folder in BUILDERS.values():
        one = pq.read_table(sequential / folder)
        two = pq.read_table(parallel / folder)
        assert len(list((parallel / folder).glob("*.parquet"))) >= 1
        assert one.num_rows == two.num_rows > 0, folder
        keys = [c for c in one.column_names if c.endswith("_id") or c in ("category", "event_ts")]
        order = [(k, "ascending") for k in keys]
        assert one.sort_by(order).equals(two.sort_by(order)), folder
