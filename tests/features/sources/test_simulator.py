"""The simulator: same seed, same bytes; the contract's exact shape; mechanisms that hold."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.contract.schema import CONTRACT
from features.sources.simulator import (
    DEFAULT_PARAMS,
    SimulationResult,
    simulate,
    true_accept_prob,
    true_anyway_prob,
)
from features.sources.simulator import output as sim_output
from features.sources.simulator.engine import run_simulation
from features.sources.simulator.world import policy_tables

CUSTOMERS = 3_000
SEED = 11
END = pd.Timestamp("2026-01-01", tz="UTC")
TRUTH = ("shipments", "offers", "outreach", "customer_snapshots", "customer_latent")


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimulationResult:
    return simulate(tmp_path_factory.mktemp("sim") / "raw", customers=CUSTOMERS, seed=SEED)


@pytest.fixture(scope="session")
def raw(sim: SimulationResult) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(sim.out_dir / f"{name}.parquet") for name in CONTRACT}


@pytest.fixture(scope="session")
def truth(sim: SimulationResult) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(sim.out_dir / "_truth" / f"{name}.parquet") for name in TRUTH}


@pytest.fixture(scope="session")
def shipments(raw, truth) -> pd.DataFrame:
    """Shipments whose promise lies before the end, so lateness is known, with the truth."""
    s = raw["shipments"].merge(truth["shipments"], on="shipment_id", validate="1:1")
    s = s[s.promised_ts < END].copy()
    s["late"] = s.delivered_ts.isna() | (s.delivered_ts > s.promised_ts)
    return s


@pytest.fixture(scope="session")
def offers(raw, truth) -> pd.DataFrame:
    o = raw["offers"].merge(truth["offers"], on="offer_id", validate="1:1")
    o["accepted"] = o.accepted_ts.notna()
    return o[o.ts < END - pd.Timedelta(days=7)].copy()


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# --- the contract -----------------------------------------------------------------------------


def test_result_counts_rows_of_every_table(sim: SimulationResult, raw) -> None:
    assert sim.out_dir.is_dir()
    assert sim.seconds > 0
    for name, frame in raw.items():
        assert sim.rows[name] == len(frame) > 0, name
    assert sim.rows["customers"] == CUSTOMERS
    assert {f"_truth/{name}" for name in TRUTH} <= set(sim.rows)


@pytest.mark.parametrize("name", list(CONTRACT))
def test_table_has_the_exact_contract_schema(sim: SimulationResult, name: str) -> None:
    schema = pq.read_schema(sim.out_dir / f"{name}.parquet").remove_metadata()
    assert schema.equals(CONTRACT[name].source_schema), (name, schema)


@pytest.mark.parametrize("name", list(CONTRACT))
def test_values_respect_nulls_sets_ranges_and_patterns(raw, name: str) -> None:
    frame = raw[name]
    sent = CONTRACT[name].source_schema.names
    for column in (c for c in CONTRACT[name].columns if c.name in sent):
        values = frame[column.name]
        # Without text, a reason that may be missing where text is given never is.
        without = column.required_without is not None and column.required_without not in frame
        if not column.nullable or without:
            assert values.notna().all(), (name, column.name)
        present = values.dropna()
        if column.allowed is not None:
            assert set(present) <= set(column.allowed), (name, column.name)
        if column.min is not None:
            assert (present >= column.min).all(), (name, column.name)
        if column.max is not None:
            assert (present <= column.max).all(), (name, column.name)
        if column.pattern is not None:
            assert present.str.fullmatch(column.pattern).all(), (name, column.name)


@pytest.mark.parametrize("name", list(CONTRACT))
def test_keys_are_unique(raw, name: str) -> None:
    key = list(CONTRACT[name].key)
    assert not raw[name].duplicated(key).any(), name


@pytest.mark.parametrize(
    ("name", "ref"),
    [(name, ref) for name, table in CONTRACT.items() for ref in table.references],
    ids=lambda v: getattr(v, "column", v),
)
def test_references_resolve_in_time_order(raw, name: str, ref) -> None:
    frame = raw[name]
    target = raw[ref.table]
    linked = frame[frame[ref.column].notna()]
    assert linked[ref.column].isin(target[ref.target]).all(), (name, ref.column)
    if ref.not_before is not None:
        mine, theirs = ref.not_before
        other = target[[ref.target, theirs]].rename(
            columns={ref.target: ref.column, theirs: "_their_ts"}
        )
        joined = linked[[ref.column, mine]].merge(other, on=ref.column, validate="m:1")
        assert (joined[mine] >= joined["_their_ts"]).all(), (name, mine, ref.table, theirs)


@pytest.mark.parametrize(
    ("name", "ordering"),
    [(name, o) for name, table in CONTRACT.items() for o in table.orderings],
    ids=lambda v: getattr(v, "later", v),
)
def test_in_row_orderings_hold(raw, name: str, ordering) -> None:
    frame = raw[name].dropna(subset=[ordering.later, ordering.earlier])
    assert (frame[ordering.later] >= frame[ordering.earlier]).all(), (name, ordering)


def test_nothing_happens_after_the_horizon(raw) -> None:
    times = {
        "orders": "order_ts",
        "shipments": "delivered_ts",
        "tracking_events": "event_ts",
        "returns": "refunded_ts",
        "contacts": "ts",
        "invoices": "paid_ts",
        "offers": "accepted_ts",
    }
    for name, column in times.items():
        assert (raw[name][column].dropna() < END).all(), (name, column)
    signup = raw["customers"].signup_ts
    assert signup.min() >= pd.Timestamp("2024-01-01", tz="UTC")
    assert signup.max() < END


def test_ids_are_prefixed_global_numbers(raw) -> None:
    assert raw["customers"].customer_id.tolist() == [f"c{i}" for i in range(1, CUSTOMERS + 1)]
    prefixes = {"orders": "o", "shipments": "s", "contacts": "ct", "offers": "of", "outreach": "ou"}
    for name, prefix in prefixes.items():
        ids = raw[name][CONTRACT[name].key[0]]
        numbers = ids.str.removeprefix(prefix).astype(int)
        assert ids.str.startswith(prefix).all()
        assert sorted(numbers) == list(range(1, len(ids) + 1)), name


def test_truth_tables_line_up_with_the_raw_tables(raw, truth) -> None:
    assert set(truth["shipments"].shipment_id) == set(raw["shipments"].shipment_id)
    assert set(truth["offers"].offer_id) == set(raw["offers"].offer_id)
    assert truth["outreach"].outreach_id.tolist() == raw["outreach"].outreach_id.tolist()
    latent = truth["customer_latent"]
    assert latent.customer_id.tolist() == raw["customers"].customer_id.tolist()
    affinity = latent.filter(like="affinity_")
    assert affinity.shape[1] == len(DEFAULT_PARAMS.categories)
    assert np.allclose(affinity.sum(axis=1), 1.0)
    snaps = truth["customer_snapshots"]
    assert (snaps.snapshot_ts.dt.day == 1).all()
    assert (snaps.snapshot_ts.dt.hour == 0).all()
    assert (snaps.snapshot_ts + pd.Timedelta(days=90) <= END).all()
    assert snaps.p_repurchase_90d.between(0, 1).all()
    first_order = raw["orders"].groupby("customer_id").order_ts.min()
    assert (snaps.snapshot_ts.to_numpy() > first_order[snaps.customer_id].to_numpy()).all()


def test_volumes_are_sane(raw) -> None:
    orders = len(raw["orders"])
    assert 2.5 <= orders / CUSTOMERS <= 4.5
    assert 1.3 <= len(raw["order_items"]) / orders <= 1.8
    assert 3.5 <= len(raw["tracking_events"]) / len(raw["shipments"]) <= 5.0
    assert 0.3 <= len(raw["contacts"]) / orders <= 0.5
    assert 1.0 <= len(raw["offers"]) / orders <= 2.0


# --- determinism and atomicity ----------------------------------------------------------------


@pytest.mark.slow
def test_same_seed_gives_identical_bytes_whatever_the_workers(tmp_path: Path) -> None:
    # A small chunk size gives several chunks, so worker scheduling could reorder them.
    params = replace(DEFAULT_PARAMS, chunk_customers=400)
    start = date(2024, 1, 1)
    one = run_simulation(tmp_path / "one", 1_000, 3, "parquet", start, 12, 1, params)
    two = run_simulation(tmp_path / "two", 1_000, 3, "parquet", start, 12, 2, params)
    assert _files(one.out_dir) == _files(two.out_dir)
    assert one.rows == two.rows
    ids = pd.read_parquet(one.out_dir / "orders.parquet").order_id
    assert ids.tolist() == [f"o{i}" for i in range(1, len(ids) + 1)]


def test_seed_decides_the_bytes(tmp_path: Path) -> None:
    a = simulate(tmp_path / "a", customers=300, seed=1, months=6)
    b = simulate(tmp_path / "b", customers=300, seed=1, months=6)
    c = simulate(tmp_path / "c", customers=300, seed=2, months=6)
    assert _files(a.out_dir) == _files(b.out_dir)
    files_a, files_c = _files(a.out_dir), _files(c.out_dir)
    assert files_a.keys() == files_c.keys()
    assert files_a["orders.parquet"] != files_c["orders.parquet"]
    assert files_a["products.parquet"] != files_c["products.parquet"]


def test_csv_holds_the_same_data_with_iso_timestamps(tmp_path: Path) -> None:
    pq_dir = simulate(tmp_path / "pq", customers=300, seed=5, months=6).out_dir
    csv_dir = simulate(tmp_path / "csv", customers=300, seed=5, months=6, fmt="csv").out_dir
    assert (csv_dir / "_truth" / "shipments.parquet").exists()
    header = (csv_dir / "shipments.csv").read_text().splitlines()[:2]
    assert header[0].split(",") == CONTRACT["shipments"].source_schema.names
    assert re.search(r",\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00,", header[1])
    for name, table in CONTRACT.items():
        expected = pd.read_parquet(pq_dir / f"{name}.parquet")
        sent = [c for c in table.columns if c.name in table.source_schema.names]
        strings = {c.name: "string" for c in sent if c.kind == "string"}
        got = pd.read_csv(csv_dir / f"{name}.csv", dtype=strings)
        expected = expected.astype(strings)
        for column in sent:
            if column.kind == "timestamp":
                parsed = pd.to_datetime(got[column.name])
                assert str(parsed.dt.tz) == "UTC"
                got[column.name] = parsed.astype(expected[column.name].dtype)
        pd.testing.assert_frame_equal(
            got, expected, check_dtype=False, check_exact=False, rtol=1e-12, obj=name
        )


def test_failed_run_leaves_existing_folder_intact(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "raw"
    out.mkdir()
    (out / "keep.txt").write_text("previous run")
    calls = {"n": 0}
    original = sim_output.TableWriters.write

    def failing_write(self, name, table) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full")
        original(self, name, table)

    monkeypatch.setattr(sim_output.TableWriters, "write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        simulate(out, customers=200, months=6)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "previous run"
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_successful_run_replaces_existing_folder(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    simulate(out, customers=100, months=3)
    assert not (out / "stale.txt").exists()
    assert (out / "orders.parquet").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"customers": 0}, "customers"),
        ({"customers": 10, "workers": 0}, "workers"),
        ({"customers": 10, "fmt": "json"}, "fmt"),
        ({"customers": 10, "start": date(2024, 1, 15)}, "first day of a month"),
        ({"customers": 10, "months": 0}, "months"),
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulate(tmp_path / "raw", **kwargs)
    assert not (tmp_path / "raw").exists()


# --- mechanisms -------------------------------------------------------------------------------


def test_late_rate_peaks_in_november_december(shipments) -> None:
    peak = shipments.shipped_ts.dt.month >= 11
    assert 0.08 <= shipments.late.mean() <= 0.15
    assert shipments.late[peak].mean() > shipments.late[~peak].mean() + 0.03


def test_budget_carrier_is_late_most_often(shipments) -> None:
    rates = shipments.groupby("carrier").late.mean()
    assert rates.idxmax() == "ValueShip"
    assert rates["ValueShip"] > rates.drop("ValueShip").max() + 0.05


def test_exceptions_signal_delay(raw, shipments) -> None:
    events = raw["tracking_events"]
    with_exception = shipments.shipment_id.isin(
        events.loc[events.event_type == "exception", "shipment_id"]
    )
    assert shipments.late[with_exception].mean() > 3 * shipments.late[~with_exception].mean()


def test_true_p_late_matches_realised_late_rate(shipments) -> None:
    assert abs(shipments.p_late.mean() - shipments.late.mean()) < 0.02
    # The truth also ranks: the riskiest quintile is late far more often than the safest.
    quintile = pd.qcut(shipments.p_late, 5, labels=False)
    by_quintile = shipments.groupby(quintile).late.mean()
    assert by_quintile.iloc[-1] > 3 * by_quintile.iloc[0]


def test_true_transit_distribution_gives_p_late(shipments) -> None:
    from scipy.special import ndtr

    promise_h = (shipments.promised_ts - shipments.shipped_ts).dt.total_seconds() / 3600
    on_time = ndtr((np.log(promise_h) - shipments.transit_log_mu) / shipments.transit_log_sigma)
    recomputed = shipments.p_lost + (1 - shipments.p_lost) * (1 - on_time)
    assert np.allclose(recomputed, shipments.p_late, atol=1e-4)


def test_unresolved_complaint_lowers_repurchase(raw) -> None:
    orders = raw["orders"].sort_values(["customer_id", "order_ts"])
    orders["next_ts"] = orders.groupby("customer_id").order_ts.shift(-1)
    contacts = raw["contacts"]
    bad = contacts[(contacts.reason == "complaint") & ~contacts.resolved_first_contact]
    since = bad.groupby("order_id").ts.max()
    orders["since"] = orders.order_id.map(since)
    complained = orders.since.notna()
    orders["since"] = orders.since.fillna(orders.order_ts + pd.Timedelta(days=7))
    window = orders.since + pd.Timedelta(days=90)
    orders = orders[window < END]
    complained = complained[orders.index]
    again = (orders.next_ts > orders.since) & (orders.next_ts <= window[orders.index])
    assert complained.sum() >= 50
    assert again[complained].mean() < again[~complained].mean() - 0.08


def test_true_repurchase_probability_matches_realised_rate(raw, truth) -> None:
    snaps = truth["customer_snapshots"]
    orders = raw["orders"][["customer_id", "order_ts"]]
    joined = snaps.merge(orders, on="customer_id")
    joined["hit"] = (joined.order_ts > joined.snapshot_ts) & (
        joined.order_ts <= joined.snapshot_ts + pd.Timedelta(days=90)
    )
    realised = joined.groupby(["customer_id", "snapshot_ts"]).hit.any()
    assert len(realised) == len(snaps)
    assert abs(snaps.p_repurchase_90d.mean() - realised.mean()) < 0.03


def test_policy_propensities_are_exact_probabilities(offers) -> None:
    _, _, _, table = policy_tables(DEFAULT_PARAMS)
    assert np.allclose(table.sum(axis=-1), 1.0)
    assert offers.propensity.gt(0).all()
    assert offers.propensity.le(1).all()
    assert np.isin(offers.propensity.round(12), table.round(12).ravel()).all()
    control = offers.offer_type == "none"
    assert (offers.propensity[control] == DEFAULT_PARAMS.offers.control_share).all()
    assert abs(control.mean() - 0.10) < 0.015
    assert offers.category[control].isna().all()
    assert (offers.discount[control] == 0).all()
    assert offers.order_id.isna().eq(offers.placement == "outreach").all()


def test_offers_are_accepted_more_in_favourite_categories(offers, truth) -> None:
    shown = offers[offers.offer_type != "none"]
    latent = truth["customer_latent"].set_index("customer_id")
    names = [c.name for c in DEFAULT_PARAMS.categories]
    affinity = latent.loc[shown.customer_id, [f"affinity_{n}" for n in names]].to_numpy()
    column = pd.Categorical(shown.category, categories=names).codes
    rank = (-affinity).argsort(axis=1).argsort(axis=1)[np.arange(len(shown)), column]
    top = shown.accepted[rank == 0].mean()
    low = shown.accepted[rank >= 4].mean()
    assert top > 2 * low


def test_discounts_raise_acceptance_over_recommendations(offers) -> None:
    rate = offers.groupby("discount").accepted.mean()
    recommendation = offers[offers.offer_type == "recommendation"].accepted.mean()
    assert rate[0.2] > rate[0.1] > recommendation


def test_true_accept_prob_reproduces_the_logged_truth(raw, offers, truth) -> None:
    latent = truth["customer_latent"].set_index("customer_id").loc[offers.customer_id]
    shipments = raw["shipments"].set_index("order_id")
    promised = offers.order_id.map(shipments.promised_ts)
    late = (offers.ts > promised).fillna(False).to_numpy()
    returns = raw["returns"].merge(raw["orders"][["order_id", "customer_id"]], on="order_id")
    returns = returns.merge(raw["products"][["product_id", "category"]], on="product_id")
    first = returns.groupby(["customer_id", "category"]).requested_ts.min()
    key = pd.MultiIndex.from_arrays([offers.customer_id, offers.reference_category])
    returned = (first.reindex(key).to_numpy() < offers.ts.to_numpy()).astype(bool)
    p = true_accept_prob(
        latent,
        offers.reference_category.to_numpy(),
        offers.offer_type.to_numpy(),
        offers.discount.to_numpy(),
        late,
        returned,
    )
    assert np.allclose(p, offers.p_accept, rtol=1e-9, atol=1e-12)
    anyway = true_anyway_prob(latent, offers.reference_category.to_numpy())
    assert np.allclose(anyway, offers.p_anyway, rtol=1e-9, atol=1e-12)
    # Incremental effect: an offer never makes buying less likely than buying anyway.
    assert (offers.p_accept >= offers.p_anyway - 1e-12).all()
    row = latent.iloc[0]
    one = true_accept_prob(row, "fashion", "discount", 0.2, False)
    assert np.ndim(one) == 0
    assert 0 < one < 1


def test_contacts_follow_experiences(raw, shipments) -> None:
    contacts = raw["contacts"]
    delay = contacts[contacts.reason == "delivery_delay"].order_id
    asked = shipments.order_id.isin(delay)
    assert asked[shipments.late].mean() > 5 * asked[~shipments.late].mean()
    ai = contacts.groupby("reason").handled_by.apply(lambda h: (h == "ai_agent").mean())
    assert ai["order_status"] > ai["complaint"] + 0.3
    unrelated = contacts.reason.isin(["renewal", "other"])
    assert contacts.order_id[unrelated].isna().all()
    assert contacts.order_id[~unrelated & (contacts.reason != "payment")].notna().all()
    answered = contacts.csat.notna()
    assert 0.3 < answered.mean() < 0.5
    assert (contacts.ces.notna() == answered).all()
    resolved = contacts.resolved_first_contact
    assert contacts.csat[resolved].mean() > contacts.csat[~resolved].mean() + 0.5


@pytest.mark.parametrize("seed", [0, 55])
def test_tiny_runs_write_every_table(tmp_path: Path, seed: int) -> None:
    # One customer over one month: possibly no order at all, yet every file exists.
    result = simulate(tmp_path / "raw", customers=1, seed=seed, months=1)
    for name in CONTRACT:
        path = result.out_dir / f"{name}.parquet"
        assert pq.read_schema(path).remove_metadata().equals(CONTRACT[name].source_schema)
    for name in TRUTH:
        assert (result.out_dir / "_truth" / f"{name}.parquet").exists()
