"""Paid memberships: a yearly invoice from the first order on, and the contacts around it.

Membership invoices and renewal contacts do not depend on whether the customer has silently
churned: churn is only ever visible as the absence of orders, so the true repurchase
probability (`truth`) stays the best achievable score. The invoices are drawn before the
journeys from their own stream (renewal reminders need to know which are unpaid), the
contacts after them from the chunk's stream.
"""

from __future__ import annotations

import numpy as np

from features.sources.simulator.contacts import REASON, ContactBatch, handle_contacts
from features.sources.simulator.population import Population
from features.sources.simulator.world import World

YEAR_DAYS = 365.0


def membership_invoices(
    rng: np.random.Generator,
    world: World,
    customer: np.ndarray,
    first_order_t: np.ndarray,
) -> dict[str, np.ndarray]:
    """Yearly membership invoices from each member's first order, and when they are paid.

    Drawn before the journeys, from the chunk's membership stream, because renewal reminders
    during the journeys need to know which invoices are still unpaid.

    Args:
        rng: The chunk's membership stream.
        world: Shared context.
        customer: Members with a first order within the period, ascending.
        first_order_t: Their first order times.

    Returns:
        Invoices sorted by (customer, issued): customer, year (0 for the first), issued, due,
        amount, paid (NaN if never).
    """
    p = world.params
    ip = p.invoices
    horizon = world.timeline.days
    years = int(np.ceil(horizon / YEAR_DAYS)) + 1
    parts_c, parts_t, parts_y = [], [], []
    for year in range(years):
        issued = first_order_t + year * YEAR_DAYS
        inside = issued < horizon
        parts_c.append(customer[inside])
        parts_t.append(issued[inside])
        parts_y.append(np.full(inside.sum(), year))
    customer = np.concatenate(parts_c).astype(np.int64)
    issued = np.concatenate(parts_t)
    year = np.concatenate(parts_y).astype(np.int64)
    order = np.lexsort((issued, customer))
    customer, issued, year = customer[order], issued[order], year[order]
    n = customer.size

    u = rng.random((2, n))
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
    return {
        "customer": customer,
        "year": year,
        "issued": issued,
        "due": due,
        "amount": np.full(n, p.customers.membership_fee),
        "paid": paid,
    }


def membership_contacts(
    rng: np.random.Generator, world: World, pop: Population, invoices: dict[str, np.ndarray]
) -> ContactBatch:
    """The renewal and payment contacts membership invoices cause.

    Args:
        rng: Random stream of the chunk.
        world: Shared context.
        pop: The chunk's customers.
        invoices: The chunk's membership invoices (`membership_invoices`), paid times after
            any renewal reminder moved them.

    Returns:
        Contacts (order -1).
    """
    cp = world.params.contacts
    customer, issued, year = invoices["customer"], invoices["issued"], invoices["year"]
    paid, due = invoices["paid"], invoices["due"]
    n = customer.size
    u = rng.random((2, n))
    first_year, later_years = cp.renewal_prob
    renew = u[0] < np.where(year == 0, first_year, later_years)
    # Renewals are discussed around the renewal date (a reminder goes out a week before);
    # the first year's questions come after joining.
    renew_t = issued + np.where(year == 0, rng.exponential(3.0, n), -7.0 + rng.exponential(7.0, n))
    renew_t = np.maximum(renew_t, pop.signup_t[customer])
    # Never paid, or paid after the due date.
    overdue = ~(paid <= due)
    pay = overdue & (u[1] < cp.membership_payment_prob)
    pay_t = due + 2.0 + rng.exponential(3.0, n)
    who = np.concatenate([customer[renew], customer[pay]])
    when = np.concatenate([renew_t[renew], pay_t[pay]])
    reason = np.concatenate(
        [np.full(renew.sum(), REASON["renewal"]), np.full(pay.sum(), REASON["payment"])]
    )
    return handle_contacts(
        rng, world, who, np.full(who.size, -1), when, reason, pop.preferred[who], repeat=False
    )
