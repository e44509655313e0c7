"""The ingest and build_features flows, run for real through Prefect on a small business."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from aftersale.settings import get_settings
from features import versioned
from features.ingest import ContractError
from features.store.config import feature_store
from flows.build_features import build_features
from flows.ingest import check_contract, ingest
from flows.train import train
from models.served.registry import CHAMPION, tracking

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, prefect_harness):
    """A data folder for this module, selected through the environment."""
    folder = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def ingested(data_dir, sim_dir) -> Path:
    return ingest(source="folder", path=sim_dir)


@pytest.fixture(scope="module")
def first_build(ingested) -> Path:
    return build_features(materialize_to_online=True)


def snapshot(version: Path) -> dict[str, pd.DataFrame]:
    return {p.name: pq.read_table(p).to_pandas() for p in sorted(version.iterdir()) if p.is_dir()}


def test_ingest_publishes_typed_parquet(ingested, sim_dir) -> None:
    settings = get_settings()
    assert versioned.current(settings.raw_root) == ingested
    names = {p.name for p in ingested.glob("*.parquet")}
    assert {"customers.parquet", "orders.parquet", "contacts.parquet"} <= names
    original = pq.read_table(sim_dir / "orders.parquet")
    assert pq.read_table(ingested / "orders.parquet").equals(original)


def test_rejected_batch_leaves_current_raw_intact(ingested, tmp_path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(ingested, bad)
    orders = pq.read_table(bad / "orders.parquet").to_pandas()
    orders.loc[0, "customer_id"] = "ghost"
    orders.to_parquet(bad / "orders.parquet")
    with pytest.raises(ContractError, match=r"orders.customer_id: 1 row references unknown"):
        ingest(source="folder", path=bad)
    settings = get_settings()
    assert versioned.current(settings.raw_root) == ingested
    assert not list(settings.raw_root.glob(".v-*.partial"))


def test_check_contract_task_logic(ingested, tmp_path) -> None:
    staging = tmp_path / "staging"
    shutil.copytree(ingested, staging)
    counts = check_contract.fn(staging, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert counts["customers"] == pq.ParquetFile(ingested / "customers.parquet").metadata.num_rows


def test_build_features_publishes_and_materializes(first_build) -> None:
    settings = get_settings()
    assert versioned.current(settings.features_dir) == first_build
    tables = snapshot(first_build)
    assert set(tables) == {"customer_snapshots", "shipment_events", "customer_category", "orders"}
    customers = tables["customer_snapshots"]
    latest = customers.sort_values("event_ts").drop_duplicates("customer_id", keep="last")
    row = latest[latest["orders_total"] > 0].iloc[0]
    online = (
        feature_store(settings)
        .get_online_features(
            features=["customer_snapshots:orders_total"],
            entity_rows=[{"customer_id": row["customer_id"]}],
        )
        .to_dict()
    )
    assert online["orders_total"] == [row["orders_total"]]


def test_rebuild_of_same_data_is_idempotent(first_build) -> None:
    second = build_features(materialize_to_online=True)
    assert second != first_build
    before, after = snapshot(first_build), snapshot(second)
    for name in before:
        pd.testing.assert_frame_equal(before[name], after[name], obj=name)


def test_interrupted_build_leaves_previous_tables_intact(first_build, monkeypatch) -> None:
    settings = get_settings()
    current = versioned.current(settings.features_dir)
    written = []
    original_write = pq.ParquetWriter.write_table

    def failing_write(writer, table, *args, **kwargs):
        # The first table lands, the second never does (every retry fails too).
        written.append(writer.where)
        if Path(str(writer.where)).parent.name == "shipment_events":
            raise OSError("disk full")
        return original_write(writer, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing_write)
    with pytest.raises(OSError, match="disk full"):
        build_features.fn(materialize_to_online=False)
    assert len(written) > 2  # the publish task retried
    assert versioned.current(settings.features_dir) == current
    assert not list(settings.features_dir.glob(".v-*.partial"))
    assert pq.read_table(current / "customer_snapshots").num_rows > 0


def test_train_flow_registers_a_champion_in_the_default_store(first_build, monkeypatch) -> None:
    # The default: the model is trained in a child process of its own.
    monkeypatch.setenv("AFTERSALE_TRAIN_ISOLATED", "true")
    (summary,) = train(models=["churn"])
    settings = get_settings()
    assert summary.name == "churn"
    assert summary.version == "1"
    assert summary.promoted
    assert summary.champion == "1"
    assert 0.5 < summary.value <= 1.0
    # A folder source carries no simulator truth: no oracle to report.
    assert summary.oracle is None
    with tracking(settings.tracking_uri):
        version = MlflowClient().get_model_version_by_alias("churn", CHAMPION)
    assert str(version.version) == "1"
    assert version.run_id == summary.run_id


def test_a_model_trained_in_a_child_process_is_the_one_trained_here(
    first_build, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="training")
    monkeypatch.setenv("AFTERSALE_TRAIN_ISOLATED", "true")
    (child,) = train(models=["delay_risk"])
    from_child = [r for r in caplog.records if r.name.startswith("training.")]
    monkeypatch.setenv("AFTERSALE_TRAIN_ISOLATED", "false")
    (here,) = train(models=["delay_risk"])
    assert child.run_id != here.run_id
    assert (child.value, child.baseline, child.test_rows) == (
        here.value,
        here.baseline,
        here.test_rows,
    )
    # The child's log records reached this process's loggers.
    assert from_child
    assert {r.process for r in from_child} != {os.getpid()}


def test_two_models_trained_at_once_in_their_processes_are_those_trained_here(
    first_build, monkeypatch, caplog
) -> None:
    monkeypatch.setenv("AFTERSALE_TRAIN_ISOLATED", "true")
    monkeypatch.setenv("AFTERSALE_TRAIN_PROCESSES", "2")
    caplog.set_level(logging.INFO, logger="training")
    at_once = train(models=["delay_risk", "churn"])
    # Each child's records (made in the child, at the child's time) from its retrieval to
    # its last word.
    said = {
        name: [
            r.created
            for r in caplog.records
            if r.name.startswith("training.") and r.getMessage().startswith(f"{name}:")
        ]
        for name in ("delay_risk", "churn")
    }
    monkeypatch.setenv("AFTERSALE_TRAIN_ISOLATED", "false")
    here = train(models=["delay_risk", "churn"])
    assert [s.name for s in at_once] == ["delay_risk", "churn"]
    assert [(s.value, s.test_rows) for s in at_once] == [(s.value, s.test_rows) for s in here]
    # The two trainings overlapped in time: each said something before the other's last
    # word. (Their MLflow runs span only the logging at the end of each, which on a busy
    # machine need not overlap.)
    (delay_from, delay_to), (churn_from, churn_to) = (
        (min(said[name]), max(said[name])) for name in ("delay_risk", "churn")
    )
    assert delay_from < churn_to
    assert churn_from < delay_to


def test_train_flow_rejects_unknown_models(first_build) -> None:
    with pytest.raises(ValueError, match=r"unknown \['nope'\]"):
        train(models=["nope"])
