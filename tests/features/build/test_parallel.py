"""The multi-process build publishes exactly what the single-process build does."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from features.build.parallel import build_parallel, plan, watermark_of
from features.build.tables import BUILDERS, watermark, write_feature_tables
from features.contract.io import read_validated

pytestmark = pytest.mark.slow


def test_parallel_equals_sequential(sim_dir, tmp_path) -> None:
    tables = read_validated(sim_dir)
    assert watermark_of(sim_dir) == watermark(tables)
    sequential = write_feature_tables(tables, tmp_path / "one")
    parallel = build_parallel(
        sim_dir, tmp_path / "two", workers=2, chunk_customers=150, chunk_shipments=500
    )
    units = plan(sim_dir, 150, 500)
    assert len([u for u in units if u.view == "customer_snapshots"]) == 3
    assert len([u for u in units if u.view == "shipment_events"]) >= 2
    for _, folder in BUILDERS.values():
        one = pq.read_table(sequential / folder)
        two = pq.read_table(parallel / folder)
        assert len(list((parallel / folder).glob("*.parquet"))) >= 1
        assert one.num_rows == two.num_rows > 0, folder
        keys = [c for c in one.column_names if c.endswith("_id") or c in ("category", "event_ts")]
        order = [(k, "ascending") for k in keys]
        assert one.sort_by(order).equals(two.sort_by(order)), folder
