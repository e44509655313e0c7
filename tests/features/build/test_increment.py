"""A night's customer snapshots added to the previous version's answer every lookup as a
rebuild of the same data does: day after day, with the rows a day proved wrong restated."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features import ingest, versioned
from features.build import increment
from features.build.parallel import publish_features
from features.build.tables import write_feature_tables
from features.contract.io import read_validated
from features.instants import watermark
from features.sources.base import FolderSource
from features.sources.simulator import simulate_cuts

SIMULATION = {"customers": 1000, "seed": 11, "months": 4}
HISTORY_END = date(2024, 3, 20)
DAYS = [HISTORY_END + timedelta(days=n) for n in (1, 2, 3)]
KEY = ["customer_id", "event_ts"]


@pytest.fixture(scope="module", params=[1, 2], ids=["one process", "two processes"])
def nights(request, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A history ingested and built whole, then three days each appended and built as an
    increment (by one process, or beside the other tables by worker processes); beside
    them, the same data built whole at once."""
    workers = request.param
    root = tmp_path_factory.mktemp("increment")
    days = [(root / f"day-{day}", "day", day) for day in DAYS]
    simulate_cuts([(root / "history", "history", HISTORY_END), *days], **SIMULATION)
    raw_root, features_root = root / "raw", root / "features"
    staging = ingest.stage(FolderSource(root / "history"), raw_root)
    ingest.check(staging)
    ingest.record_history(staging)
    versioned.publish(staging)
    first, _ = publish_features(versioned.current(raw_root), features_root, workers=workers)
    versions = [first]
    parts = [len(list((first / increment.VIEW).glob("*.parquet")))]
    restated = []
    for day in DAYS:
        ingest.append_day(root / f"day-{day}", raw_root)
        previous = versions[-1]
        since = pd.Timestamp(versioned.metadata(previous)[increment.SINCE])
        restated.append(increment.previous_rows_after(previous, since).to_pandas())
        version, _ = publish_features(versioned.current(raw_root), features_root, workers=workers)
        versions.append(version)
        parts.append(len(list((version / increment.VIEW).glob("*.parquet"))))
    tables = read_validated(versioned.current(raw_root))
    whole = write_feature_tables(tables, root / "whole")
    return {
        "raw": versioned.current(raw_root),
        "versions": versions,
        "parts": parts,
        "whole": whole,
        "restated": restated,
        "end": watermark(tables, happened=True),
    }


def _rows(version: Path) -> pd.DataFrame:
    """A version's customer snapshots, one row per (customer, instant): the latest created."""
    frame = pq.read_table(version / increment.VIEW).to_pandas()
    frame = frame.sort_values([*KEY, "created_ts"], kind="stable")
    return frame.drop_duplicates(KEY, keep="last").drop(columns="created_ts")


def _as_of(rows: pd.DataFrame, instants: pd.DataFrame) -> pd.DataFrame:
    """Each (customer, instant)'s newest row at or before it."""
    found = pd.merge_asof(
        instants.sort_values("event_ts"),
        rows.rename(columns={"event_ts": "row_ts"}).sort_values("row_ts"),
        left_on="event_ts",
        right_on="row_ts",
        by="customer_id",
        direction="backward",
    )
    return found.drop(columns="row_ts").sort_values(KEY).reset_index(drop=True)


def test_each_night_adds_one_part_to_the_snapshots(nights) -> None:
    versions = nights["versions"]
    assert nights["parts"] == [1, 2, 3, 4]
    assert versioned.metadata(versions[-1])[increment.CODE] == increment.code_digest()
    # The other tables are built whole each night.
    assert len(list((versions[-1] / "shipment_events").glob("*.parquet"))) == 1


def test_every_lookup_answers_as_a_rebuild(nights) -> None:
    """At every instant either build has a row for, up to the data's end, each customer's
    newest row holds the same values in the added-to version as in the rebuild."""
    added, rebuilt = _rows(nights["versions"][-1]), _rows(nights["whole"])
    end = nights["end"]
    instants = pd.concat([added[KEY], rebuilt[KEY]]).drop_duplicates()
    instants = instants[instants["event_ts"] <= end]
    left, right = _as_of(added, instants), _as_of(rebuilt, instants)
    assert len(left) == len(instants) > 5_000
    for column in rebuilt.columns:
        a, b = left[column], right[column]
        same = (a == b) | (a.isna() & b.isna())
        assert same.all(), (column, left[~same].head(3), right[~same].head(3))
    # Every row stamped up to the data's end that the rebuild has, the added-to version has.
    missing = rebuilt[rebuilt["event_ts"] <= end].merge(added[KEY], how="left", indicator=True)
    assert (missing["_merge"] == "left_only").sum() == 0


def test_rows_a_day_proved_wrong_are_restated(nights) -> None:
    """A row stamped after the previous data's end that a rebuild does not have (a parcel
    that arrived before its promise, an invoice paid before it fell due) is restated, at its
    instant, with what the customer's newest rebuilt row holds there."""
    added, rebuilt = _rows(nights["versions"][-1]), _rows(nights["whole"])
    end = nights["end"]
    stale = pd.concat(nights["restated"]).drop_duplicates()
    stale = stale[stale["event_ts"] <= end]
    gone = stale.merge(rebuilt[KEY], how="left", indicator=True)
    gone = gone[gone["_merge"] == "left_only"].drop(columns="_merge")
    # The simulated days do prove some rows wrong: the case is exercised.
    assert len(gone) > 0
    left, right = _as_of(added, gone), _as_of(rebuilt, gone)
    features = [c for c in rebuilt.columns if c not in KEY]
    for column in features:
        a, b = left[column], right[column]
        assert ((a == b) | (a.isna() & b.isna())).all(), column
    assert np.isfinite(left["orders_total"].astype(float)).all()


def test_only_the_version_the_day_was_appended_to_by_the_same_code_is_extended(
    nights, monkeypatch
) -> None:
    raw, versions = nights["raw"], nights["versions"]
    # The current raw data are the third day appended to what versions[-2] was built from.
    assert increment.extendable(raw, versions[-2]) is not None
    assert increment.extendable(raw, versions[-1]) is None
    assert increment.extendable(raw, versions[0]) is None
    assert increment.extendable(raw, None) is None
    # A version built by other feature code is rebuilt, not extended.
    monkeypatch.setattr(increment, "code_digest", lambda: "other")
    assert increment.extendable(raw, versions[-2]) is None


def test_a_consuming_cut_gives_the_same_events_and_lets_the_whole_go(sim_tables) -> None:
    """Cutting the prepared events kind by kind out of the whole gives the cut a plain cut
    gives, and leaves the whole without events: the two are never held whole together."""
    from features.build import customers as customer_build

    codes = np.arange(0, sim_tables["customers"].num_rows, 3)
    plain = increment.restrict(customer_build.prepare(dict(sim_tables)), codes)
    whole = customer_build.prepare(dict(sim_tables))
    consumed = increment.restrict(whole, codes, consume=True)
    assert whole.kinds == {}
    assert consumed.customers.equals(plain.customers)
    assert consumed.end_s == plain.end_s
    assert consumed.kinds.keys() == plain.kinds.keys()
    for name, (events, windows) in plain.kinds.items():
        got, got_windows = consumed.kinds[name]
        assert got_windows == windows
        if events is None:
            assert got is None
            continue
        assert len(events.entity) > 0 or name.startswith("last_order")
        np.testing.assert_array_equal(got.entity, events.entity)
        np.testing.assert_array_equal(got.ts, events.ts)
        assert got.values.keys() == events.values.keys()
        for key, values in events.values.items():
            np.testing.assert_array_equal(got.values[key], values)


def test_an_increment_prepared_by_ranges_of_customers_writes_the_same_rows(nights) -> None:
    """The rows added after a day, prepared a few customers at a time, are the rows one
    preparation of every customer gives, in the same order: each range ends where the
    whole business ends."""
    previous = nights["versions"][-2]
    since = pd.Timestamp(versioned.metadata(previous)[increment.SINCE])
    restated = increment.previous_rows_after(previous, since)
    tables = read_validated(nights["raw"])
    customers = tables["customers"].num_rows

    def rows(range_customers: int) -> pd.DataFrame:
        chunks = increment.snapshot_increment(
            tables, since, restated, chunk_customers=50, range_customers=range_customers
        )
        return pd.concat([c.to_pandas() for c in chunks], ignore_index=True)

    whole = rows(customers)
    assert len(whole) > 0
    for size in (137, 1):
        pd.testing.assert_frame_equal(rows(size), whole)


def test_the_data_end_is_the_midnight_after_the_latest_prepared_event(sim_tables) -> None:
    """`data_end`, read from the instant columns alone, is the midnight after the latest
    event that preparing every customer makes (the default end of the snapshots)."""
    from features.build import customers as customer_build
    from features.build.common import US_PER_DAY

    prepared = customer_build.prepare(dict(sim_tables))
    latest = max(
        int(events.ts.max())
        for name, (events, _) in prepared.kinds.items()
        if events is not None and len(events.ts) and not name.startswith("last_order")
    )
    expected = pd.Timestamp((latest // US_PER_DAY + 1) * US_PER_DAY, unit="us", tz="UTC")
    assert customer_build.data_end(dict(sim_tables)) == expected
    assert prepared.end_s == expected.value // 1_000_000_000


def test_snapshots_built_by_ranges_of_customers_are_those_of_one_preparation(sim_tables) -> None:
    """The whole snapshot table, prepared a few customers at a time, equals the table one
    preparation of every customer gives, row for row."""
    from features.build import customers as customer_build

    tables = dict(sim_tables)
    n = tables["customers"].num_rows

    def table(range_customers: int, chunk_customers: int):
        return pa.concat_tables(
            customer_build.customer_feature_chunks(
                tables, chunk_customers=chunk_customers, range_customers=range_customers
            )
        )

    whole = table(n, n)
    assert whole.num_rows > n
    assert table(97, 13).equals(whole)
