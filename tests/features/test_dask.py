"""With `AFTERSALE_DASK_ADDRESS` set, feature building and batch scoring run their units of
work as tasks of that Dask cluster's workers and publish what one machine publishes."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow.parquet as pq
import pytest

from aftersale.settings import get_settings
from features.build import parallel
from features.build.tables import BUILDERS, write_feature_tables
from features.contract.io import read_validated

pytestmark = pytest.mark.slow

distributed = pytest.importorskip("distributed")


def ran_on_workers(client, task_stream: list[dict], name: str) -> int:
    """How many tasks named `name` the cluster's worker processes ran."""
    pids = client.run(os.getpid)
    assert len(pids) == 2
    assert os.getpid() not in pids.values()
    done = [t for t in task_stream if t["key"].startswith(f"{name}-")]
    assert {t["worker"] for t in done} <= set(pids)
    return len(done)


def test_the_features_built_on_the_cluster_equal_one_process(
    dask_cluster, sim_dir, tmp_path, monkeypatch
) -> None:
    from flows.build_features import publish_features

    local, client = dask_cluster
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AFTERSALE_DASK_ADDRESS", local.scheduler_address)
    assert get_settings().dask_address == local.scheduler_address
    with distributed.get_task_stream(client) as stream:
        on_cluster, _ = publish_features.fn(sim_dir, tmp_path / "dask")
    units = parallel.plan(sim_dir, parallel.customer_build.CHUNK_CUSTOMERS)
    assert ran_on_workers(client, stream.data, "_run") == len(units) >= 4
    # Each worker dropped the raw tables it kept for the build.
    assert set(client.run(lambda: len(parallel._state)).values()) == {0}
    one_process = write_feature_tables(read_validated(sim_dir), tmp_path / "one")
    for _, folder in BUILDERS.values():
        one = pq.read_table(one_process / folder)
        dask = pq.read_table(on_cluster / folder)
        assert one.num_rows == dask.num_rows > 0, folder
        keys = [c for c in one.column_names if c.endswith("_id") or c in ("category", "event_ts")]
        order = [(k, "ascending") for k in keys]
        assert one.sort_by(order).equals(dask.sort_by(order)), folder


def test_customer_ranges_on_the_cluster_write_the_parts_of_the_process_build(
    dask_cluster, sim_dir, tmp_path
) -> None:
    _, client = dask_cluster
    on_cluster = parallel.build_parallel(
        sim_dir, tmp_path / "dask", chunk_customers=150, client=client
    )
    processes = parallel.build_parallel(sim_dir, tmp_path / "procs", workers=2, chunk_customers=150)
    parts = sorted(p.relative_to(processes) for p in processes.glob("*/*.parquet"))
    assert len(parts) >= 6
    assert sorted(p.relative_to(on_cluster) for p in on_cluster.glob("*/*.parquet")) == parts
    for part in parts:
        assert (on_cluster / part).read_bytes() == (processes / part).read_bytes(), part


def test_the_queue_scored_on_the_cluster_equals_one_process(
    dask_cluster, trained_registry, monkeypatch
) -> None:
    from flows import score_batch as flow
    from serving import batch

    local, client = dask_cluster
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(trained_registry.data_dir))
    monkeypatch.delenv("AFTERSALE_DASK_ADDRESS", raising=False)
    settings = get_settings()
    inputs = flow.load_inputs.fn(settings, None)
    models = flow.load_models.fn(settings)
    one_call = flow.build_queue.fn(models, inputs, settings)

    monkeypatch.setenv("AFTERSALE_DASK_ADDRESS", local.scheduler_address)
    # Small chunks: every model's rows are split over several tasks.
    monkeypatch.setattr(batch, "SCORE_CHUNK_ROWS", 100)
    with distributed.get_task_stream(client) as stream:
        on_cluster = flow.build_queue.fn(models, inputs, get_settings())
    chunks = -(-len(inputs["customers"]) // 100) + -(-len(inputs["shipments"]) // 100)
    assert ran_on_workers(client, stream.data, "score_rows") == chunks >= 3
    assert len(one_call.queue) > 0
    pd.testing.assert_frame_equal(on_cluster.queue, one_call.queue)
    assert (on_cluster.customers_scored, on_cluster.shipments_scored) == (
        one_call.customers_scored,
        one_call.shipments_scored,
    )
