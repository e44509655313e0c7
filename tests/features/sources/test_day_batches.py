"""The simulator day by day: a history up to a day, then day batches upserted in order,
equals the history written at once, and the last day's history equals the plain run."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from features.contract.batches import (
    BATCH_FILE,
    Manifest,
    as_known_at,
    day_batch,
    read_manifest,
    upsert,
)
from features.contract.io import read_validated
from features.contract.schema import CONTRACT
from features.contract.validate import validate_folder
from features.sources.simulator import simulate, simulate_cuts, simulate_day, simulate_until
from features.sources.simulator.days import last_day

CUSTOMERS = 150
SEED = 3
MONTHS = 3
START = date(2024, 1, 1)
LAST = last_day(START, MONTHS)


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pa.Table]:
    folder = tmp_path_factory.mktemp("whole") / "raw"
    simulate(folder, customers=CUSTOMERS, seed=SEED, months=MONTHS)
    return read_validated(folder)


def by_key(tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """Rows in key order: row order carries no meaning in raw tables."""
    return {
        name: table.sort_by([(k, "ascending") for k in CONTRACT[name].key]).combine_chunks()
        for name, table in tables.items()
    }


def assert_same(left: dict[str, pa.Table], right: dict[str, pa.Table]) -> None:
    left, right = by_key(left), by_key(right)
    assert left.keys() == right.keys()
    for name in left:
        assert left[name].equals(right[name]), name


@pytest.mark.parametrize(
    ("first", "last"),
    [(date(2024, 1, 20), date(2024, 2, 10)), (date(2024, 3, 15), LAST)],
)
def test_history_then_days_equals_the_history_at_once(
    whole: dict[str, pa.Table], first: date, last: date
) -> None:
    tables = as_known_at(whole, first)
    day = first
    while day < last:
        day += timedelta(days=1)
        tables = upsert(tables, day_batch(whole, day))
    assert_same(tables, as_known_at(whole, last))
    if last == LAST:
        assert_same(tables, whole)


def test_a_day_batch_is_what_changed_that_day(whole: dict[str, pa.Table]) -> None:
    updated_earlier = 0
    for offset in range(10):
        day = date(2024, 2, 10) + timedelta(days=offset)
        batch = by_key(day_batch(whole, day))
        before = as_known_at(whole, day - timedelta(days=1))
        after = as_known_at(whole, day)
        for name in CONTRACT:
            # Rows known at the end of the day that were unknown or different the day before.
            seen = {tuple(row.values()) for row in before[name].to_pylist()}
            changed = after[name].filter(
                [tuple(row.values()) not in seen for row in after[name].to_pylist()]
            )
            assert batch[name].equals(by_key({name: changed})[name]), (name, day)
        shipments = batch["shipments"].to_pylist()
        for shipment in shipments:
            if shipment["shipped_ts"].date() < day:
                updated_earlier += 1
                assert shipment["delivered_ts"].date() == day
            else:
                assert shipment["shipped_ts"].date() == day
        assert batch["products"].num_rows == 0
    assert updated_earlier, "no parcel shipped earlier was delivered on those days"


def test_written_history_and_days_follow_the_same_rows(tmp_path: Path, whole) -> None:
    day = date(2024, 2, 1)
    kwargs = {"customers": CUSTOMERS, "seed": SEED, "months": MONTHS}
    simulate_until(tmp_path / "history", day, **kwargs)
    simulate_day(tmp_path / "next", day + timedelta(days=1), **kwargs)
    assert read_manifest(tmp_path / "history") == Manifest("history", day)
    assert read_manifest(tmp_path / "next") == Manifest("day", day + timedelta(days=1))
    assert validate_folder(tmp_path / "history").ok
    assert validate_folder(tmp_path / "history").notes == []
    history = read_validated(tmp_path / "history")
    following = read_validated(tmp_path / "next")
    assert_same(history, as_known_at(whole, day))
    assert_same(upsert(history, following), as_known_at(whole, day + timedelta(days=1)))


def test_cuts_of_one_simulation_equal_the_cuts_written_one_by_one(tmp_path: Path) -> None:
    day = date(2024, 2, 1)
    following = day + timedelta(days=1)
    kwargs = {"customers": CUSTOMERS, "seed": SEED, "months": MONTHS}
    simulate_until(tmp_path / "history", day, **kwargs)
    simulate_day(tmp_path / "next", following, **kwargs)
    cuts = [
        (tmp_path / "cuts" / "history", "history", day),
        (tmp_path / "cuts" / "next", "day", following),
    ]
    results = simulate_cuts(cuts, **kwargs)
    assert [r.out_dir for r in results] == [c[0] for c in cuts]
    for name in ("history", "next"):
        assert read_manifest(tmp_path / "cuts" / name) == read_manifest(tmp_path / name)
        assert_same(read_validated(tmp_path / "cuts" / name), read_validated(tmp_path / name))
    assert results[1].rows == {t: n.num_rows for t, n in read_validated(tmp_path / "next").items()}


def test_csv_day_batch_reads_back_the_same(tmp_path: Path, whole) -> None:
    day = date(2024, 2, 5)
    simulate_day(tmp_path / "day", day, customers=CUSTOMERS, seed=SEED, months=MONTHS, fmt="csv")
    assert (tmp_path / "day" / "orders.csv").is_file()
    assert json.loads((tmp_path / "day" / BATCH_FILE).read_text())["kind"] == "day"


@pytest.mark.parametrize("day", [date(2023, 12, 31), LAST + timedelta(days=1)])
def test_a_day_outside_the_period_is_refused(tmp_path: Path, day: date) -> None:
    with pytest.raises(ValueError, match="outside the simulated period"):
        simulate_day(tmp_path / "day", day, customers=10, months=MONTHS)
    assert not (tmp_path / "day").exists()


def test_the_command_writes_a_history_and_a_day(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from aftersale.cli import app

    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path / "data"))
    common = ["--customers", "40", "--seed", "5", "--months", "18"]
    runner = CliRunner()
    for option, day in (("--until", "2025-03-31"), ("--day", "2025-04-01")):
        out = tmp_path / option.strip("-")
        result = runner.invoke(app, ["simulate", "--out", str(out), option, day, *common])
        assert result.exit_code == 0, result.output
        kind = "history" if option == "--until" else "day"
        assert read_manifest(out) == Manifest(kind, date.fromisoformat(day))
    history = read_validated(tmp_path / "until")
    batch = read_validated(tmp_path / "day")
    simulate_until(tmp_path / "next", date(2025, 4, 1), customers=40, seed=5, months=18)
    assert_same(upsert(history, batch), read_validated(tmp_path / "next"))
