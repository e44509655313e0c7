"""Turn one chunk's simulated arrays into Arrow tables in the contract's shape.

Everything after the horizon is censored here, in one place, so the tables describe the
business as seen on the last simulated day: later rows are dropped (shipments not yet
dispatched, scans, contacts, returns and offers after the end) and later outcomes are
missing (deliveries, refunds, payments, acceptances after the end).

Identifier columns leave this module as chunk-local int64 numbers (null as null); the writer
turns them into global string ids because only it knows how many rows earlier chunks had.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from features.contract.schema import (
    CONTACT_CHANNELS,
    CONTACT_REASONS,
    HANDLERS,
    INVOICE_KINDS,
    OFFER_CHANNELS,
    OFFER_PLACEMENTS,
    OUTREACH_ACTIONS,
    OUTREACH_CHANNELS,
    RETURN_REASONS,
    SERVICE_LEVELS,
    TRACKING_EVENT_TYPES,
)
from features.sources.simulator.contacts import ContactBatch
from features.sources.simulator.journeys import EVENT_COLUMNS, Journeys
from features.sources.simulator.outreach import (
    SUBJECT_CONTACT,
    SUBJECT_INVOICE,
    SUBJECT_MEMBERSHIP,
    SUBJECT_ORDER,
    SUBJECT_SHIPMENT,
)
from features.sources.simulator.params import PAYMENT_METHODS
from features.sources.simulator.population import Population, languages
from features.sources.simulator.world import World

# Offer types as the simulator codes them (0 none, 1 recommendation, 2 discount).
_OFFER_TYPE_NAMES = ("none", "recommendation", "discount")


def _ts(world: World, days: np.ndarray) -> pa.Array:
    days = np.asarray(days, dtype=np.float64)
    missing = np.isnan(days)
    micros = world.timeline.seconds(np.where(missing, 0.0, days)) * 1_000_000
    return pa.array(micros, type=pa.timestamp("us", tz="UTC"), mask=missing)


def _cat(codes: np.ndarray, vocabulary: tuple[str, ...]) -> pa.Array:
    codes = np.asarray(codes, dtype=np.int64)
    index = pa.array(codes, type=pa.int64(), mask=codes < 0)
    return pa.array(vocabulary, type=pa.string()).take(index)


def _local_id(local: np.ndarray) -> pa.Array:
    local = np.asarray(local, dtype=np.int64)
    return pa.array(local, type=pa.int64(), mask=local < 0)


def _float(values: np.ndarray) -> pa.Array:
    values = np.asarray(values, dtype=np.float64)
    return pa.array(values, type=pa.float64(), mask=np.isnan(values))


def _int(values: np.ndarray) -> pa.Array:
    values = np.asarray(values, dtype=np.int64)
    return pa.array(values, type=pa.int64(), mask=values < 0)


def _bool(values: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(values, dtype=bool), type=pa.bool_())


def _table(columns: dict[str, pa.Array]) -> pa.Table:
    return pa.Table.from_arrays(list(columns.values()), names=list(columns))


def _censor(values: np.ndarray, horizon: float) -> np.ndarray:
    """NaN where the outcome happens after the horizon (not yet known)."""
    return np.where(values < horizon, values, np.nan)


def products_table(world: World) -> pa.Table:
    """The catalogue as a table (product ids are global: chunk offset 0)."""
    catalog = world.catalog
    return _table(
        {
            "product_id": _local_id(np.arange(catalog.size)),
            "category": _cat(catalog.category, world.params.category_names),
            "price": _float(catalog.price),
            "margin": _float(catalog.margin),
            "weight_g": _float(catalog.weight_g),
        }
    )


def assemble(
    world: World,
    pop: Population,
    journeys: Journeys,
    member_invoices: dict[str, np.ndarray],
    member_contacts: ContactBatch,
    offers: dict[str, np.ndarray],
    snapshots: dict[str, np.ndarray],
    delay_sensitivity: np.ndarray | None = None,
) -> dict[str, pa.Table]:
    """All raw and truth tables of one chunk, censored at the horizon.

    Returns:
        Tables by name; truth tables are named `_truth/<name>`.
    """
    p = world.params
    horizon = float(world.timeline.days)
    out: dict[str, pa.Table] = {}

    region_codes = tuple(r.code for r in p.regions)
    out["customers"] = _table(
        {
            "customer_id": _local_id(np.arange(pop.size)),
            "signup_ts": _ts(world, pop.signup_t),
            "region": _cat(pop.region, region_codes),
            "timezone": _cat(pop.region, tuple(r.timezone for r in p.regions)),
            "language": _cat(pop.language, languages(p)),
            "preferred_channel": _cat(pop.preferred, OUTREACH_CHANNELS),
            "consent_email": _bool(pop.consent[:, 0]),
            "consent_sms": _bool(pop.consent[:, 1]),
            "consent_voice": _bool(pop.consent[:, 2]),
            "consent_marketing": _bool(pop.consent[:, 3]),
        }
    )

    orders = journeys.orders
    n_orders = orders["customer"].size
    out["orders"] = _table(
        {
            "order_id": _local_id(np.arange(n_orders)),
            "customer_id": _local_id(orders["customer"]),
            "order_ts": _ts(world, orders["t"]),
            "amount": _float(orders["amount"]),
            "payment_method": _cat(orders["payment"], PAYMENT_METHODS),
        }
    )
    lines = journeys.lines
    sort = np.lexsort((lines["product"], lines["order"]))
    out["order_items"] = _table(
        {
            "order_id": _local_id(lines["order"][sort]),
            "product_id": _local_id(lines["product"][sort]),
            "qty": _int(lines["qty"][sort]),
            "unit_price": _float(lines["unit_price"][sort]),
        }
    )

    ship = journeys.shipments
    dispatched = ship["shipped"] < horizon
    kept = np.flatnonzero(dispatched)
    out["shipments"] = _table(
        {
            "shipment_id": _local_id(np.arange(kept.size)),
            "order_id": _local_id(kept),
            "carrier": _cat(ship["carrier"][kept], tuple(c.name for c in p.carriers)),
            "service_level": _cat(ship["level"][kept], SERVICE_LEVELS),
            "origin_region": _cat(ship["origin"][kept], tuple(w.region for w in p.warehouses)),
            "destination_region": _cat(pop.region[orders["customer"][kept]], region_codes),
            "distance_km": _float(ship["distance"][kept]),
            "shipped_ts": _ts(world, ship["shipped"][kept]),
            "promised_ts": _ts(world, ship["promised"][kept]),
            "delivered_ts": _ts(world, _censor(ship["delivered"][kept], horizon)),
        }
    )
    out["_truth/shipments"] = _table(
        {
            "shipment_id": _local_id(np.arange(kept.size)),
            "p_late": _float(ship["p_late"][kept]),
            "transit_log_mu": _float(ship["mu"][kept]),
            "transit_log_sigma": _float(ship["sigma"][kept]),
            "p_lost": _float(ship["p_lost"][kept]),
        }
    )

    # Scans: sort each shipment's row by time (stable, so ties keep the natural order of
    # scans), then read the matrix row by row: grouped by shipment, in time order.
    scans = ship["events"][kept]
    scans = np.where(scans < horizon, scans, np.nan)
    by_time = np.argsort(scans, axis=1, kind="stable")
    scans = np.take_along_axis(scans, by_time, axis=1)
    happened = ~np.isnan(scans)
    out["tracking_events"] = _table(
        {
            "event_id": _local_id(np.arange(happened.sum())),
            "shipment_id": _local_id(np.nonzero(happened)[0]),
            "event_type": _cat(np.asarray(EVENT_COLUMNS)[by_time][happened], TRACKING_EVENT_TYPES),
            "event_ts": _ts(world, scans[happened]),
        }
    )

    ret = journeys.returns
    keep = np.flatnonzero(ret["requested"] < horizon)
    keep = keep[np.lexsort((ret["product"][keep], ret["order"][keep]))]
    out["returns"] = _table(
        {
            "return_id": _local_id(np.arange(keep.size)),
            "order_id": _local_id(ret["order"][keep]),
            "product_id": _local_id(ret["product"][keep]),
            "reason": _cat(ret["reason"][keep], RETURN_REASONS),
            "requested_ts": _ts(world, ret["requested"][keep]),
            "refunded_ts": _ts(world, _censor(ret["refunded"][keep], horizon)),
            "amount": _float(ret["amount"][keep]),
        }
    )

    con = ContactBatch.concat([journeys.contacts, member_contacts])
    keep = np.flatnonzero(con.t < horizon)
    contact_rows = keep[np.lexsort((con.t[keep], con.customer[keep]))]
    con = con.take(contact_rows)
    out["contacts"] = _table(
        {
            "contact_id": _local_id(np.arange(con.size)),
            "customer_id": _local_id(con.customer),
            "order_id": _local_id(con.order),
            "ts": _ts(world, con.t),
            "channel": _cat(con.channel, CONTACT_CHANNELS),
            "language": _cat(pop.language[con.customer], languages(p)),
            "reason": _cat(con.reason, CONTACT_REASONS),
            "handled_by": _cat(np.where(con.ai, 0, 1), HANDLERS),
            "wait_s": _float(con.wait_s),
            "handle_s": _float(con.handle_s),
            "transfers": _int(con.transfers),
            "resolved_first_contact": _bool(con.resolved),
            "csat": _int(con.csat),
            "ces": _int(con.ces),
            "nps": _int(con.nps),
        }
    )

    inv = journeys.invoices
    customer = np.concatenate([orders["customer"][inv["order"]], member_invoices["customer"]])
    n_order_inv = inv["order"].size
    n_member_inv = member_invoices["customer"].size
    order = np.concatenate([inv["order"], np.full(n_member_inv, -1)])
    kind = np.concatenate([np.zeros(n_order_inv, np.int64), np.ones(n_member_inv, np.int64)])
    issued = np.concatenate([inv["issued"], member_invoices["issued"]])
    due = np.concatenate([inv["due"], member_invoices["due"]])
    amount = np.concatenate([inv["amount"], member_invoices["amount"]])
    paid = np.concatenate([inv["paid"], member_invoices["paid"]])
    keep = np.flatnonzero(issued < horizon)
    keep = keep[np.lexsort((issued[keep], customer[keep]))]
    invoice_rows = keep
    out["invoices"] = _table(
        {
            "invoice_id": _local_id(np.arange(keep.size)),
            "customer_id": _local_id(customer[keep]),
            "order_id": _local_id(order[keep]),
            "kind": _cat(kind[keep], INVOICE_KINDS),
            "issued_ts": _ts(world, issued[keep]),
            "due_date": _ts(world, due[keep]),
            "amount": _float(amount[keep]),
            "paid_ts": _ts(world, _censor(paid[keep], horizon)),
        }
    )

    keep = np.flatnonzero(offers["t"] < horizon)
    accepted_t = _censor(offers["accepted_t"][keep], horizon)
    revenue = np.where(np.isnan(accepted_t), np.nan, offers["revenue"][keep])
    out["offers"] = _table(
        {
            "offer_id": _local_id(np.arange(keep.size)),
            "customer_id": _local_id(offers["customer"][keep]),
            "order_id": _local_id(offers["order"][keep]),
            "ts": _ts(world, offers["t"][keep]),
            "placement": _cat(offers["placement"][keep], OFFER_PLACEMENTS),
            "channel": _cat(offers["channel"][keep], OFFER_CHANNELS),
            "offer_type": _cat(offers["offer_type"][keep], _OFFER_TYPE_NAMES),
            "category": _cat(offers["category"][keep], p.category_names),
            "discount": _float(offers["discount"][keep]),
            "propensity": _float(offers["propensity"][keep]),
            "accepted_ts": _ts(world, accepted_t),
            "revenue": _float(revenue),
        }
    )
    out["_truth/offers"] = _table(
        {
            "offer_id": _local_id(np.arange(keep.size)),
            "p_accept": _float(offers["p_accept"][keep]),
            "p_anyway": _float(offers["p_anyway"][keep]),
            "reference_category": _cat(offers["reference_category"][keep], p.category_names),
        }
    )

    shipment_of_order = np.full(n_orders, -1)
    shipment_of_order[kept] = np.arange(kept.size)
    # Membership invoices follow the order invoices in the invoice positions above.
    logged = dict(journeys.outreach)
    membership = logged["subject_kind"] == SUBJECT_MEMBERSHIP
    logged["subject"] = np.where(membership, n_order_inv + logged["subject"], logged["subject"])
    logged["subject_kind"] = np.where(membership, SUBJECT_INVOICE, logged["subject_kind"])
    out.update(
        _outreach_tables(
            world,
            logged,
            {
                SUBJECT_SHIPMENT: shipment_of_order,
                SUBJECT_ORDER: np.arange(n_orders),
                SUBJECT_CONTACT: _positions(
                    contact_rows, len(journeys.contacts.t) + member_contacts.size
                ),
                SUBJECT_INVOICE: _positions(invoice_rows, customer.size),
            },
        )
    )

    out["_truth/customer_snapshots"] = _table(
        {
            "customer_id": _local_id(snapshots["customer"]),
            "snapshot_ts": _ts(world, snapshots["snapshot"]),
            "p_repurchase_90d": _float(snapshots["p"]),
        }
    )
    latent = {
        "customer_id": _local_id(np.arange(pop.size)),
        "order_rate": _float(pop.order_rate),
        "churn_base_logit": _float(pop.churn_base),
        "loyalty": _float(pop.loyalty),
        "price_sensitivity": _float(pop.price_sensitivity),
        "payment_reliability": _float(pop.payment_reliability),
        "consent_openness": _float(pop.openness),
        "is_member": _bool(pop.is_member),
        "delay_sensitivity": _float(
            delay_sensitivity if delay_sensitivity is not None else np.full(pop.size, np.nan)
        ),
    }
    for c, name in enumerate(p.category_names):
        latent[f"affinity_{name}"] = _float(pop.affinity[:, c])
    out["_truth/customer_latent"] = _table(latent)
    return out


def _positions(rows: np.ndarray, size: int) -> np.ndarray:
    """Row number in the written table of each simulated entry, -1 where it was dropped."""
    out = np.full(size, -1)
    out[rows] = np.arange(rows.size)
    return out


def _outreach_tables(
    world: World, logged: dict[str, np.ndarray], row_of: dict[int, np.ndarray]
) -> dict[str, pa.Table]:
    """`outreach` and its truth; subjects become chunk-local ids of their entity's table.

    Args:
        world: Shared context.
        logged: The chunk's outreach rows (`Outreach.results`).
        row_of: Per subject kind, the written row number of each simulated entry.
    """
    keep = np.flatnonzero(logged["t"] < world.timeline.days)
    kind = logged["subject_kind"][keep]
    subject = logged["subject"][keep]
    columns = {
        "outreach_id": _local_id(np.arange(keep.size)),
        "customer_id": _local_id(logged["customer"][keep]),
        "ts": _ts(world, logged["t"][keep]),
        "action": _cat(logged["action"][keep], OUTREACH_ACTIONS),
        "channel": _cat(logged["channel"][keep], OUTREACH_CHANNELS),
    }
    entities = {
        "shipment": SUBJECT_SHIPMENT,
        "contact": SUBJECT_CONTACT,
        "invoice": SUBJECT_INVOICE,
        "order": SUBJECT_ORDER,
    }
    for entity, code in entities.items():
        mine = kind == code
        # Index -1 reads the appended -1: rows of other kinds get no id of this entity.
        rows = np.append(row_of[code], -1)[np.where(mine, subject, -1)]
        columns[f"subject_id:{entity}"] = _local_id(rows)
    columns["propensity"] = _float(logged["propensity"][keep])
    columns["holdout"] = _bool(logged["holdout"][keep])
    treated = logged["p_treated"][keep]
    untreated = logged["p_untreated"][keep]
    truth = {
        "outreach_id": _local_id(np.arange(keep.size)),
        "effect_repurchase_90d": _float(treated - untreated),
        "p_repurchase_90d_treated": _float(treated),
        "p_repurchase_90d_untreated": _float(untreated),
        "retention_gain": _float(logged["gain"][keep]),
        "p_churn_untreated": _float(logged["p_churn_untreated"][keep]),
        "clock_from_ts": _ts(world, logged["clock_from"][keep]),
        "effect_order_status_contact": _float(logged["effect_status"][keep]),
        "effect_days_to_pay": _float(logged["effect_days_to_pay"][keep]),
    }
    return {"outreach": _table(columns), "_truth/outreach": _table(truth)}
