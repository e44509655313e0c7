"""A business cut to some of its customers: each table keeps exactly the rows that belong to
them (held against joins written out in pandas), the cut reaches as far as the whole, and
what the models compute per customer from the cut is what the whole gives for them."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.contract.subset import (
    customer_ids,
    drawn_customers,
    of_customers,
    owned_keys,
    with_latest,
)
from features.instants import watermark
from models import churn, delay_risk, delivery_estimate, next_best_offer, outreach_uplift
from models.spec import EVENT_TIME


def _frames(tables: dict[str, pa.Table]) -> dict[str, pd.DataFrame]:
    return {name: table.to_pandas() for name, table in tables.items()}


def _expected(tables: dict[str, pa.Table], chosen: set[str]) -> dict[str, pd.DataFrame]:
    """Each table's rows of `chosen`, by joins written out: orders, contacts, invoices,
    offers and outreach by their customer; order lines, shipments and returns by their
    order; scans by their shipment; products whole."""
    f = _frames(tables)
    out = {"customers": f["customers"][f["customers"]["customer_id"].isin(chosen)]}
    for name in ("orders", "contacts", "invoices", "offers", "outreach"):
        out[name] = f[name][f[name]["customer_id"].isin(chosen)]
    orders = set(out["orders"]["order_id"])
    for name in ("order_items", "shipments", "returns"):
        out[name] = f[name][f[name]["order_id"].isin(orders)]
    shipments = set(out["shipments"]["shipment_id"])
    out["tracking_events"] = f["tracking_events"][
        f["tracking_events"]["shipment_id"].isin(shipments)
    ]
    out["products"] = f["products"]
    return out


@pytest.fixture(scope="module")
def chosen(sim_tables) -> pa.Array:
    return drawn_customers(customer_ids(sim_tables), 60, seed=5)


def test_each_table_keeps_exactly_the_rows_of_the_chosen_customers(sim_tables, chosen) -> None:
    assert len(chosen) == 60
    cut = of_customers(sim_tables, chosen)
    expected = _expected(sim_tables, set(chosen.to_pylist()))
    assert cut.keys() == sim_tables.keys()
    for name, rows in expected.items():
        got = cut[name].to_pandas().reset_index(drop=True)
        pd.testing.assert_frame_equal(got, rows.reset_index(drop=True), check_dtype=True)
    # Every table but the catalogue is cut, and none comes out empty on this business.
    for name in expected:
        if name != "products":
            assert 0 < cut[name].num_rows < sim_tables[name].num_rows, name


def test_owned_keys_are_the_chosen_customers_and_their_rows_keys(sim_tables, chosen) -> None:
    """The keys of the cut's customer-owned tables with a one-column key, by the joins
    written out: not the catalogue's products, not the order lines' two-column key."""
    expected = _expected(sim_tables, set(chosen.to_pylist()))
    got = owned_keys(of_customers(sim_tables, chosen))
    key_of = {
        "customers": "customer_id",
        "orders": "order_id",
        "shipments": "shipment_id",
        "tracking_events": "event_id",
        "returns": "return_id",
        "contacts": "contact_id",
        "invoices": "invoice_id",
        "offers": "offer_id",
        "outreach": "outreach_id",
    }
    assert set(got) == set(key_of.values())
    for name, key in key_of.items():
        assert sorted(got[key].to_pylist()) == sorted(set(expected[name][key])), name
    assert sorted(got["customer_id"].to_pylist()) == sorted(chosen.to_pylist())


def test_two_halves_of_the_customers_hold_every_row_once(sim_tables) -> None:
    everyone = customer_ids(sim_tables)
    half = drawn_customers(everyone, len(everyone) // 2, seed=1)
    rest = pc.filter(everyone, pc.invert(pc.is_in(everyone, value_set=half)))
    first, second = of_customers(sim_tables, half), of_customers(sim_tables, rest)
    for name, table in sim_tables.items():
        if name == "products":
            continue
        assert first[name].num_rows + second[name].num_rows == table.num_rows, name


def test_a_draw_depends_on_the_id_and_the_seed_only(sim_tables) -> None:
    everyone = customer_ids(sim_tables)
    drawn = set(drawn_customers(everyone, 50, seed=5).to_pylist())
    # The same customers drawn from the ids in another order; fewer of them drawn from more.
    reordered = everyone.take(pa.array(range(len(everyone) - 1, -1, -1)))
    assert set(drawn_customers(reordered, 50, seed=5).to_pylist()) == drawn
    assert set(drawn_customers(everyone, 20, seed=5).to_pylist()) <= drawn
    assert set(drawn_customers(everyone, 50, seed=6).to_pylist()) != drawn
    assert drawn_customers(everyone, len(everyone) + 1, seed=5) is everyone


def test_the_cut_with_the_latest_customers_reaches_as_far_as_the_whole(sim_tables, chosen) -> None:
    widened = with_latest(sim_tables, chosen)
    assert set(chosen.to_pylist()) <= set(widened.to_pylist())
    cut = of_customers(sim_tables, widened)
    for name, table in sim_tables.items():
        for field in table.schema:
            if pa.types.is_timestamp(field.type):
                whole = pc.max(table.column(field.name)).as_py()
                assert pc.max(cut[name].column(field.name)).as_py() == whole, (name, field.name)
    assert watermark(cut, happened=True) == watermark(dict(sim_tables), happened=True)


def _by_customer(events: pd.DataFrame, tables: dict[str, pa.Table], customers: set[str]):
    """The events of `customers`: by their own customer column, else through the shipment's
    order."""
    if "customer_id" not in events:
        orders = tables["orders"].to_pandas()[["order_id", "customer_id"]]
        ships = tables["shipments"].to_pandas()[["shipment_id", "order_id"]].merge(orders)
        owner = events["shipment_id"].map(ships.set_index("shipment_id")["customer_id"])
    else:
        owner = events["customer_id"]
    return events[owner.isin(customers).to_numpy()]


@pytest.mark.parametrize(
    "label_events",
    [
        delay_risk.label_events,
        churn.label_events,
        delivery_estimate.label_events,
        delivery_estimate.decision_outcomes,
        next_best_offer.label_events,
        outreach_uplift.label_events,
    ],
    ids=["delay_risk", "churn", "delivery_estimate", "outcomes", "next_best_offer", "uplift"],
)
def test_label_events_of_the_cut_are_the_whole_businesses_for_its_customers(
    sim_tables, chosen, label_events
) -> None:
    widened = with_latest(sim_tables, chosen)
    cut = of_customers(sim_tables, widened)
    whole = label_events(dict(sim_tables))
    expected = _by_customer(whole, dict(sim_tables), set(widened.to_pylist()))
    got = label_events(cut)
    assert len(got) > 0
    named = [c for c in ("outreach_id", "offer_id", "customer_id", "shipment_id") if c in got]
    keys = [named[0], EVENT_TIME]
    ordered = [c for c in got.columns if c in expected.columns]
    pd.testing.assert_frame_equal(
        got[ordered].sort_values(keys, kind="stable").reset_index(drop=True),
        expected[ordered].sort_values(keys, kind="stable").reset_index(drop=True),
        check_dtype=False,
    )
