"""Every contract rule survives the absence or the wrong type of each column it reads, in
its own table and in the tables it references: what it cannot read, it skips, because the
reading step has already named that column. One rule's missing input must never become
another rule's traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from aftersale.cli import app
from features.contract.schema import CONTRACT
from features.contract.validate import check_tables

COLUMNS = [(table, column.name) for table, schema in CONTRACT.items() for column in schema.columns]


def wrong_type(column: pa.ChunkedArray, kind: str) -> pa.Array:
    """The same number of values in a type the contract does not declare for the column."""
    if kind == "string":
        return pa.array(range(len(column)), pa.int64())
    return pa.array(["x"] * len(column), pa.string())


def test_cli_names_a_referenced_tables_missing_column(
    sim_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Outreach subjects are owned through orders.customer_id; without it the owner check is
    # skipped and the missing column is the one error.
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path / "data"))
    folder = tmp_path / "raw"
    shutil.copytree(sim_dir, folder)
    orders = pq.read_table(folder / "orders.parquet")
    pq.write_table(orders.drop_columns(["customer_id"]), folder / "orders.parquet")
    result = CliRunner().invoke(app, ["validate", str(folder)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    assert "orders: missing columns: customer_id (orders.parquet)" in result.output
    assert "1 violations" in result.output


@pytest.mark.parametrize(("table", "column"), COLUMNS, ids=[f"{t}.{c}" for t, c in COLUMNS])
def test_rules_skip_a_missing_column(
    sim_tables: dict[str, pa.Table], table: str, column: str
) -> None:
    tables = dict(sim_tables)
    tables[table] = tables[table].drop_columns([column])
    problems, notes = check_tables(tables)
    # The simulated business is valid: nothing is left to report but what could not be read.
    assert problems == []
    assert all(isinstance(note, str) for note in notes)


@pytest.mark.parametrize(("table", "column"), COLUMNS, ids=[f"{t}.{c}" for t, c in COLUMNS])
def test_rules_skip_a_column_of_the_wrong_type(
    sim_tables: dict[str, pa.Table], table: str, column: str
) -> None:
    tables = dict(sim_tables)
    values = tables[table].column(column)
    at = tables[table].column_names.index(column)
    kind = CONTRACT[table].column(column).kind
    tables[table] = tables[table].set_column(at, column, wrong_type(values, kind))
    problems, _ = check_tables(tables)
    assert problems == []


def test_rules_skip_a_table_without_columns(sim_tables: dict[str, pa.Table]) -> None:
    tables = dict(sim_tables)
    tables["shipments"] = pa.table({})
    problems, notes = check_tables(tables)
    assert problems == []
    assert any("shipments.shipment_id" in note for note in notes)


def test_subjects_in_an_empty_table_are_unknown_not_a_crash(
    sim_tables: dict[str, pa.Table],
) -> None:
    tables = dict(sim_tables)
    tables["shipments"] = tables["shipments"].slice(0, 0)
    tables["tracking_events"] = tables["tracking_events"].slice(0, 0)
    tables["outreach"] = tables["outreach"].filter(
        pa.compute.equal(tables["outreach"].column("action"), "delay_notice")
    )
    problems, _ = check_tables(tables)
    assert [(p.table, p.column, p.rule) for p in problems] == [
        ("outreach", "subject_id", "reference unknown shipments for action delay_notice")
    ]
