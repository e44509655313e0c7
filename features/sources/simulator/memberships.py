"""Paid memberships: a yearly invoice from the first order on, and the contacts around it.

Membership invoices and renewal contacts do not depend on whether the customer has silently
churned: churn is only ever visible as the absence of orders, so the true repurchase
probability (`truth`) stays the best achievable score.
"""

from __future__ import annotations

import numpy as np

from features.sources.simulator.contacts import REASON, ContactBatch, handle_contacts
from features.sources.simulator.population import Population
from features.sources.simulator.world import World

YEAR_DAYS = 365.0


def simulate_memberships(
    rng: np.random.Generator,
    world: World,
    pop: Population,
    order_customer: np.ndarray,
    order_t: np.ndarray,
) -> tuple[dict[str, np.ndarray], ContactBatch]:
    """Membership invoices and the renewal and payment contacts they cause.

    Args:
        rng: Random stream of the chunk.
        world: Shared context.
        pop: The chunk's customers.
        order_customer: Customer per order, sorted by (customer, time).
        order_t: Order time per order.

    Returns:
        Invoices (customer, issued, due, amount, paid) and contacts (order -1).
    """
    p = world.params
    ip = p.invoices
    cp = p.contacts
    horizon = world.timeline.days
    customers, first_index = np.unique(order_customer, return_index=True)
    members = pop.is_member[customers]
    customer = customers[members]
    start = order_t[first_index][members]
    years = int(np.ceil(horizon / YEAR_DAYS)) + 1
    parts_c, parts_t, parts_y = [], [], []
    for year in range(years):
        issued = start + year * YEAR_DAYS
        inside = issued < horizon
        parts_c.append(customer[inside])
        parts_t.append(issued[inside])
        parts_y.append(np.full(inside.sum(), year))
    customer = np.concatenate(parts_c)
    issued = np.concatenate(parts_t)
    year = np.concatenate(parts_y)
    order = np.lexsort((issued, customer))
    customer, issued, year = customer[order], issued[order], year[order]
    n = customer.size

    u = rng.random((4, n))
    unpaid = u[0] < ip.membership_unpaid_prob
    late = ~unpaid & (u[1] < ip.membership_late_prob)
    due = issued + ip.due_days
    paid = np.where(
        unpaid,
        np.nan,
        np.where(
            late,
            due + 0.5 + rng.exponential(ip.late_days_mean, n),
            issued + rng.uniform(0.1, 10.0, n),
        ),
    )
    invoices = {
        "customer": customer,
        "issued": issued,
        "due": due,
        "amount": np.full(n, p.customers.membership_fee),
        "paid": paid,
    }

    first_year, later_years = cp.renewal_prob
    renew = u[2] < np.where(year == 0, first_year, later_years)
    # Renewals are discussed around the renewal date (a reminder goes out a week before);
    # the first year's questions come after joining.
    renew_t = issued + np.where(year == 0, rng.exponential(3.0, n), -7.0 + rng.exponential(7.0, n))
    renew_t = np.maximum(renew_t, pop.signup_t[customer])
    pay = (unpaid | late) & (u[3] < cp.membership_payment_prob)
    pay_t = due + 2.0 + rng.exponential(3.0, n)
    who = np.concatenate([customer[renew], customer[pay]])
    when = np.concatenate([renew_t[renew], pay_t[pay]])
    reason = np.concatenate(
        [np.full(renew.sum(), REASON["renewal"]), np.full(pay.sum(), REASON["payment"])]
    )
    contacts = handle_contacts(
        rng, world, who, np.full(who.size, -1), when, reason, pop.preferred[who], repeat=False
    )
    return invoices, contacts
