"""Customer journeys: orders one after another, each with its delivery, returns, invoice and
contacts, and the churn decision its experience drives.

Orders are sequential per customer but vectorised across customers: iteration k handles the
k-th order of every customer still active. After order k its experience resolves at r_k (the
latest of delivery, last contact and refund); the customer then churns for good with
probability q_k = sigmoid(churn_base_i + tenure·ln(k+1) + w·experience_k), or else orders
again at S⁻¹(S(r_k) + E/λ_i), the next event of a Poisson process with rate λ_i·season(t).
With outreach (`outreach.Outreach`), logged actions shift q_k before the draw, or revive or
lose a customer who has not ordered since r_k; without it the draws are exactly the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, ndtr

from features.sources.simulator.contacts import (
    REASON,
    ContactBatch,
    empty_contacts,
    handle_contacts,
    repeat_contacts,
)
from features.sources.simulator.memberships import membership_invoices
from features.sources.simulator.outreach import (
    SUBJECT_ORDER,
    SUBJECT_SHIPMENT,
    Notices,
    Outreach,
    empty_outreach,
    empty_resets,
)
from features.sources.simulator.params import (
    PAYMENT_METHODS,
    RETURN_REASONS,
    CarrierSlowdown,
    RegionOpening,
)
from features.sources.simulator.population import Population
from features.sources.simulator.world import World, cumulative, draw_categorical

INVOICE = PAYMENT_METHODS.index("invoice")
DAMAGED = RETURN_REASONS.index("damaged")
LATE_DELIVERY = RETURN_REASONS.index("late_delivery")
# Event type (index into the contract's TRACKING_EVENT_TYPES) of each column of the
# shipments' "events" matrix.
EVENT_COLUMNS = (0, 1, 1, 2, 3, 4)
HOUR = 1.0 / 24.0
# Per-order tables collected over the iterations, in `_renumber`'s argument order.
_TABLES = ("orders", "lines", "shipments", "returns", "invoices")


class _Accumulator:
    """Collects per-iteration arrays and concatenates them once at the end."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}

    def add(self, **arrays: np.ndarray) -> None:
        for name, values in arrays.items():
            self.parts.setdefault(name, []).append(values)

    def concat(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(values) for name, values in self.parts.items()}


@dataclass
class Journeys:
    """All orders of one chunk and what happened to them.

    Orders are numbered 0..n-1 sorted by (customer, order time); every order-level array,
    shipments included (one shipment per order), is indexed by that number. Times are days
    since the start and may lie beyond the horizon: the writer censors them.

    Attributes:
        orders: customer, t, k (order number of the customer), amount, payment, r (experience
            resolved), q (churn probability after it).
        lines: order, product, qty, unit_price, category.
        shipments: carrier, level, origin (warehouse index), distance, shipped, promised,
            delivered (NaN if lost), mu, sigma (true log-hours), p_late, p_lost, lost, late,
            events (scan times per `EVENT_COLUMNS`, NaN where absent).
        returns: order, product, category, reason, requested, refunded (NaN), amount.
        invoices: order, issued, due, amount, paid (NaN while unpaid).
        contacts: Order-related contacts (order -1 for reason "other").
        outreach: Logged outreach (see `Outreach.results`); subjects of kind shipment and
            order hold journey numbers, contacts and invoices positions in `contacts` and
            `invoices`.
        resets: Where outreach after a decision reset a customer's alive probability: order,
            t, q (the churned probability from t on), for the truth.
        memberships: Membership invoices (`memberships.membership_invoices`), paid times
            after renewal reminders.
    """

    orders: dict[str, np.ndarray]
    lines: dict[str, np.ndarray]
    shipments: dict[str, np.ndarray]
    returns: dict[str, np.ndarray]
    invoices: dict[str, np.ndarray]
    contacts: ContactBatch
    outreach: dict[str, np.ndarray]
    resets: dict[str, np.ndarray]
    memberships: dict[str, np.ndarray]


def simulate_journeys(
    rng: np.random.Generator,
    world: World,
    pop: Population,
    membership_rng: np.random.Generator,
    outreach: Outreach | None = None,
) -> Journeys:
    """Simulate every customer's orders until churn or the horizon.

    Membership invoices are billed from the first order on; they are drawn once the first
    orders are known, so that renewal reminders can be sent during the journeys.

    Args:
        rng: Random stream of the chunk.
        world: Shared context.
        pop: The chunk's customers.
        membership_rng: The chunk's membership stream.
        outreach: The chunk's outreach, or None to send nothing.
    """
    p = world.params
    cp = p.customers
    horizon = world.timeline.days
    n = pop.size
    quick = rng.random(n) < cp.first_order_quick_share
    gap = np.where(
        quick,
        rng.exponential(cp.first_order_quick_hours * HOUR, n),
        rng.exponential(cp.first_order_later_days, n),
    )
    t_next = pop.signup_t + gap
    active = np.flatnonzero(t_next < horizon)
    members = active[pop.is_member[active]]
    memberships = membership_invoices(membership_rng, world, members, t_next[members])
    if outreach is not None:
        outreach.bill_memberships(memberships)
    unresolved_before = np.zeros(n, dtype=np.int64)
    acc = {name: _Accumulator() for name in _TABLES}
    contact_parts: list[ContactBatch] = []
    first = 0
    k = 0
    while active.size:
        cust = active
        t = t_next[cust]
        g = first + np.arange(cust.size)
        step = _one_order(rng, world, pop, cust, t, g, k, unresolved_before, outreach)
        for name, values in step.items():
            if name == "contacts":
                contact_parts.append(values)
            else:
                acc[name].add(**values)
        resolved, churn_prob = step["orders"]["r"], step["orders"]["q"]
        clock = (
            world.timeline.season_clock(resolved)
            + rng.exponential(size=cust.size) / (pop.order_rate[cust])
        )
        nxt = world.timeline.season_clock_inverse(clock)
        churned = rng.random(cust.size) < churn_prob
        if outreach is not None:
            churned, nxt = outreach.after_decision(cust, g, resolved, churn_prob, churned, nxt)
        keep = ~churned & (nxt < horizon)
        t_next[cust[keep]] = nxt[keep]
        active = cust[keep]
        first += cust.size
        k += 1
    if first == 0:
        return _empty_journeys(memberships)
    logged, resets = (
        outreach.results() if outreach is not None else (empty_outreach(), empty_resets())
    )
    return _renumber(
        *(acc[name].concat() for name in _TABLES),
        ContactBatch.concat(contact_parts),
        logged,
        resets,
        memberships,
    )


def _one_order(
    rng: np.random.Generator,
    world: World,
    pop: Population,
    cust: np.ndarray,
    t: np.ndarray,
    g: np.ndarray,
    k: int,
    unresolved_before: np.ndarray,
    outreach: Outreach | None = None,
) -> dict:
    """The k-th order of each customer in `cust`, placed at `t`, numbered `g`."""
    p = world.params
    m = cust.size
    lines, amount, weight_kg = _order_lines(rng, world, pop, cust, t)
    payment = draw_categorical(rng, world.payment_cum[pop.region[cust]])
    ship = _shipments(rng, world, pop, cust, t, amount, weight_kg)
    ship["events"] = _tracking(rng, world, ship)
    notices = outreach.delay_notices(cust, g, amount, ship) if outreach is not None else None

    line = lines["line"]
    delivered_line = ~ship["lost"][line]
    damage_p = (
        np.array([c.damage_prob for c in p.carriers])[ship["carrier"][line]]
        * np.array([c.fragility for c in p.categories])[lines["category"]]
    )
    damaged_line = delivered_line & (rng.random(line.size) < damage_p)
    damaged = np.bincount(line, weights=damaged_line, minlength=m) > 0
    returns, ret_agg = _returns(rng, world, lines, damaged_line, delivered_line, ship, g, m)
    invoices, inv_agg = _invoices(rng, world, pop, cust, t, amount, payment, g)

    contacts, con_agg = _order_contacts(
        rng, world, pop, cust, t, g, ship, damaged, ret_agg, inv_agg, unresolved_before, notices
    )
    unresolved_before[cust] += con_agg["unresolved_count"]

    sp = p.shipping
    delivery_end = np.where(ship["lost"], ship["promised"] + sp.lost_refund_days, ship["delivered"])
    r = np.maximum(np.maximum(delivery_end, con_agg["last_end"]), ret_agg["refund_end"])
    w = p.churn
    late_days = np.minimum(ship["days_late"], w.days_late_cap)
    x = (
        w.late * ship["late"]
        + w.days_late * late_days
        + w.lost * ship["lost"]
        + w.damaged * damaged
        + w.returned * ret_agg["returned"]
        + w.long_refund * ret_agg["long_refund"]
        + w.unresolved * (con_agg["unresolved_count"] > 0)
        + w.high_effort * con_agg["high_effort"]
        + w.complaint * con_agg["complaint"]
        + w.billing_dispute * con_agg["dispute"]
    )
    churn_logit = pop.churn_base[cust] + w.tenure * np.log(k + 1.0) + x
    q = expit(churn_logit)
    if outreach is not None:
        q = outreach.after_experience(
            cust,
            g,
            k,
            amount,
            ship,
            damaged,
            contacts,
            con_agg,
            invoices,
            invoices["order"] - g[0],
            r,
            churn_logit,
        )
    orders = {
        "customer": cust,
        "t": t,
        "k": np.full(m, k, dtype=np.int64),
        "amount": amount,
        "payment": payment,
        "r": r,
        "q": q,
    }
    lines_out = {
        "order": g[line],
        "product": lines["product"],
        "qty": lines["qty"],
        "unit_price": lines["unit_price"],
        "category": lines["category"],
    }
    shipments = {name: ship[name] for name in _SHIPMENT_FIELDS}
    return {
        "orders": orders,
        "lines": lines_out,
        "shipments": shipments,
        "returns": returns,
        "invoices": invoices,
        "contacts": contacts,
    }


_SHIPMENT_FIELDS = (
    "carrier",
    "level",
    "origin",
    "distance",
    "shipped",
    "promised",
    "delivered",
    "mu",
    "sigma",
    "p_late",
    "p_lost",
    "lost",
    "late",
    "events",
)


def _order_lines(
    rng: np.random.Generator, world: World, pop: Population, cust: np.ndarray, t: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Draw the lines of each order: categories by affinity, products by popularity."""
    p = world.params
    catalog = world.catalog
    m = cust.size
    n_lines = 1 + rng.poisson(p.orders.extra_items_mean, m)
    line = np.repeat(np.arange(m), n_lines)
    category = draw_categorical(rng, np.cumsum(pop.affinity[cust[line]], axis=1))
    product = catalog.pick(category, rng.random(line.size))
    qty_extra = np.array([c.qty_extra for c in p.categories])
    qty = 1 + rng.poisson(qty_extra[category])
    # The same product drawn twice in one order becomes one line with the summed quantity
    # (order_items is keyed by order and product).
    key = line * catalog.size + product
    uniq, inverse = np.unique(key, return_inverse=True)
    line = uniq // catalog.size
    product = uniq % catalog.size
    qty = np.bincount(inverse, weights=qty).astype(np.int64)
    category = catalog.category[product]
    promo = world.promo[world.timeline.day_of(t)]
    unit_price = np.round(catalog.price[product] * (1.0 - promo[line]), 2)
    amount = np.round(np.bincount(line, weights=qty * unit_price, minlength=m), 2)
    weight_kg = np.bincount(line, weights=qty * catalog.weight_g[product], minlength=m) / 1000.0
    lines = {
        "line": line,
        "product": product,
        "qty": qty,
        "unit_price": unit_price,
        "category": category,
    }
    return lines, amount, weight_kg


def _shipments(
    rng: np.random.Generator,
    world: World,
    pop: Population,
    cust: np.ndarray,
    t: np.ndarray,
    amount: np.ndarray,
    weight_kg: np.ndarray,
) -> dict[str, np.ndarray]:
    """Book, dispatch and deliver one parcel per order; return true and realised transit."""
    p = world.params
    sp = p.shipping
    tl = world.timeline
    m = cust.size
    levels = p.service_levels
    logits = np.log([lv.share for lv in levels])[None, :] + np.outer(
        pop.price_sensitivity[cust] - 1.0, sp.level_price_sensitivity
    )
    logits[:, 2] += sp.express_amount_bonus * (amount > sp.express_amount)
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    level = draw_categorical(rng, cumulative(prob))
    carrier = draw_categorical(rng, world.carrier_cum[level])

    dest = pop.region[cust]
    nearest = rng.random(m) < sp.nearest_warehouse_share
    origin = np.where(nearest, world.nearest_warehouse[dest], 0)
    distance = world.warehouse_km[origin, dest] + sp.local_km_median * np.exp(
        sp.local_km_sigma * rng.standard_normal(m)
    )
    distance = np.round(distance, 1)

    # Warehouse: handling slows with the peak backlog; carriers collect once a day at the
    # pickup hour, Monday to Saturday, so weekend orders leave on Monday.
    handling_h = (
        sp.handling_hours_median
        * (1.0 + sp.handling_congestion * tl.congestion_at(t))
        * np.exp(sp.handling_sigma * rng.standard_normal(m))
    )
    ready = t + handling_h * HOUR
    slot = np.floor(ready) + sp.pickup_hour * HOUR
    slot = np.where(ready > slot, slot + 1.0, slot)
    slot = np.where(tl.weekday[tl.day_of(slot)] == 6, slot + 1.0, slot)
    shipped = slot + rng.random(m) * 0.5 * HOUR

    # Promise: business days from the dispatch day, at the end of the promised day (UTC).
    ship_day = np.floor(shipped).astype(np.int64)
    days = np.array([lv.promised_days for lv in levels])[level] + (distance > sp.long_distance_km)
    start_day = tl.epoch_s // 86_400
    promised_date = np.busday_offset(
        (start_day + ship_day).astype("datetime64[D]"), days, roll="forward"
    )
    promised = (promised_date.astype(np.int64) - start_day) + 1.0 - 1.0 / 86_400

    congestion = tl.congestion_at(shipped)
    base_h = np.array([lv.base_hours for lv in levels])[level]
    speed = np.array([c.speed for c in p.carriers])[carrier]
    shocked = _slowdowns(p, tl, carrier, dest, shipped)
    speed = speed * shocked[0]
    weekend_h = np.asarray(sp.weekend_hours)[tl.weekday[ship_day]]
    median_h = (
        base_h
        * speed
        * np.exp(
            sp.distance_per_1000km * distance / 1000.0
            + sp.weight_per_kg * np.minimum(weight_kg, sp.weight_cap_kg)
        )
        + weekend_h
    )
    mu = np.log(median_h) + sp.congestion_effect * congestion
    sigma = np.array([c.sigma for c in p.carriers])[carrier] + sp.congestion_sigma * congestion
    sigma = sigma + shocked[1]
    p_lost = np.array([c.lost_prob for c in p.carriers])[carrier] * (
        1.0 + sp.lost_congestion * congestion
    )
    promise_h = (promised - shipped) * 24.0
    # Late = lost, or transit longer than the promise: P = p_lost + (1 - p_lost)·P(T > h).
    p_late = p_lost + (1.0 - p_lost) * ndtr((mu - np.log(promise_h)) / sigma)
    lost = rng.random(m) < p_lost
    transit_h = np.exp(mu + sigma * rng.standard_normal(m))
    delivered = np.where(lost, np.nan, shipped + transit_h * HOUR)
    days_late = np.where(lost, 0.0, np.maximum(delivered - promised, 0.0))
    late = lost | (days_late > 0.0)
    return {
        "carrier": carrier,
        "level": level,
        "origin": origin,
        "distance": distance,
        "shipped": shipped,
        "promised": promised,
        "delivered": delivered,
        "mu": mu,
        "sigma": sigma,
        "p_late": p_late,
        "p_lost": p_lost,
        "lost": lost,
        "late": late,
        "days_late": days_late,
        "transit_h": transit_h,
        "promise_h": promise_h,
    }


def _tracking(rng: np.random.Generator, world: World, ship: dict[str, np.ndarray]) -> np.ndarray:
    """Carrier scans implied by the realised transit; exceptions signal delay.

    Returns:
        (orders, len(EVENT_COLUMNS)) event times, NaN where the scan did not happen (a lost
        parcel is never out for delivery nor delivered).
    """
    sp = world.params.shipping
    m = ship["shipped"].size
    lost = ship["lost"]
    shipped = ship["shipped"]
    # Scans of a lost parcel happen before it disappears, i.e. within the promised time.
    span = np.where(lost, np.minimum(ship["transit_h"], ship["promise_h"]), ship["transit_h"])
    span = span * HOUR
    scan1 = shipped + rng.uniform(0.08, 0.35, m) * span
    two = rng.random(m) < sp.extra_scan_base + sp.extra_scan_long * (ship["distance"] > 600.0)
    scan2 = shipped + rng.uniform(0.40, 0.75, m) * span
    a, b = sp.exception_logit
    ratio = ship["transit_h"] / ship["promise_h"]
    exception = lost | (rng.random(m) < expit(a + b * ratio))
    exception_t = np.where(
        lost,
        ship["promised"] + sp.lost_exception_hours * HOUR,
        shipped + rng.uniform(0.45, 0.85, m) * span,
    )
    delivered = ship["delivered"]
    last_scan = np.maximum(scan1, np.where(two, scan2, scan1))
    last_scan = np.maximum(last_scan, np.where(exception, exception_t, last_scan))
    out_for_delivery = np.minimum(
        np.maximum(delivered - rng.uniform(1.0, 7.0, m) * HOUR, last_scan), delivered
    )
    # One column per possible scan, NaN where it did not happen; the writer sorts each row
    # by time, which is cheaper than sorting one long event list.
    return np.column_stack(
        [
            shipped,
            scan1,
            np.where(two, scan2, np.nan),
            np.where(exception, exception_t, np.nan),
            out_for_delivery,
            delivered,
        ]
    )


def _returns(
    rng: np.random.Generator,
    world: World,
    lines: dict[str, np.ndarray],
    damaged_line: np.ndarray,
    delivered_line: np.ndarray,
    ship: dict[str, np.ndarray],
    g: np.ndarray,
    m: int,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Item returns (damaged items almost always, others by category and lateness)."""
    p = world.params
    rp = p.returns
    line = lines["line"]
    category = lines["category"]
    late = ship["late"][line]
    rate = np.array([c.return_rate for c in p.categories])[category]
    odds = rate / (1.0 - rate) * np.where(late, rp.late_multiplier, 1.0)
    p_return = np.where(damaged_line, rp.damaged_return_prob, odds / (1.0 + odds))
    returned = delivered_line & (rng.random(line.size) < p_return)
    ri = np.flatnonzero(returned)
    weights = np.array([c.reason_weights for c in p.categories], dtype=np.float64)[category[ri]]
    weights[:, LATE_DELIVERY] += rp.late_reason_weight * late[ri]
    reason = np.where(damaged_line[ri], DAMAGED, draw_categorical(rng, cumulative(weights)))
    ret_line = line[ri]
    requested = (
        ship["delivered"][ret_line]
        + 0.05
        + np.minimum(rng.exponential(rp.request_days_mean, ri.size), rp.return_window_days)
    )
    lag = rp.refund_days_median * np.exp(rp.refund_sigma * rng.standard_normal(ri.size))
    never = rng.random(ri.size) < rp.never_refunded_prob
    refunded = np.where(never, np.nan, requested + lag)
    slow = never | (lag > rp.long_refund_days)
    returns = {
        "order": g[ret_line],
        "product": lines["product"][ri],
        "category": category[ri],
        "reason": reason,
        "requested": requested,
        "refunded": refunded,
        "amount": np.round(lines["unit_price"][ri] * lines["qty"][ri], 2),
    }
    refund_end = np.full(m, -np.inf)
    np.maximum.at(refund_end, ret_line, np.where(never, requested + rp.give_up_days, refunded))
    first_request = np.full(m, np.inf)
    np.minimum.at(first_request, ret_line, requested)
    agg = {
        "returned": np.bincount(ret_line, minlength=m) > 0,
        "long_refund": np.bincount(ret_line, weights=slow, minlength=m) > 0,
        "refund_end": refund_end,
        "first_request": first_request,
    }
    return returns, agg


def _invoices(
    rng: np.random.Generator,
    world: World,
    pop: Population,
    cust: np.ndarray,
    t: np.ndarray,
    amount: np.ndarray,
    payment: np.ndarray,
    g: np.ndarray,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Pay-later invoices: mostly paid on time, sometimes late, rarely never."""
    ip = world.params.invoices
    m = cust.size
    ii = np.flatnonzero(payment == INVOICE)
    risk = -ip.reliability_weight * pop.payment_reliability[cust[ii]]
    unpaid = rng.random(ii.size) < expit(ip.unpaid_logit + risk)
    late = ~unpaid & (rng.random(ii.size) < expit(ip.late_logit + risk))
    issued = t[ii]
    due = issued + ip.due_days
    on_time = issued + rng.uniform(0.2, ip.due_days, ii.size)
    late_paid = due + 0.5 + rng.exponential(ip.late_days_mean, ii.size)
    paid = np.where(unpaid, np.nan, np.where(late, late_paid, on_time))
    invoices = {"order": g[ii], "issued": issued, "due": due, "amount": amount[ii], "paid": paid}
    overdue = np.zeros(m, dtype=bool)
    overdue[ii] = unpaid | late
    due_all = np.full(m, np.nan)
    due_all[ii] = due
    return invoices, {"invoice": payment == INVOICE, "overdue": overdue, "due": due_all}


def _order_contacts(
    rng: np.random.Generator,
    world: World,
    pop: Population,
    cust: np.ndarray,
    t: np.ndarray,
    g: np.ndarray,
    ship: dict[str, np.ndarray],
    damaged: np.ndarray,
    ret_agg: dict[str, np.ndarray],
    inv_agg: dict[str, np.ndarray],
    unresolved_before: np.ndarray,
    notices: Notices | None = None,
) -> tuple[ContactBatch, dict[str, np.ndarray]]:
    """Contacts arising from the order's experience, a complaint if it went badly, repeats.

    A delay notice sent before the "where is my order" moment cuts that contact's
    probability (`notices`)."""
    cp = world.params.contacts
    m = cust.size
    lost = ship["lost"]
    shipped, promised, delivered = ship["shipped"], ship["promised"], ship["delivered"]
    days_late = ship["days_late"]
    u = rng.random((9, m))
    ex = rng.exponential(size=(7, m))

    # "Where is my order?" while the parcel runs long (a lost parcel runs forever).
    ratio = np.where(lost, 1.5, ship["transit_h"] / ship["promise_h"])
    watch = np.where(lost, ship["promise_h"] + 48.0, ship["transit_h"]) * HOUR
    status_t = shipped + (0.35 + 0.6 * u[8]) * watch
    a, b = cp.status_logit
    status_p = expit(a + b * ratio)
    if notices is None:
        status = u[0] < status_p
    else:
        noticed = notices.sent & (status_t > notices.t)
        status = u[0] < status_p * np.where(noticed, 1.0 - notices.reduction, 1.0)
    a, b = cp.delay_logit
    delay = ship["late"] & ~lost & (u[1] < expit(a + b * days_late))
    delay_t = promised + HOUR + 0.5 * ex[0]
    missing = u[2] < np.where(lost, cp.missing_lost_prob, cp.missing_delivered_prob)
    missing_t = np.where(lost, promised + 1.0 + 2.0 * ex[1], delivered + ex[1])
    damage = damaged & (u[3] < cp.damaged_prob)
    damage_t = delivered + HOUR + ex[2]
    base, extra = cp.refund_prob
    refund = ret_agg["returned"] & (u[4] < base + extra * ret_agg["long_refund"])
    rp = world.params.returns
    refund_t = ret_agg["first_request"] + np.where(
        ret_agg["long_refund"], rp.long_refund_days + 3.0 * ex[3], 4.0 * ex[3]
    )
    payment = inv_agg["overdue"] & (u[5] < cp.payment_prob)
    payment_t = inv_agg["due"] + 2.0 + 3.0 * ex[4]
    base, extra = cp.dispute_prob
    dispute = u[6] < base + extra * inv_agg["invoice"]
    dispute_t = t + 1.0 + 7.0 * ex[5]
    other = u[7] < cp.other_prob
    other_t = t + 14.0 * rng.random(m)

    primary = [
        (status, "order_status", status_t),
        (delay, "delivery_delay", delay_t),
        (missing, "missing_item", missing_t),
        (damage, "damaged_item", damage_t),
        (refund, "return_refund", refund_t),
        (payment, "payment", payment_t),
        (dispute, "billing_dispute", dispute_t),
        (other, "other", other_t),
    ]
    local = np.concatenate([np.flatnonzero(mask) for mask, _, _ in primary])
    reason = np.concatenate([np.full(mask.sum(), REASON[name]) for mask, name, _ in primary])
    times = np.concatenate([ts[mask] for mask, _, ts in primary])
    first = handle_contacts(
        rng, world, cust[local], local, times, reason, pop.preferred[cust[local]], repeat=False
    )

    unresolved_now = np.bincount(local, weights=~first.resolved, minlength=m)
    last_end = np.full(m, -np.inf)
    np.maximum.at(last_end, local, first.end)
    disputed = np.bincount(local, weights=reason == REASON["billing_dispute"], minlength=m) > 0
    c = cp.complaint_logit
    logit = (
        c[0]
        + c[1] * ship["late"]
        + c[2] * np.minimum(days_late, 10.0)
        + c[3] * lost
        + c[4] * damaged
        + c[5] * ret_agg["long_refund"]
        + c[6] * unresolved_now
        + c[7] * np.minimum(unresolved_before[cust], 3)
        + c[8] * disputed
    )
    complain = np.flatnonzero(rng.random(m) < expit(logit))
    settled = np.where(lost, promised + 2.0, delivered)
    complaint_t = (
        np.maximum(settled[complain], last_end[complain])
        + 0.1
        + rng.exponential(2.0, complain.size)
    )
    complaints = handle_contacts(
        rng,
        world,
        cust[complain],
        complain,
        complaint_t,
        np.full(complain.size, REASON["complaint"]),
        pop.preferred[cust[complain]],
        repeat=False,
    )
    initial = ContactBatch.concat([first, complaints])
    batch = ContactBatch.concat([initial, *repeat_contacts(rng, world, initial, pop.preferred)])
    # `batch.order` holds the position within this iteration (for the aggregates below); the
    # journey numbering replaces it before the batch leaves, with -1 for unrelated contacts.
    local = batch.order
    last_end = np.full(m, -np.inf)
    np.maximum.at(last_end, local, batch.end)
    agg = {
        "unresolved_count": np.bincount(local, weights=~batch.resolved, minlength=m).astype(
            np.int64
        ),
        "high_effort": np.bincount(local, weights=batch.high_effort, minlength=m) > 0,
        "complaint": np.bincount(local, weights=batch.reason == REASON["complaint"], minlength=m)
        > 0,
        "dispute": np.bincount(
            local, weights=batch.reason == REASON["billing_dispute"], minlength=m
        )
        > 0,
        "last_end": last_end,
        "status_p": status_p,
        "status_t": status_t,
    }
    batch.order = np.where(batch.reason == REASON["other"], -1, g[local])
    return batch, agg


def _renumber(
    orders: dict[str, np.ndarray],
    lines: dict[str, np.ndarray],
    shipments: dict[str, np.ndarray],
    returns: dict[str, np.ndarray],
    invoices: dict[str, np.ndarray],
    contacts: ContactBatch,
    outreach: dict[str, np.ndarray],
    resets: dict[str, np.ndarray],
    memberships: dict[str, np.ndarray],
) -> Journeys:
    """Renumber orders from iteration order to (customer, order time) order."""
    perm = np.argsort(orders["customer"], kind="stable")
    new = np.empty_like(perm)
    new[perm] = np.arange(perm.size)

    def remap(index: np.ndarray) -> np.ndarray:
        return np.where(index >= 0, new[np.maximum(index, 0)], -1)

    orders = {name: values[perm] for name, values in orders.items()}
    shipments = {name: values[perm] for name, values in shipments.items()}
    for table in (lines, returns, invoices):
        table["order"] = remap(table["order"])
    contacts.order = remap(contacts.order)
    by_order = np.isin(outreach["subject_kind"], (SUBJECT_SHIPMENT, SUBJECT_ORDER))
    outreach["subject"] = np.where(by_order, remap(outreach["subject"]), outreach["subject"])
    resets["order"] = remap(resets["order"])
    return Journeys(
        orders, lines, shipments, returns, invoices, contacts, outreach, resets, memberships
    )


def _empty_journeys(memberships: dict[str, np.ndarray]) -> Journeys:
    f, i, b = np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    orders = {"customer": i, "t": f, "k": i, "amount": f, "payment": i, "r": f, "q": f}
    lines = {"order": i, "product": i, "qty": i, "unit_price": f, "category": i}
    shipments = {
        name: (
            i if name in ("carrier", "level", "origin") else b if name in ("lost", "late") else f
        )
        for name in _SHIPMENT_FIELDS
    }
    shipments["events"] = np.zeros((0, len(EVENT_COLUMNS)))
    returns = {
        "order": i,
        "product": i,
        "category": i,
        "reason": i,
        "requested": f,
        "refunded": f,
        "amount": f,
    }
    invoices = {"order": i, "issued": f, "due": f, "amount": f, "paid": f}
    return Journeys(
        orders,
        lines,
        shipments,
        returns,
        invoices,
        empty_contacts(),
        empty_outreach(),
        empty_resets(),
        memberships,
    )


def _slowdowns(
    p, tl, carrier: np.ndarray, dest: np.ndarray, shipped: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per parcel, the factor on its median transit and the spread added by the carrier
    slowdowns (`params.CarrierSlowdown`) in force on its dispatch day and by the lanes of an
    opened region (`params.RegionOpening`) it travels to (1 and 0 otherwise).

    Raises:
        ValueError: A slowdown names no carrier of the business.
    """
    factor = np.ones(len(carrier))
    spread = np.zeros(len(carrier))
    names = [c.name for c in p.carriers]
    codes = [r.code for r in p.regions]
    for shock in p.shocks:
        if isinstance(shock, RegionOpening):
            # Only customers who signed up from its start live there: its lanes are new.
            hit = dest == codes.index(shock.region)
        elif isinstance(shock, CarrierSlowdown):
            if shock.carrier not in names:
                raise ValueError(f"shock: unknown carrier {shock.carrier!r}; carriers: {names}")
            first_day = (shock.start - tl.start).days
            hit = (carrier == names.index(shock.carrier)) & (shipped >= first_day)
        else:
            continue
        factor[hit] *= shock.factor
        spread[hit] += shock.sigma_add
    return factor, spread
