"""Every parameter of the simulated business, in one place.

The mechanisms live in the sibling modules; this module only says how strong each one is and
why. Values are plausible for a mid-sized European online shop, not fitted to real data: they
are chosen so that every mechanism leaves a visible, learnable signal (late rate clearly higher
in peak season and on the budget carrier, churn clearly higher after bad experiences, offers
with real uplift) while the volumes per customer stay sane. `docs/simulator.md` describes the
mechanisms that use them.

All dataclasses are frozen so that a parameter set can be shared between processes and never
changes under a running simulation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

# Vocabularies come from the contract so that the codes the simulator draws index into
# exactly the labels the contract allows.
from features.contract.schema import (
    CONTACT_CHANNELS,
    CONTACT_REASONS,
    PAYMENT_METHODS,
    RETURN_REASONS,
)

# Customers are simulated in fixed-size chunks, each with its own random stream, so memory does
# not grow with the population and the output does not depend on the number of workers. It is
# a constant, not a knob: changing it changes every random draw.
CHUNK_CUSTOMERS = 50_000

# Random-stream identifiers mixed into the seed (`SeedSequence([seed, stream, ...])`), so the
# catalogue and each chunk draw from independent streams.
STREAM_PRODUCTS = 1
STREAM_CHUNK = 2
# Outreach draws (who is eligible is decided by the chunk's stream; which action, holdouts and
# the customers' response to it come from `SeedSequence([seed, STREAM_OUTREACH, chunk])`), so
# with outreach switched off the chunk's own draws are exactly those of a run without it.
STREAM_OUTREACH = 3
# Membership invoices and their payment, drawn before the journeys (renewal reminders during
# them need to know which invoices are unpaid): `SeedSequence([seed, STREAM_MEMBERSHIP, chunk])`.
STREAM_MEMBERSHIP = 4
# Who moves to a newly opened region (`RegionOpening`): `SeedSequence([seed, STREAM_SHOCKS,
# chunk])`, so the chunk's own draws of its customers stay those of a run without the shock.
STREAM_SHOCKS = 5


@dataclass(frozen=True)
class Region:
    """A delivery region: one country (or country group) with its own language and clock.

    Attributes:
        code: Region code written to `customers.region` and the shipment lanes.
        timezone: IANA time zone of the region's customers (quiet hours).
        language: ISO 639-1 language the customers speak to the contact center.
        lat: Latitude of the region's population centre, degrees.
        lon: Longitude of the region's population centre, degrees.
        weight: Share of customers living there.
        payment_weights: Weights of (card, paypal, invoice, bank_transfer, voucher, other).
    """

    code: str
    timezone: str
    language: str
    lat: float
    lon: float
    weight: float
    payment_weights: tuple[float, float, float, float, float, float]


# Pay-later invoices are common in German-speaking countries and the Netherlands (Klarna-style
# "Kauf auf Rechnung"), rare in the south and east, so invoice-related contacts and disputes
# concentrate there.
REGIONS: tuple[Region, ...] = (
    Region("DE", "Europe/Berlin", "de", 51.0, 10.3, 0.30, (0.30, 0.33, 0.28, 0.04, 0.03, 0.02)),
    Region("AT", "Europe/Vienna", "de", 47.6, 14.5, 0.06, (0.35, 0.30, 0.26, 0.04, 0.03, 0.02)),
    Region("FR", "Europe/Paris", "fr", 46.6, 2.5, 0.16, (0.70, 0.20, 0.04, 0.02, 0.03, 0.01)),
    Region("NL", "Europe/Amsterdam", "nl", 52.2, 5.5, 0.08, (0.40, 0.25, 0.25, 0.05, 0.03, 0.02)),
    Region("ES", "Europe/Madrid", "es", 40.2, -3.6, 0.12, (0.68, 0.25, 0.02, 0.02, 0.02, 0.01)),
    Region("IT", "Europe/Rome", "it", 42.8, 12.6, 0.13, (0.60, 0.33, 0.02, 0.02, 0.02, 0.01)),
    Region("PL", "Europe/Warsaw", "pl", 52.1, 19.4, 0.09, (0.50, 0.30, 0.08, 0.08, 0.02, 0.02)),
    Region("IE", "Europe/Dublin", "en", 53.2, -7.9, 0.06, (0.72, 0.22, 0.01, 0.02, 0.02, 0.01)),
)

# Regions the shop does not serve by default (weight 0), for a `RegionOpening`: far from the
# warehouses or across the sea, so their lanes are long, and with their own languages and
# payment habits (Swedes and Finns pay by invoice almost as often as Germans).
OPENABLE_REGIONS: tuple[Region, ...] = (
    Region("SE", "Europe/Stockholm", "sv", 59.3, 18.1, 0.0, (0.45, 0.15, 0.30, 0.05, 0.03, 0.02)),
    Region("FI", "Europe/Helsinki", "fi", 61.9, 25.7, 0.0, (0.45, 0.15, 0.28, 0.07, 0.03, 0.02)),
    Region("PT", "Europe/Lisbon", "pt", 39.6, -8.0, 0.0, (0.62, 0.25, 0.02, 0.07, 0.02, 0.02)),
    Region("GR", "Europe/Athens", "el", 39.1, 22.0, 0.0, (0.60, 0.25, 0.02, 0.08, 0.03, 0.02)),
)


@dataclass(frozen=True)
class Warehouse:
    """A fulfilment centre; shipments start there.

    Attributes:
        region: Region code of the warehouse (the shipment's origin_region).
        lat: Latitude, degrees.
        lon: Longitude, degrees.
    """

    region: str
    lat: float
    lon: float


# A central hub in Kassel plus two satellites: Poznań for the east and Zaragoza for the south.
# The first warehouse is the main hub that ships whatever the nearest one lacks.
WAREHOUSES: tuple[Warehouse, ...] = (
    Warehouse("DE", 51.3, 9.5),
    Warehouse("PL", 52.4, 16.9),
    Warehouse("ES", 41.65, -0.9),
)


@dataclass(frozen=True)
class Carrier:
    """A parcel carrier and how it performs.

    Attributes:
        name: Written to `shipments.carrier`.
        speed: Multiplier on the service level's median transit hours (1 = typical).
        sigma: Standard deviation of log transit hours: its unreliability.
        lost_prob: Probability that a parcel is lost outside peak season.
        damage_prob: Probability that a fragile item arrives damaged.
        shares: Share of economy, standard and express parcels booked with this carrier.
    """

    name: str
    speed: float
    sigma: float
    lost_prob: float
    damage_prob: float
    shares: tuple[float, float, float]


# Four carriers with distinct profiles so that carrier is a strong, learnable delay feature:
# a national standard carrier, a cross-border postal carrier, a premium courier (fast, tight
# spread, takes most express parcels) and a budget carrier that is slow, erratic and loses and
# breaks more parcels (takes most economy parcels). Names are fictitious on purpose.
CARRIERS: tuple[Carrier, ...] = (
    Carrier("ParcelOne", 1.00, 0.30, 0.0025, 0.012, (0.25, 0.45, 0.10)),
    Carrier("EuroPost", 1.08, 0.34, 0.0035, 0.015, (0.25, 0.30, 0.05)),
    Carrier("SwiftLine", 0.85, 0.22, 0.0012, 0.007, (0.00, 0.05, 0.85)),
    Carrier("ValueShip", 1.30, 0.46, 0.0100, 0.030, (0.50, 0.20, 0.00)),
)


@dataclass(frozen=True)
class ServiceLevel:
    """A delivery promise the customer chose at checkout.

    Attributes:
        name: Written to `shipments.service_level`.
        promised_days: Business days from dispatch to the promised end of day.
        base_hours: Median transit hours of a typical carrier over a short lane.
        share: Share of orders that book it (before price-sensitivity shifts).
    """

    name: str
    promised_days: int
    base_hours: float
    share: float


# Medians sit at roughly 55-65 % of the promise so that a well-run lane is late ~5 % of the
# time and congestion, weekends, the budget carrier and long lanes push it well above that.
SERVICE_LEVELS: tuple[ServiceLevel, ...] = (
    ServiceLevel("economy", 4, 52.0, 0.30),
    ServiceLevel("standard", 2, 30.0, 0.55),
    ServiceLevel("express", 1, 16.0, 0.15),
)


@dataclass(frozen=True)
class Category:
    """A merchandising category of the catalogue.

    Attributes:
        name: Written to `products.category` and `offers.category`.
        popularity: Share of purchases overall; also the Dirichlet base of affinities.
        price_median: Median list price; the "category-typical price" of offer revenue.
        price_sigma: Log-scale spread of list prices within the category.
        margin_mean: Mean gross margin as a fraction of price.
        weight_median_g: Median shipping weight in grams.
        return_rate: Probability that an item comes back when nothing went wrong.
        fragility: Multiplier on the carrier's damage probability.
        qty_extra: Mean of the Poisson number of extra units per order line.
        reason_weights: Weights of the return reasons (damaged, defective, wrong_size,
            not_as_described, late_delivery, changed_mind, other) for undamaged items.
    """

    name: str
    popularity: float
    price_median: float
    price_sigma: float
    margin_mean: float
    weight_median_g: float
    return_rate: float
    fragility: float
    qty_extra: float
    reason_weights: tuple[float, float, float, float, float, float, float]


# Ordered by popularity so that ties (e.g. in "most-ordered category") go to the popular one.
# Fashion is the classic high-return category (sizes); electronics is expensive, thin-margin,
# fragile and returned as defective; grocery is cheap, bought in quantity and hardly returned.
CATEGORIES: tuple[Category, ...] = (
    Category("fashion", 0.26, 45.0, 0.50, 0.55, 500, 0.26, 0.2, 0.15, (0, 1, 6, 2, 0, 3, 0.5)),
    Category("home", 0.14, 40.0, 0.70, 0.42, 1500, 0.07, 0.9, 0.10, (0, 2, 0, 3, 0, 3, 1)),
    Category("electronics", 0.12, 180.0, 0.80, 0.18, 900, 0.08, 1.0, 0.02, (0, 5, 0, 2, 0, 2, 1)),
    Category("beauty", 0.11, 22.0, 0.50, 0.50, 250, 0.04, 0.4, 0.40, (0, 1, 0, 3, 0, 3, 1)),
    Category("sports", 0.10, 55.0, 0.60, 0.38, 1200, 0.10, 0.3, 0.10, (0, 2, 4, 2, 0, 3, 1)),
    Category("books", 0.10, 16.0, 0.40, 0.30, 450, 0.03, 0.1, 0.20, (0, 1, 0, 2, 0, 4, 1)),
    Category("toys", 0.09, 30.0, 0.60, 0.40, 700, 0.06, 0.5, 0.20, (0, 3, 0, 2, 0, 3, 1)),
    Category("grocery", 0.08, 8.0, 0.50, 0.22, 800, 0.01, 0.3, 1.50, (0, 1, 0, 2, 0, 2, 2)),
)


@dataclass(frozen=True)
class CatalogParams:
    """The product catalogue, generated once per seed.

    Attributes:
        products_per_category: Products in each category.
        zipf_exponent: Popularity of the r-th product within a category is ∝ r^-exponent, so a
            few best-sellers dominate as in every real catalogue.
        margin_sd: Spread of margins around the category mean.
        weight_sigma: Log-scale spread of weights within a category.
    """

    products_per_category: int = 250
    zipf_exponent: float = 1.0
    margin_sd: float = 0.06
    weight_sigma: float = 0.5


@dataclass(frozen=True)
class SeasonalityParams:
    """Yearly and weekly rhythm of demand (orders) and of network congestion.

    The daily demand factor is normalised to mean 1 over the simulated period so that a
    customer's order rate is "orders per average day".

    Attributes:
        summer_dip: Depth of the August dip (holidays: people are away, shops are quiet).
        summer_center_doy: Day of year at the bottom of the dip.
        summer_width_days: Width (sd) of the dip.
        christmas_boost: Height of the pre-Christmas bump (gift shopping in December).
        christmas_center_doy: Day of year of its top (mid-December, the last safe order days).
        christmas_width_days: Width (sd) of the bump.
        christmas_lull: Demand multiplier on 24-26 December (everyone is at home, unboxing).
        january_sales: Extra demand in the first half of January (sales, gift returns).
        black_friday_week: Multipliers from Monday before Black Friday through Cyber Monday.
        weekday: Demand multipliers Monday..Sunday: Sunday-evening and Monday browsing peaks,
            Friday/Saturday lows.
        hourly: Relative order intensity by UTC hour: a European evening peak.
        congestion_weight: How much of the demand excess above 1 turns into network congestion.
        congestion_window_days: Congestion is a trailing mean: backlogs build up and drain.
    """

    summer_dip: float = 0.18
    summer_center_doy: float = 215.0
    summer_width_days: float = 22.0
    christmas_boost: float = 0.8
    christmas_center_doy: float = 343.0
    christmas_width_days: float = 9.0
    christmas_lull: float = 0.55
    january_sales: float = 0.15
    black_friday_week: tuple[float, ...] = (1.25, 1.35, 1.45, 1.6, 2.6, 2.0, 1.8, 2.3)
    weekday: tuple[float, ...] = (1.12, 1.0, 0.98, 0.95, 0.88, 0.85, 1.22)
    hourly: tuple[float, ...] = (
        0.6, 0.3, 0.2, 0.2, 0.3, 0.6, 1.0, 1.6, 2.0, 2.3, 2.5, 2.7,
        2.9, 2.8, 2.7, 2.8, 3.0, 3.4, 4.0, 4.6, 4.8, 4.2, 2.8, 1.4,
    )  # fmt: skip
    congestion_weight: float = 1.0
    congestion_window_days: int = 7


@dataclass(frozen=True)
class CustomerParams:
    """Who the customers are: signup, consents and latent traits.

    Attributes:
        signup_beta: Beta(a, b) of the signup time as a fraction of the period; a < b puts
            more signups early (the launch cohort) and fewer later.
        channel_weights: Preferred outreach channel weights (email, sms, voice).
        consent_logit: Base logits of consent to email, sms, voice and marketing; one shared
            "openness" trait makes the flags correlated, as in real preference centres.
        consent_openness: Weight of the shared openness trait.
        consent_preferred: Extra logit for consenting to one's preferred channel.
        english_share: Share of customers who use English whatever their region (expats).
        mean_order_gap_days: Mean days between orders of a customer who stays (1 / rate).
        rate_shape: Gamma shape of the order rate: heavy and light buyers.
        rate_loyalty: Log-rate gain per unit of loyalty.
        churn_base_mean: Mean base churn logit after an order with nothing wrong.
        churn_base_sd: Spread of the base churn logit between customers.
        churn_loyalty: Churn logit change per unit of loyalty (loyal customers stay).
        affinity_concentration: Dirichlet concentration times category popularity: small
            values give customers strong favourite categories.
        price_sensitivity_shape: Gamma shape of price sensitivity (mean 1).
        member_share: Share of customers with a paid yearly membership.
        member_rate_multiplier: Members order more (free shipping is part of the membership).
        member_churn_shift: Members churn less (sunk cost, habit).
        membership_fee: Yearly membership fee.
        first_order_quick_share: Share whose first order is in the signup session.
        first_order_quick_hours: Mean hours to the first order in that case.
        first_order_later_days: Mean days to the first order otherwise.
    """

    signup_beta: tuple[float, float] = (0.8, 1.5)
    channel_weights: tuple[float, float, float] = (0.65, 0.25, 0.10)
    consent_logit: tuple[float, float, float, float] = (2.2, -0.6, -1.4, 0.55)
    consent_openness: float = 1.2
    consent_preferred: float = 2.5
    english_share: float = 0.04
    mean_order_gap_days: float = 75.0
    rate_shape: float = 2.0
    rate_loyalty: float = 0.25
    churn_base_mean: float = -1.55
    churn_base_sd: float = 0.6
    churn_loyalty: float = 0.4
    affinity_concentration: float = 2.5
    price_sensitivity_shape: float = 2.0
    member_share: float = 0.12
    member_rate_multiplier: float = 1.3
    member_churn_shift: float = -0.4
    membership_fee: float = 49.0
    first_order_quick_share: float = 0.7
    first_order_quick_hours: float = 0.4
    first_order_later_days: float = 6.0


@dataclass(frozen=True)
class OrderParams:
    """What an order contains and how it is paid.

    Attributes:
        extra_items_mean: Mean Poisson number of lines beyond the first (1.5 lines/order).
        black_friday_discount: Price cut on all items during Black Friday week.
        christmas_discount: Price cut in the pre-Christmas weeks (1-20 December).
    """

    extra_items_mean: float = 0.5
    black_friday_discount: float = 0.15
    christmas_discount: float = 0.05


@dataclass(frozen=True)
class ShippingParams:
    """Warehouse handling and the true transit-time distribution.

    Transit hours are lognormal: log-mean from carrier, service level, distance, dispatch
    weekday, congestion and weight; log-sd by carrier (plus a congestion term).

    Attributes:
        level_price_sensitivity: Logit shift of (economy, standard, express) per unit of
            price sensitivity above average: bargain hunters book economy.
        express_amount: Orders above this amount book express more often ...
        express_amount_bonus: ... by this logit (an expensive gift must arrive on time).
        nearest_warehouse_share: Orders shipped from the nearest warehouse; the rest from the
            main hub because the nearest one lacks stock.
        road_factor: Road distance over great-circle distance (includes ferries to Ireland).
        local_km_median: Median extra kilometres within the destination region.
        local_km_sigma: Log-spread of those kilometres.
        long_distance_km: Lanes longer than this get one more promised day.
        handling_hours_median: Median hours from order to "ready to ship".
        handling_sigma: Log-spread of handling time.
        handling_congestion: Handling slows down with the peak backlog: × (1 + this × congestion).
        pickup_hour: Carriers collect once a day at this UTC hour, Monday to Saturday.
        distance_per_1000km: Log-mean increase per 1,000 km (relative to a short lane).
        weekend_hours: Extra median hours by dispatch weekday Monday..Sunday: parcels
            dispatched on Friday or Saturday sit in a depot over the weekend.
        congestion_effect: Log-mean increase per unit of congestion (peak-season backlog).
        congestion_sigma: Log-sd increase per unit of congestion (peak is also more erratic).
        weight_per_kg: Log-mean increase per kg of parcel weight (bulky goods are slower).
        weight_cap_kg: Weight beyond which it stops mattering.
        lost_congestion: Lost probability multiplier: × (1 + this × congestion).
        lost_exception_hours: A lost parcel raises its exception this long after its promise.
        lost_refund_days: A lost parcel is refunded (and the case closed) this long after its
            promise.
        extra_scan_base: Probability of a second hub scan on a short lane.
        extra_scan_long: Extra probability of a second hub scan on a lane over 600 km.
        exception_logit: (intercept, slope) of the exception probability in the ratio of
            realised transit to promised hours: ~3 % when well on time, 50 % at the promise,
            ~95 % at 1.5 times the promise.
    """

    level_price_sensitivity: tuple[float, float, float] = (0.5, 0.0, -0.6)
    express_amount: float = 150.0
    express_amount_bonus: float = 0.5
    nearest_warehouse_share: float = 0.8
    road_factor: float = 1.3
    local_km_median: float = 110.0
    local_km_sigma: float = 0.6
    long_distance_km: float = 900.0
    handling_hours_median: float = 9.0
    handling_sigma: float = 0.7
    handling_congestion: float = 1.5
    pickup_hour: float = 17.0
    distance_per_1000km: float = 0.30
    weekend_hours: tuple[float, ...] = (0.0, 0.0, 0.0, 6.0, 42.0, 30.0, 12.0)
    congestion_effect: float = 0.30
    congestion_sigma: float = 0.06
    weight_per_kg: float = 0.02
    weight_cap_kg: float = 20.0
    lost_congestion: float = 1.5
    lost_exception_hours: float = 36.0
    lost_refund_days: float = 7.0
    extra_scan_base: float = 0.2
    extra_scan_long: float = 0.4
    exception_logit: tuple[float, float] = (-7.0, 7.0)


@dataclass(frozen=True)
class ReturnParams:
    """Returns and refunds.

    Attributes:
        late_multiplier: Odds multiplier of a return when the parcel came late.
        late_reason_weight: Weight added to the late_delivery reason when late.
        damaged_return_prob: A damaged item is sent back with this probability.
        request_days_mean: Mean days from delivery to the return request.
        return_window_days: Requests come within this window after delivery.
        refund_days_median: Median days from request to refund.
        refund_sigma: Log-spread of the refund lag (a long tail of slow refunds).
        never_refunded_prob: Refunds that never happen (lost in the process).
        long_refund_days: A refund slower than this (or none) is a bad experience.
        give_up_days: A customer with no refund stops waiting after this many days.
    """

    late_multiplier: float = 1.6
    late_reason_weight: float = 2.5
    damaged_return_prob: float = 0.8
    request_days_mean: float = 4.0
    return_window_days: float = 30.0
    refund_days_median: float = 5.0
    refund_sigma: float = 0.75
    never_refunded_prob: float = 0.02
    long_refund_days: float = 14.0
    give_up_days: float = 30.0


@dataclass(frozen=True)
class ContactParams:
    """When customers get in touch and how the contact center handles them.

    Per-reason tuples follow `CONTACT_REASONS`; per-channel tuples follow `CONTACT_CHANNELS`.

    Attributes:
        status_logit: (intercept, slope in transit/promise ratio) of a "where is my order"
            contact: more likely the longer the parcel runs.
        delay_logit: (intercept, slope per day late) of a delivery_delay contact when late.
        missing_lost_prob: A lost parcel makes the customer report a missing item.
        missing_delivered_prob: An item missing from a delivered parcel.
        damaged_prob: A damaged item makes the customer call.
        refund_prob: (base, extra when the refund is slow or missing) of a return_refund
            contact for orders with a return.
        payment_prob: A late or unpaid invoice leads to a payment contact (after a reminder).
        dispute_prob: (base, extra for pay-later invoices) of a billing dispute.
        other_prob: Order-unrelated questions, once per order on average at this rate.
        complaint_logit: Intercept and weights (late, days late capped at 10, lost, damaged,
            slow refund, unresolved contacts on this order, unresolved contacts before,
            billing dispute) of a complaint: complaints follow bad experiences and bad service.
        renewal_prob: (first year, later years) probability of a renewal contact per
            membership invoice.
        membership_payment_prob: A late or unpaid membership invoice leads to a payment contact.
        channel_by_preferred: Channel weights (voice, chat, email) by preferred channel
            (email, sms, voice).
        channel_reason_shift: Log-weight shifts (voice, chat, email) per reason: complaints and
            disputes are phoned in, status questions chatted, refunds emailed.
        ai_share: Share handled by the AI agent per reason (chat and email): simple reasons
            (order status) mostly AI, complaints mostly human.
        ai_voice_factor: AI share multiplier on voice (the voice bot handles less).
        complexity: How hard each reason is (0-1): lowers AI resolution, lengthens handling.
        ai_transfer_base: Probability that an AI contact is transferred to a human, plus
            `ai_transfer_complexity` × complexity.
        ai_transfer_complexity: See above.
        human_transfer_mean: Mean Poisson transfers of human-handled contacts.
        resolve_logit: First-contact resolution logit per reason for a human.
        ai_resolve_penalty: AI resolution logit penalty × complexity.
        transfer_resolve_penalty: Resolution logit penalty per transfer.
        repeat_resolve_bonus: Repeat contacts are resolved more often (escalated).
        wait_median_human: Median wait seconds per channel for a human agent.
        wait_median_ai: Median wait seconds per channel for the AI agent.
        wait_sigma: Log-spread of waits.
        wait_congestion: Human waits grow × (1 + this × congestion) in peak season.
        handle_median_human: Median handling seconds per channel (human).
        handle_median_ai: Median handling seconds per channel (AI).
        handle_sigma: Log-spread of handling time.
        handle_per_transfer_s: Extra handling seconds per transfer.
        survey_prob: Share of contacts answering the survey (csat, ces, nps together).
        sat_weights: Weights of the latent satisfaction: (resolved, per transfer, log wait
            ratio, complexity, noise sd).
        repeat_prob: (first round, second round) probability that an unresolved contact is
            followed by a repeat contact on the same reason.
        repeat_days_mean: Mean days until the repeat contact.
        high_effort_ces: A customer effort score at or above this is "high effort".
    """

    status_logit: tuple[float, float] = (-3.0, 2.0)
    delay_logit: tuple[float, float] = (-1.0, 0.7)
    missing_lost_prob: float = 0.8
    missing_delivered_prob: float = 0.004
    damaged_prob: float = 0.6
    refund_prob: tuple[float, float] = (0.10, 0.55)
    payment_prob: float = 0.4
    dispute_prob: tuple[float, float] = (0.004, 0.03)
    other_prob: float = 0.05
    complaint_logit: tuple[float, ...] = (-4.6, 1.0, 0.25, 2.0, 1.4, 1.2, 0.9, 0.35, 1.0)
    renewal_prob: tuple[float, float] = (0.04, 0.22)
    membership_payment_prob: float = 0.3
    channel_by_preferred: tuple[tuple[float, float, float], ...] = (
        (0.15, 0.35, 0.50),
        (0.20, 0.55, 0.25),
        (0.60, 0.25, 0.15),
    )
    channel_reason_shift: tuple[tuple[float, float, float], ...] = (
        (0.0, 0.5, 0.0),
        (0.2, 0.2, 0.0),
        (0.5, 0.0, 0.0),
        (0.2, 0.0, 0.3),
        (0.0, 0.0, 0.3),
        (0.7, 0.0, 0.0),
        (0.0, 0.0, 0.2),
        (0.8, 0.0, 0.0),
        (0.0, 0.0, 0.5),
        (0.0, 0.2, 0.2),
    )
    ai_share: tuple[float, ...] = (0.75, 0.55, 0.35, 0.35, 0.50, 0.15, 0.55, 0.10, 0.45, 0.45)
    ai_voice_factor: float = 0.6
    complexity: tuple[float, ...] = (0.1, 0.35, 0.6, 0.5, 0.45, 0.85, 0.3, 0.9, 0.2, 0.3)
    ai_transfer_base: float = 0.05
    ai_transfer_complexity: float = 0.5
    human_transfer_mean: float = 0.08
    resolve_logit: tuple[float, ...] = (1.9, 1.0, 0.3, 0.6, 0.6, 0.0, 1.3, -0.1, 1.6, 1.3)
    ai_resolve_penalty: float = 1.5
    transfer_resolve_penalty: float = 0.6
    repeat_resolve_bonus: float = 0.5
    wait_median_human: tuple[float, float, float] = (150.0, 45.0, 3 * 3600.0)
    wait_median_ai: tuple[float, float, float] = (20.0, 3.0, 60.0)
    wait_sigma: float = 0.8
    wait_congestion: float = 2.0
    handle_median_human: tuple[float, float, float] = (420.0, 540.0, 360.0)
    handle_median_ai: tuple[float, float, float] = (180.0, 240.0, 30.0)
    handle_sigma: float = 0.5
    handle_per_transfer_s: float = 150.0
    survey_prob: float = 0.4
    sat_weights: tuple[float, float, float, float, float] = (1.3, -0.45, -0.35, -0.5, 0.8)
    repeat_prob: tuple[float, float] = (0.5, 0.3)
    repeat_days_mean: float = 2.5
    high_effort_ces: int = 5


@dataclass(frozen=True)
class InvoiceParams:
    """Pay-later and membership invoices.

    Attributes:
        due_days: Payment term.
        late_logit: Logit of paying late at average payment reliability.
        unpaid_logit: Logit of never paying at average payment reliability.
        reliability_weight: Logit change per unit of (low) payment reliability.
        late_days_mean: Mean days after the due date a late payer pays.
        membership_late_prob: Membership invoices paid late.
        membership_unpaid_prob: Membership invoices never paid (silent cancellation).
    """

    due_days: float = 14.0
    late_logit: float = -2.2
    unpaid_logit: float = -4.0
    reliability_weight: float = 0.8
    late_days_mean: float = 10.0
    membership_late_prob: float = 0.06
    membership_unpaid_prob: float = 0.03


@dataclass(frozen=True)
class ChurnParams:
    """How the experience of an order moves the probability of never ordering again.

    q_k = sigmoid(churn_base_i + tenure × ln(k) + Σ weight × experience_k).

    Attributes:
        late: A late (or lost) delivery.
        days_late: Per day late, capped at `days_late_cap`.
        days_late_cap: Lateness beyond this adds nothing more.
        lost: A lost parcel.
        damaged: A damaged item.
        returned: Any item returned (mild: returns are normal).
        long_refund: A refund slower than `ReturnParams.long_refund_days` or missing.
        unresolved: Any contact on the order not resolved at first contact.
        high_effort: Any contact with a customer effort score at or above the threshold.
        complaint: A complaint on the order.
        billing_dispute: A billing dispute on the order.
        tenure: Per log order count: habits form, later orders churn less.
    """

    late: float = 0.35
    days_late: float = 0.10
    days_late_cap: float = 10.0
    lost: float = 1.0
    damaged: float = 0.6
    returned: float = 0.15
    long_refund: float = 0.7
    unresolved: float = 0.8
    high_effort: float = 0.4
    complaint: float = 0.9
    billing_dispute: float = 0.7
    tenure: float = -0.3


OFFER_ACTIONS_PER_CATEGORY = (("recommendation", 0.0), ("discount", 0.10), ("discount", 0.20))


@dataclass(frozen=True)
class OfferParams:
    """Offer exposure, the logging policy and true acceptance.

    Attributes:
        views_base: Mean tracking-page views of a parcel that is on time.
        views_late: Extra mean views of a parcel that is (or ends up) late: anxious customers
            refresh the tracking page.
        lost_view_days: A lost parcel's page is watched until this long after the promise.
        outreach_prob: Monthly probability that an eligible customer is sent an outreach offer.
        outreach_min_days: Eligible when the last order is at least this many days ago.
        outreach_hour: UTC hour of the monthly outreach run (spread over `outreach_spread_h`).
        outreach_spread_h: Hours over which the run sends.
        control_share: Share of decisions where the policy shows nothing (control arm).
        temperature: Softmax temperature of the logging policy (exploration).
        score_top: Score of the customer's most-ordered category.
        score_popularity: Score per log popularity of a category.
        score_action: Score of (recommendation, 10 %, 20 %) on the tracking page and in
            outreach: the page favours plain recommendations, win-back mail discounts.
        window_days: An offer is accepted if the category is bought within this window.
        anyway_scale: Multiplier of the order rate × affinity hazard of buying the category
            anyway (a category purchase is more likely than a full order of that category).
        anyway_loyalty: Log-hazard gain per unit of loyalty.
        inc_base: Intercept of the incremental acceptance logit.
        inc_affinity: Incremental logit per unit of affinity with the category.
        inc_discount: Incremental logit per unit of discount × price sensitivity.
        inc_late: Incremental logit penalty while the tracked parcel is late (bad mood).
        inc_returned: Incremental logit penalty when the customer returned this category.
    """

    views_base: float = 0.8
    views_late: float = 1.5
    lost_view_days: float = 5.0
    outreach_prob: float = 0.3
    outreach_min_days: float = 45.0
    outreach_hour: float = 8.0
    outreach_spread_h: float = 4.0
    control_share: float = 0.10
    temperature: float = 1.0
    score_top: float = 1.8
    score_popularity: float = 1.0
    score_action: tuple[tuple[float, float, float], tuple[float, float, float]] = (
        (0.4, 0.0, -0.6),
        (-0.3, 0.3, 0.2),
    )
    window_days: float = 7.0
    anyway_scale: float = 2.5
    anyway_loyalty: float = 0.3
    inc_base: float = -3.6
    inc_affinity: float = 3.0
    inc_discount: float = 5.0
    inc_late: float = 0.9
    inc_returned: float = 2.2


@dataclass(frozen=True)
class OutreachParams:
    """Proactive outreach: when each action is eligible, the exploring logging policy with its
    holdouts, and the true, heterogeneous effect of each action.

    Every action shifts the customer's churn logit by −gain (see `outreach.retention_gain`):
    the pending churn decision of the order if it is sent before the order's experience
    resolved, else the probability that a customer who has not ordered since is still alive.
    Gains are multiplied by the customer's movability sigmoid((lost_cause_logit − churn
    base) / lost_cause_width), so lost causes are moved by nothing, and clipped to
    ±`max_gain`. Per-action tuples follow `OUTREACH_ACTIONS`.

    Attributes:
        enabled: Log outreach at all; off, every other table is byte-identical to a run of
            the simulator without outreach and `outreach` is empty.
        holdout_share: Share of each action's chosen customers held out (logged, not sent).
        policy_score: Logging-policy score per action; the policy draws one eligible action
            or nothing with softmax(score) probabilities, nothing scoring `none_score`.
        none_score: Score of sending nothing (exploration: every eligible action keeps a
            sizeable probability).
        high_value_amount: Orders above this amount add `high_value_score` to every action's
            score (the policy cares more about large orders; observable, so propensities
            stay exact).
        high_value_score: See above.
        delay_notice_hours: A delay notice goes out this long after the carrier's exception
            scan, while the parcel is still open.
        recovery_hours: A service-recovery call follows the end of the first unresolved
            contact (or the lost parcel's exception) after this many hours.
        satisfaction_days: A satisfaction check follows delivery after this many days.
        onboarding_days: An onboarding follow-up follows the first order's delivery (or its
            promise, if lost) after this many days.
        survey_hours: An NPS survey follows the end of a resolved contact after this long.
        reminder_days: A payment reminder goes out this long after an invoice's due date if
            it is unpaid by then.
        renewal_reminder_days: A renewal reminder about a membership renewal invoice goes
            out this long before its due date (not before it is issued) if it is unpaid then
            and the customer has not ordered since their last experience resolved.
        winback_min_days: A customer whose experience resolved this long ago without a new
            order is eligible for the next monthly win-back run.
        winback_hour: UTC hour of the monthly win-back run (spread over `winback_spread_h`).
        winback_spread_h: Hours over which the run sends.
        lost_cause_logit: Churn base logit at which movability is one half.
        lost_cause_width: Logit width of the movability transition.
        max_gain: Bound on |gain| (logit units).
        delay_sensitivity_shape: Gamma shape of the latent delay sensitivity (mean 1), drawn
            from the outreach stream: how much a delay notice means to a customer.
        delay_gain: (base, per unit of delay sensitivity) gain of a notice on a parcel that
            ends up late.
        delay_value: Extra gain per log of the order amount over 60 (high value cares more).
        delay_on_time_gain: Gain of a notice on a parcel that ends up on time.
        recovery_gain: (unresolved contact or lost parcel, complaint on the order) gain of a
            recovery call.
        winback_gain: (intercept, per unit of price sensitivity) gain of a win-back offer.
        satisfied_harm: Harm (negative gain) of a win-back offer to a satisfied, loyal
            customer; surveys and checks harm them by `survey_harm`.
        survey_harm: Harm of an NPS survey or satisfaction check to a satisfied loyal customer.
            "Satisfied loyal" = sigmoid(2·(loyalty − `loyal_center`)) when nothing went wrong
            with the order (late, lost, damaged, unresolved contact, complaint), else 0.
        satisfaction_gain: Gain of a satisfaction check after a bad experience (late, damaged,
            unresolved contact).
        onboarding_gain: (intercept, per unit of loyalty) gain of an onboarding follow-up.
        reminder_gain: Gain (here a mild harm) of a payment reminder.
        loyal_center: Loyalty at which a customer is half "loyal" (sigmoid(2·(loyalty − this)))
            for the satisfied-loyal harm.
        status_reduction: A sent delay notice cuts the probability of a "where is my order"
            contact on that parcel that would come after it by this share × √(delay
            sensitivity), at most 90 %.
        reminder_speedup: A sent payment reminder to a late payer shortens the remaining days
            to pay by this share × sigmoid(payment reliability); never-payers do not move.
    """

    enabled: bool = True
    holdout_share: float = 0.10
    policy_score: tuple[float, ...] = (0.8, 1.2, 0.0, 1.0, -0.2, 0.0, 0.6, -0.4)
    none_score: float = 0.0
    high_value_amount: float = 120.0
    high_value_score: float = 0.5
    delay_notice_hours: float = 1.0
    recovery_hours: float = 4.0
    satisfaction_days: float = 1.0
    onboarding_days: float = 2.0
    survey_hours: float = 2.0
    reminder_days: float = 1.0
    renewal_reminder_days: float = 7.0
    winback_min_days: float = 60.0
    winback_hour: float = 9.0
    winback_spread_h: float = 4.0
    lost_cause_logit: float = -0.8
    lost_cause_width: float = 0.15
    max_gain: float = 1.5
    delay_sensitivity_shape: float = 2.0
    delay_gain: tuple[float, float] = (0.15, 0.45)
    delay_value: float = 0.15
    delay_on_time_gain: float = 0.05
    recovery_gain: tuple[float, float] = (0.9, 0.4)
    winback_gain: tuple[float, float] = (-0.2, 0.8)
    satisfied_harm: float = 0.7
    survey_harm: float = 0.3
    satisfaction_gain: float = 0.4
    onboarding_gain: tuple[float, float] = (0.45, -0.2)
    reminder_gain: float = -0.1
    loyal_center: float = 0.5
    status_reduction: float = 0.6
    reminder_speedup: float = 0.6


@dataclass(frozen=True)
class CarrierSlowdown:
    """A shock: from `start`, a carrier's service degrades (a strike, a lost contract, a
    depot closed), so that a delay model trained before it ranks its parcels too kindly.

    Attributes:
        carrier: The carrier's name (`Carrier.name`).
        start: First dispatch day the slowdown applies to.
        factor: Multiplier on its median transit hours.
        sigma_add: Added to the spread of its log transit hours.
    """

    carrier: str
    start: date
    factor: float = 1.6
    sigma_add: float = 0.1


@dataclass(frozen=True)
class RegionOpening:
    """A shock: from `start`, the shop opens a region it did not serve, so that a delay model
    trained before it meets lanes it has never seen (and a churn model customers it has not).

    A share of the customers who sign up from `start` on live there instead of in the region
    they were drawn in; they speak its language (those who use English anywhere keep it) and
    pay as its customers do. Its parcels travel its long lanes from the warehouses, with a
    young partner network's slower, more erratic last leg.

    Attributes:
        region: The region's code: one of `OPENABLE_REGIONS`, or a region of the parameter set
            with weight 0.
        start: First signup day that can live there.
        share: Share of the customers signing up from `start` who live there.
        factor: Multiplier on the median transit hours of its parcels.
        sigma_add: Added to the spread of their log transit hours.
    """

    region: str
    start: date
    share: float = 0.15
    factor: float = 1.3
    sigma_add: float = 0.15


@dataclass(frozen=True)
class PriceChange:
    """A shock: from `start`, the items the shop offers cost `factor` times their usual price
    (a price rise above 1, a price cut below), so that offer acceptance moves away from what
    an offer model learned before it.

    Customers judge an offer by its price against the price they knew: the offered price is
    factor × (1 − discount) of it, and the acceptance logit counts the effective discount
    1 − factor × (1 − discount) where it counted the discount. Revenue is the moved price.
    Orders keep their prices, and buying a category anyway does not move.

    Attributes:
        start: First day whose offers carry the new prices.
        factor: Multiplier on the offered items' prices.
    """

    start: date
    factor: float


Shock = CarrierSlowdown | RegionOpening | PriceChange


@dataclass(frozen=True)
class SimulatorParams:
    """The complete parameter set; `DEFAULT_PARAMS` is the embedded default business."""

    regions: tuple[Region, ...] = REGIONS
    warehouses: tuple[Warehouse, ...] = WAREHOUSES
    carriers: tuple[Carrier, ...] = CARRIERS
    service_levels: tuple[ServiceLevel, ...] = SERVICE_LEVELS
    categories: tuple[Category, ...] = CATEGORIES
    catalog: CatalogParams = field(default_factory=CatalogParams)
    seasonality: SeasonalityParams = field(default_factory=SeasonalityParams)
    customers: CustomerParams = field(default_factory=CustomerParams)
    orders: OrderParams = field(default_factory=OrderParams)
    shipping: ShippingParams = field(default_factory=ShippingParams)
    returns: ReturnParams = field(default_factory=ReturnParams)
    contacts: ContactParams = field(default_factory=ContactParams)
    invoices: InvoiceParams = field(default_factory=InvoiceParams)
    churn: ChurnParams = field(default_factory=ChurnParams)
    offers: OfferParams = field(default_factory=OfferParams)
    outreach: OutreachParams = field(default_factory=OutreachParams)
    # Regime changes from a date (`CarrierSlowdown`, `RegionOpening`, `PriceChange`); none in
    # the default business.
    shocks: tuple[Shock, ...] = ()
    chunk_customers: int = CHUNK_CUSTOMERS

    @property
    def category_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.categories)


DEFAULT_PARAMS = SimulatorParams()

__all__ = [
    "CONTACT_CHANNELS",
    "CONTACT_REASONS",
    "DEFAULT_PARAMS",
    "OPENABLE_REGIONS",
    "PAYMENT_METHODS",
    "RETURN_REASONS",
    "OutreachParams",
    "SimulatorParams",
]
