"""Appending day batches to the current raw data: each day is checked against the contract
and against what is already current, published atomically, and recorded so that a replay
changes nothing; every rejection names its cause and leaves the current version as it was."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from features import ingest, versioned
from features.contract.io import read_validated
from features.contract.schema import CONTRACT
from features.sources.base import FolderSource
from features.sources.simulator import simulate_cuts

CUSTOMERS = 300
SEED = 3
MONTHS = 3
HISTORY_END = date(2024, 2, 14)
FIRST, SECOND = HISTORY_END + timedelta(days=1), HISTORY_END + timedelta(days=2)
SIMULATION = {"customers": CUSTOMERS, "seed": SEED, "months": MONTHS}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The history up to HISTORY_END, the two following days, and the history up to the
    second of them."""
    root = tmp_path_factory.mktemp("days")
    cuts = [
        (root / "history", "history", HISTORY_END),
        (root / "first", "day", FIRST),
        (root / "second", "day", SECOND),
        (root / "before", "day", HISTORY_END),
        (root / "through_second", "history", SECOND),
    ]
    simulate_cuts(cuts, **SIMULATION)
    return {p.name: p for p in root.iterdir()}


@pytest.fixture
def raw_root(folders: dict[str, Path], tmp_path: Path) -> Path:
    """A raw root whose current version is the history, ingested as `aftersale ingest` does."""
    root = tmp_path / "raw"
    staging = ingest.stage(FolderSource(folders["history"]), root)
    ingest.check(staging)
    ingest.record_history(staging)
    versioned.publish(staging)
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def by_key(tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
    return {
        name: table.sort_by([(k, "ascending") for k in CONTRACT[name].key]).combine_chunks()
        for name, table in tables.items()
    }


def altered(
    folder: Path, tmp_path: Path, name: str, change: Callable[[pa.Table], pa.Table]
) -> Path:
    """A copy of a batch folder with one table changed."""
    copy = tmp_path / f"{folder.name}-altered"
    shutil.copytree(folder, copy)
    path = copy / f"{name}.parquet"
    pq.write_table(change(pq.read_table(path)), path)
    return copy


def set_column(table: pa.Table, column: str, values: list) -> pa.Table:
    index = table.schema.get_field_index(column)
    field = table.schema.field(index)
    return table.set_column(index, field, pa.array(values, field.type))


def test_days_appended_in_order_equal_the_history_through_the_last(folders, raw_root) -> None:
    first = ingest.append_day(folders["first"], raw_root)
    second = ingest.append_day(folders["second"], raw_root)
    assert first.changed
    assert second.changed
    assert versioned.current(raw_root) == second.version != first.version
    got = by_key(read_validated(second.version))
    want = by_key(read_validated(folders["through_second"]))
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].equals(want[name]), name
    record = versioned.metadata(second.version)
    assert record["through"] == SECOND.isoformat()
    assert sorted(record["days"]) == [FIRST.isoformat(), SECOND.isoformat()]


def test_the_first_day_updates_rows_of_the_history(folders) -> None:
    shipped = read_validated(folders["first"])["shipments"].column("shipped_ts").to_pylist()
    assert any(instant.date() < FIRST for instant in shipped), "no earlier parcel re-sent"


@pytest.mark.parametrize("later_days", [0, 1])
def test_ingesting_a_day_again_changes_nothing(folders, raw_root, later_days: int) -> None:
    ingest.append_day(folders["first"], raw_root)
    if later_days:
        ingest.append_day(folders["second"], raw_root)
    current = versioned.current(raw_root)
    before = snapshot(current)
    again = ingest.append_day(folders["first"], raw_root)
    assert not again.changed
    assert again.version == current == versioned.current(raw_root)
    assert snapshot(current) == before


def assert_rejected(raw_root: Path, batch: Path, error: type[Exception], *fragments: str) -> None:
    current = versioned.current(raw_root)
    before = snapshot(current)
    with pytest.raises(error) as caught:
        ingest.append_day(batch, raw_root)
    for fragment in fragments:
        assert fragment in str(caught.value), str(caught.value)
    assert versioned.current(raw_root) == current
    assert snapshot(current) == before
    assert not list(raw_root.glob(".v-*.partial"))


def test_a_day_not_after_the_current_end_is_rejected(folders, raw_root) -> None:
    assert_rejected(raw_root, folders["before"], ingest.BatchError, "not after the current end")


def test_a_replayed_day_with_other_content_is_rejected(folders, raw_root, tmp_path) -> None:
    ingest.append_day(folders["first"], raw_root)
    ingest.append_day(folders["second"], raw_root)
    changed = altered(folders["first"], tmp_path, "orders", lambda t: t.slice(1))
    assert_rejected(raw_root, changed, ingest.BatchError, "differs from the batch ingested")


def test_a_day_that_skips_one_is_rejected(folders, raw_root) -> None:
    assert_rejected(raw_root, folders["second"], ingest.BatchError, f"skips {FIRST}")


def test_a_reference_to_no_earlier_row_is_rejected(folders, raw_root, tmp_path) -> None:
    def unknown_customer(orders: pa.Table) -> pa.Table:
        return set_column(orders, "customer_id", ["c999999"] * orders.num_rows)

    batch = altered(folders["first"], tmp_path, "orders", unknown_customer)
    assert_rejected(
        raw_root, batch, ingest.ContractError, "orders.customer_id", "reference unknown customers"
    )


def test_a_duplicated_key_is_rejected(folders, raw_root, tmp_path) -> None:
    batch = altered(folders["first"], tmp_path, "orders", lambda t: pa.concat_tables([t, t]))
    assert_rejected(raw_root, batch, ingest.ContractError, "orders.order_id", "duplicated key")


def test_a_new_row_of_an_earlier_day_is_rejected(folders, raw_root, tmp_path) -> None:
    def a_day_early(orders: pa.Table) -> pa.Table:
        earlier = pc.subtract(orders.column("order_ts"), pa.scalar(timedelta(days=1)))
        return orders.set_column(2, orders.schema.field(2), earlier)

    batch = altered(folders["first"], tmp_path, "orders", a_day_early)
    assert_rejected(
        raw_root, batch, ingest.BatchError, "orders.order_ts", "new but their order_ts is before"
    )


def test_a_row_after_the_day_is_rejected(folders, raw_root, tmp_path) -> None:
    def next_day(events: pa.Table) -> pa.Table:
        later = pc.add(events.column("event_ts"), pa.scalar(timedelta(days=1)))
        return events.set_column(3, events.schema.field(3), later)

    batch = altered(folders["first"], tmp_path, "tracking_events", next_day)
    assert_rejected(
        raw_root,
        batch,
        ingest.BatchError,
        "tracking_events.event_ts",
        f"later than the end of {FIRST}",
    )


def test_a_resent_row_may_change_only_its_updates(folders, raw_root, tmp_path) -> None:
    def other_carrier(shipments: pa.Table) -> pa.Table:
        return set_column(shipments, "carrier", ["Elsewhere"] * shipments.num_rows)

    batch = altered(folders["first"], tmp_path, "shipments", other_carrier)
    assert_rejected(
        raw_root, batch, ingest.BatchError, "shipments.carrier", "re-sent with a changed carrier"
    )


def test_an_update_of_another_day_is_rejected(folders, raw_root, tmp_path) -> None:
    def delivered_earlier(shipments: pa.Table) -> pa.Table:
        delivered = pc.subtract(shipments.column("delivered_ts"), pa.scalar(timedelta(days=1)))
        index = shipments.schema.get_field_index("delivered_ts")
        return shipments.set_column(index, shipments.schema.field(index), delivered)

    batch = altered(folders["first"], tmp_path, "shipments", delivered_earlier)
    assert_rejected(
        raw_root, batch, ingest.BatchError, f"updated with a delivered_ts that is not on {FIRST}"
    )


def test_an_unreadable_batch_is_rejected(folders, raw_root, tmp_path) -> None:
    batch = altered(folders["first"], tmp_path, "orders", lambda t: t.drop_columns(["amount"]))
    assert_rejected(raw_root, batch, ingest.ContractError, "orders: missing columns: amount")


def test_a_folder_that_is_not_a_day_is_rejected(folders, raw_root) -> None:
    assert_rejected(raw_root, folders["history"], ingest.BatchError, "is not a day's batch")


def test_a_day_without_current_data_is_rejected(folders, tmp_path) -> None:
    with pytest.raises(ingest.BatchError, match="no raw data"):
        ingest.append_day(folders["first"], tmp_path / "empty")


@pytest.mark.slow
def test_the_command_appends_replays_and_names_a_rejection(
    folders, tmp_path, monkeypatch, prefect_harness
) -> None:
    from typer.testing import CliRunner

    from aftersale.cli import app
    from aftersale.settings import get_settings

    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()

    def run(folder: Path):
        result = runner.invoke(app, ["ingest", "--source", "folder", "--path", str(folder)])
        assert "Traceback" not in result.output, result.output
        return result

    assert run(folders["history"]).exit_code == 0
    appended = run(folders["first"])
    assert appended.exit_code == 0, appended.output
    assert f"appended day {FIRST}" in appended.output
    current = versioned.current(get_settings().raw_root)
    replayed = run(folders["first"])
    assert replayed.exit_code == 0, replayed.output
    assert f"unchanged: day {FIRST} was already ingested" in replayed.output
    rejected = run(folders["before"])
    assert rejected.exit_code == 1, rejected.output
    assert "rejected" in rejected.output
    assert f"day {HISTORY_END} is not after the current end {FIRST}" in rejected.output
    assert versioned.current(get_settings().raw_root) == current
