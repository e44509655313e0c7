"""Checking only the rows an upserted day batch touches finds exactly what checking the
whole upserted data finds: nothing for a clean day, and each planted break, whether at a
batch row or at an earlier row that a batch row changed the meaning of."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.contract.batches import check_upserted, upsert
from features.contract.io import read_validated
from features.contract.validate import check_tables
from features.sources.simulator import simulate_cuts

HISTORY_END = date(2024, 2, 14)
DAY = HISTORY_END + timedelta(days=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """(the history's tables, the following day's batch)."""
    root: Path = tmp_path_factory.mktemp("upserted")
    cuts = [(root / "history", "history", HISTORY_END), (root / "day", "day", DAY)]
    simulate_cuts(cuts, customers=300, seed=3, months=3)
    return read_validated(root / "history"), read_validated(root / "day")


def _set(table: pa.Table, column: str, row: int, value) -> pa.Table:
    """`table` with one cell replaced."""
    index = table.schema.get_field_index(column)
    values = table.column(column).to_pylist()
    values[row] = value
    return table.set_column(
        index, table.schema.field(index), pa.array(values, table.schema.field(index).type)
    )


def _resend(current: dict, batch: dict, name: str, where: Callable[[pa.Table], pa.Array]) -> dict:
    """The batch with the first current row of `name` matching `where` re-sent as is."""
    row = current[name].filter(where(current[name])).slice(0, 1)
    added = row.select(batch[name].column_names).cast(batch[name].schema)
    return {**batch, name: pa.concat_tables([batch[name], added])}


def _order_with_shipment(current: dict) -> str:
    shipped = current["shipments"].column("order_id").combine_chunks()
    return shipped[0].as_py()


def _breaks(current: dict, batch: dict) -> dict[str, Callable[[], dict]]:
    """Each planted break: a batch that breaks one rule."""
    order = _order_with_shipment(current)

    def later_order() -> dict:
        # An order re-sent with its time moved after its earlier shipment's: the break
        # is at the shipment, a row the batch does not hold.
        resent = _resend(current, batch, "orders", lambda t: pc.equal(t.column("order_id"), order))
        orders = resent["orders"]
        stamp = orders.column("order_ts")[orders.num_rows - 1].as_py()
        return {
            **resent,
            "orders": _set(orders, "order_ts", orders.num_rows - 1, stamp + timedelta(days=400)),
        }

    def later_signup() -> dict:
        customer = current["orders"].column("customer_id")[0].as_py()
        resent = _resend(
            current, batch, "customers", lambda t: pc.equal(t.column("customer_id"), customer)
        )
        rows = resent["customers"]
        stamp = rows.column("signup_ts")[rows.num_rows - 1].as_py()
        return {
            **resent,
            "customers": _set(rows, "signup_ts", rows.num_rows - 1, stamp + timedelta(days=900)),
        }

    def unknown_order() -> dict:
        shipments = batch["shipments"]
        return {**batch, "shipments": _set(shipments, "order_id", 0, "no-such-order")}

    def duplicated() -> dict:
        orders = batch["orders"]
        return {**batch, "orders": pa.concat_tables([orders, orders.slice(0, 1)])}

    def another_customers_subject() -> dict:
        outreach = batch["outreach"]
        subjects = outreach.filter(pc.is_valid(outreach.column("subject_id")))
        row = (
            outreach.column("outreach_id")
            .to_pylist()
            .index(subjects.column("outreach_id")[0].as_py())
        )
        other = current["customers"].column("customer_id")
        stranger = next(
            c for c in other.to_pylist() if c != outreach.column("customer_id")[row].as_py()
        )
        return {**batch, "outreach": _set(outreach, "customer_id", row, stranger)}

    def order_handed_over() -> dict:
        # An order re-sent as another customer's: an earlier outreach about its shipment
        # now names a subject of someone else.
        outreach, shipments = current["outreach"], current["shipments"]
        about = pc.and_(
            pc.is_in(
                outreach.column("subject_id"),
                value_set=shipments.column("shipment_id").combine_chunks(),
            ),
            # A shipment the batch does not re-send: only its order ties it to the batch.
            pc.invert(
                pc.is_in(
                    outreach.column("subject_id"),
                    value_set=batch["shipments"].column("shipment_id").combine_chunks(),
                )
            ),
        )
        row = outreach.filter(pc.fill_null(about, False)).slice(0, 1)
        shipment = shipments.filter(
            pc.equal(shipments.column("shipment_id"), row.column("subject_id")[0])
        )
        owned = shipment.column("order_id")[0].as_py()
        resent = _resend(current, batch, "orders", lambda t: pc.equal(t.column("order_id"), owned))
        orders = resent["orders"]
        owner = row.column("customer_id")[0].as_py()
        # The earliest signup: the order still follows it, so only the subject's owner breaks.
        customers = current["customers"].sort_by("signup_ts").column("customer_id").to_pylist()
        stranger = next(c for c in customers if c != owner)
        return {**resent, "orders": _set(orders, "customer_id", orders.num_rows - 1, stranger)}

    return {
        "an order handed to another customer": order_handed_over,
        "an order moved after its shipment": later_order,
        "a signup moved after its orders": later_signup,
        "a shipment of an unknown order": unknown_order,
        "an order sent twice": duplicated,
        "an outreach about another customer's subject": another_customers_subject,
    }


def _same(found: tuple[list, list]) -> list[tuple]:
    return sorted(
        (v.table, v.column, v.rule, v.count, tuple(map(str, v.examples))) for v in found[0]
    )


def test_a_clean_day_breaks_nothing(data) -> None:
    current, batch = data
    assert check_tables(current)[0] == []
    combined = upsert(current, batch)
    assert check_upserted(combined, batch)[0] == []
    assert check_tables(combined)[0] == []


@pytest.mark.parametrize(
    "name",
    [
        "an order handed to another customer",
        "an order moved after its shipment",
        "a signup moved after its orders",
        "a shipment of an unknown order",
        "an order sent twice",
        "an outreach about another customer's subject",
    ],
)
def test_each_break_is_found_as_the_whole_check_finds_it(data, name: str) -> None:
    current, batch = data
    broken = _breaks(current, batch)[name]()
    combined = upsert(current, broken)
    whole = check_tables(combined)
    assert whole[0], f"{name}: the whole check finds nothing, so the case tests nothing"
    assert _same(check_upserted(combined, broken)) == _same(whole)
