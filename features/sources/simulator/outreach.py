"""Proactive outreach: eligible moments, the exploring logging policy with holdouts, and the
true, heterogeneous effect of every action on churn (plus two second outcomes).

Every order opens two outreach moments, both about the same order's churn decision:

- in transit: a delay notice, when the carrier's exception scan says an open parcel will be
  late (sent `delay_notice_hours` after the scan, before delivery);
- after the experience: one of service-recovery call (unresolved contact or lost parcel),
  satisfaction check (after delivery), onboarding follow-up (first order), NPS survey (after a
  resolved contact) and payment reminder (invoice unpaid at its due date), each at its own
  send time; a moment that comes after the customer's next order lapses.

After the experience resolved, a customer who has not ordered again `winback_min_days` later
is eligible for the next monthly win-back run (marketing consent).

A member's renewal invoice (every yearly membership invoice but the first) opens a renewal
reminder moment `renewal_reminder_days` before its due date (not before it is issued), about
that invoice, if it is unpaid then and the customer has not ordered since their last
experience resolved; a reminder that would fall while an order is still open (between the
order and its resolution) is not sent: that order's own moments speak to the customer then.
Membership invoices are otherwise drawn independently of the journeys, so they are drawn
before them (`memberships.membership_invoices`, their own stream): whether an invoice is
unpaid at the send is then known, a sent reminder can move its payment, and the reminder acts
through the same revival/loss mechanism as the win-back offer, applied within the decision's
iteration in time order (reminders before the win-back run, the run, reminders after it), so
no later decision has to be redrawn. Its choices, holdouts and responses come from a stream
spawned from the outreach stream, so the other actions' draws are not shifted; they change only
where a reminder revived or lost a customer (their later orders differ).

Policy. At each moment the policy draws one eligible action, or nothing, with softmax
probabilities π of observable scores (`OutreachParams.policy_score`, a bonus for large
orders). A chosen action is then held out with probability h (`holdout_share`) independently
of everything else: logged with `holdout` true and not sent. `propensity` is the probability of
the logged row's whole choice: π·(1 − h) for a sent row, π·h for a held-out one. Moments where
nothing was chosen are not logged.

Effect. An action with retention gain g (`retention_gain`, logit units, heterogeneous) sent at
s acts on the order's churn decision: if s is not after the order's experience resolved (r),
the pending churn probability becomes q' = sigmoid(logit q − g); otherwise the probability
that the customer, who has not ordered since r, is still alive, a (the posterior of `truth`),
becomes a' = sigmoid(logit a + g): a churned customer is revived with probability (a' − a)/(1 −
a) when g > 0, an alive one lost with probability (a − a')/a when g < 0. Either way the true
effect on the probability of an order within 90 days of s is (p_churn − sigmoid(logit p_churn −
g))·(1 − exp(−λ·Λ(c, s + 90))), with p_churn = q or 1 − a without this row's action and c = r or
s the instant the order clock restarts. Held-out rows record the effect they would have had.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit

from features.contract.schema import OUTREACH_ACTIONS
from features.sources.simulator.contacts import ContactBatch
from features.sources.simulator.params import SimulatorParams
from features.sources.simulator.population import Population
from features.sources.simulator.truth import WINDOW_DAYS
from features.sources.simulator.world import World

ACTION = {name: i for i, name in enumerate(OUTREACH_ACTIONS)}
# Outreach channels, indices into the contract's OUTREACH_CHANNELS (email, sms, voice).
EMAIL, SMS, VOICE = 0, 1, 2
# What a row's subject_id names.
SUBJECT_NONE, SUBJECT_SHIPMENT, SUBJECT_CONTACT, SUBJECT_INVOICE, SUBJECT_ORDER = range(-1, 4)
# A membership invoice, by position among the chunk's membership invoices (the writer turns it
# into an invoice).
SUBJECT_MEMBERSHIP = 4
# Actions competing in the after-experience moment, in a fixed order.
_AFTER = (
    "service_recovery_call",
    "satisfaction_check",
    "onboarding_followup",
    "nps_survey",
    "payment_reminder",
)
HOUR = 1.0 / 24.0
# Probabilities are kept away from 0 and 1 before taking logits.
_EPS = 1e-12


def movability(churn_base: np.ndarray, params: SimulatorParams) -> np.ndarray:
    """How much outreach can move a customer: about 1, falling to 0 for lost causes."""
    op = params.outreach
    return expit((op.lost_cause_logit - np.asarray(churn_base)) / op.lost_cause_width)


def retention_gain(
    action: np.ndarray,
    churn_base: np.ndarray,
    loyalty: np.ndarray,
    price_sensitivity: np.ndarray,
    delay_sensitivity: np.ndarray,
    amount: np.ndarray,
    late: np.ndarray,
    lost: np.ndarray,
    damaged: np.ndarray,
    unresolved: np.ndarray,
    complaint: np.ndarray,
    params: SimulatorParams,
) -> np.ndarray:
    """The true retention gain of an action: the decrease of the churn logit it causes.

    Args:
        action: Action index (into `OUTREACH_ACTIONS`) per row.
        churn_base: Latent base churn logit (lost causes are not moved).
        loyalty: Latent loyalty.
        price_sensitivity: Latent price sensitivity (win-back offers work on bargain hunters).
        delay_sensitivity: Latent delay sensitivity (the outreach stream's own trait).
        amount: Amount of the order the outreach is about.
        late: The order's parcel was (or will be) late.
        lost: The parcel was lost.
        damaged: An item arrived damaged.
        unresolved: A contact on the order was not resolved at first contact.
        complaint: The customer complained about the order.
        params: Parameters the data were simulated with.

    Returns:
        Gains in logit units, within ±`max_gain`; positive helps, negative harms.
    """
    op = params.outreach
    action = np.asarray(action)
    late, lost = np.asarray(late, bool), np.asarray(lost, bool)
    unresolved, complaint = np.asarray(unresolved, bool), np.asarray(complaint, bool)
    bad = late | lost | np.asarray(damaged, bool) | unresolved | complaint
    loyal = expit(2.0 * (np.asarray(loyalty) - op.loyal_center))
    satisfied_loyal = loyal * ~bad
    value = np.maximum(np.log(np.maximum(np.asarray(amount, float), 1e-9) / 60.0), 0.0)
    base, per_sensitivity = op.delay_gain
    on_problem, on_complaint = op.recovery_gain
    winback_base, winback_price = op.winback_gain
    onboarding_base, onboarding_loyalty = op.onboarding_gain
    by_action = {
        "delay_notice": np.where(
            late,
            base + per_sensitivity * np.asarray(delay_sensitivity) + op.delay_value * value,
            op.delay_on_time_gain,
        ),
        "service_recovery_call": on_problem * (unresolved | lost) + on_complaint * complaint,
        "winback_offer": winback_base
        + winback_price * np.asarray(price_sensitivity)
        - op.satisfied_harm * satisfied_loyal,
        "payment_reminder": np.full(np.shape(bad), op.reminder_gain),
        "satisfaction_check": op.satisfaction_gain * bad - op.survey_harm * satisfied_loyal,
        "renewal_reminder": 0.3 * (1.0 - loyal),
        "onboarding_followup": onboarding_base + onboarding_loyalty * np.asarray(loyalty),
        "nps_survey": 0.1 * bad - op.survey_harm * satisfied_loyal,
    }
    gain = np.zeros(np.broadcast_shapes(action.shape, np.shape(bad)))
    for name, values in by_action.items():
        gain = np.where(action == ACTION[name], values, gain)
    return np.clip(movability(churn_base, params) * gain, -op.max_gain, op.max_gain)


def repurchase_effect(
    p_churn_untreated: np.ndarray, gain: np.ndarray, window: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(p treated, p untreated) of an order within the 90 days after the send.

    Args:
        p_churn_untreated: Probability that the customer churns (pending decision) or has
            churned (posterior) without this row's action.
        gain: The action's retention gain.
        window: 1 − exp(−λ·Λ(c, s + 90)): probability that an alive customer orders in time.
    """
    p_churn = np.clip(p_churn_untreated, _EPS, 1.0 - _EPS)
    treated = 1.0 - expit(logit(p_churn) - gain)
    return treated * window, (1.0 - p_churn) * window


@dataclass
class Notices:
    """Delay notices of one iteration's orders (one entry per order).

    Attributes:
        sent: A notice actually went out (chosen and not held out).
        t: When it went (or would have gone) out; NaN when no notice was chosen.
        reduction: Share by which a sent notice cuts the probability of a "where is my
            order" contact that would come after it.
    """

    sent: np.ndarray
    t: np.ndarray
    reduction: np.ndarray


class Outreach:
    """One chunk's outreach: its own random stream, the policy's choices and the log.

    The journey loop calls `delay_notices` before an iteration's contacts are drawn,
    `after_experience` once its churn logits are known (it returns the realised churn
    probabilities) and `after_decision` once churn and next orders are drawn.
    """

    def __init__(self, rng: np.random.Generator, world: World, pop: Population) -> None:
        self.rng = rng
        self.world = world
        self.pop = pop
        op = world.params.outreach
        self.delay_sensitivity = rng.gamma(
            op.delay_sensitivity_shape, 1.0 / op.delay_sensitivity_shape, pop.size
        )
        consent = pop.consent
        preferred_message = (
            np.isin(pop.preferred, (EMAIL, SMS))
            & consent[np.arange(pop.size), np.minimum(pop.preferred, SMS)]
        )
        # Messages go to the preferred channel if it is email or SMS and consented, else to
        # email, else to SMS; calls only by voice.
        self.message_channel = np.where(
            preferred_message,
            pop.preferred,
            np.where(consent[:, EMAIL], EMAIL, np.where(consent[:, SMS], SMS, -1)),
        )
        # Renewal reminders draw from their own stream, so that the other actions' draws are
        # those of a simulation without them (spawning does not advance `rng`).
        self.renewal_rng = rng.spawn(1)[0]
        self.memberships: dict[str, np.ndarray] = {}
        self.renewal_t = np.zeros(0)
        self.first_membership = np.zeros(pop.size, dtype=np.int64)
        self.membership_count = np.zeros(pop.size, dtype=np.int64)
        self.rows: dict[str, list[np.ndarray]] = {}
        self.resets: dict[str, list[np.ndarray]] = {}
        self.contact_offset = 0
        self.invoice_offset = 0
        # What one iteration's moments hand on to the next call: the chosen delay notices
        # (to `after_experience`) and the after-experience choices sent after r (to
        # `after_decision`).
        self._pending: dict[str, np.ndarray] = {}
        self._post: dict = {}

    # --- the policy ---------------------------------------------------------------------------

    def _choose(
        self,
        eligible: np.ndarray,
        actions: tuple[str, ...],
        amount: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw one eligible action or nothing per row; then the holdout.

        Args:
            eligible: (rows, len(actions)) eligibility.
            actions: The competing actions.
            amount: The order amount (large orders raise every action's score).
            rng: The stream to draw from; default the outreach stream.

        Returns:
            Position of the chosen action in `actions` (-1 for nothing), its probability π,
            and whether it is held out.
        """
        op = self.world.params.outreach
        rows = eligible.shape[0]
        score = (
            np.array([op.policy_score[ACTION[a]] for a in actions])[None, :]
            + (op.high_value_score * (amount > op.high_value_amount))[:, None]
        )
        weight = np.where(eligible, np.exp(score - op.none_score), 0.0)
        total = 1.0 + weight.sum(axis=1)
        prob = weight / total[:, None]
        rng = self.rng if rng is None else rng
        u = rng.random(rows)
        cum = np.cumsum(prob, axis=1)
        chosen = np.where(u < cum[:, -1], (cum < u[:, None]).sum(axis=1), -1)
        chosen = np.where(eligible.any(axis=1), chosen, -1)
        pi = np.where(chosen >= 0, prob[np.arange(rows), np.maximum(chosen, 0)], np.nan)
        holdout = rng.random(rows) < op.holdout_share
        return chosen, pi, holdout

    def _log(self, **columns: np.ndarray) -> None:
        for name, values in columns.items():
            self.rows.setdefault(name, []).append(np.asarray(values))

    def _window(self, start: np.ndarray, send: np.ndarray, lam: np.ndarray) -> np.ndarray:
        tl = self.world.timeline
        span = tl.season_clock(send + WINDOW_DAYS) - tl.season_clock(start)
        return -np.expm1(-lam * np.maximum(span, 0.0))

    # --- the moments --------------------------------------------------------------------------

    def delay_notices(
        self,
        cust: np.ndarray,
        g: np.ndarray,
        amount: np.ndarray,
        ship: dict[str, np.ndarray],
    ) -> Notices:
        """Choose delay notices for parcels whose exception scan comes before delivery."""
        op = self.world.params.outreach
        horizon = self.world.timeline.days
        scans = ship["events"]
        exception_t = scans[:, 3]
        send_t = exception_t + op.delay_notice_hours * HOUR
        open_at_send = ~(ship["delivered"] <= send_t)
        channel = self.message_channel[cust]
        eligible = ~np.isnan(exception_t) & open_at_send & (send_t < horizon) & (channel >= 0)
        chosen, pi, holdout = self._choose(eligible[:, None], ("delay_notice",), amount)
        picked = chosen >= 0
        sent = picked & ~holdout
        reduction = np.minimum(op.status_reduction * np.sqrt(self.delay_sensitivity[cust]), 0.9)
        self._pending = {
            "picked": picked,
            "sent": sent,
            "t": np.where(picked, send_t, np.nan),
            "pi": pi,
            "holdout": holdout,
            "channel": channel,
            "reduction": reduction,
            "g": g,
        }
        return Notices(sent=sent, t=np.where(picked, send_t, np.nan), reduction=reduction)

    def after_experience(
        self,
        cust: np.ndarray,
        g: np.ndarray,
        k: int,
        amount: np.ndarray,
        ship: dict[str, np.ndarray],
        damaged: np.ndarray,
        contacts: ContactBatch,
        con_agg: dict[str, np.ndarray],
        invoices: dict[str, np.ndarray],
        invoice_order: np.ndarray,
        r: np.ndarray,
        churn_logit: np.ndarray,
    ) -> np.ndarray:
        """Choose the after-experience action, log pending effects, return realised q.

        Args:
            cust: Customer per order of this iteration.
            g: Journey number per order.
            k: Order number of the customers.
            amount: Order amounts.
            ship: The orders' shipments.
            damaged: An item of the order arrived damaged.
            contacts: This iteration's contacts (`order` in journey numbering, -1 unrelated).
            con_agg: Contact aggregates per order (unresolved count, complaint, status
                probability and time).
            invoices: This iteration's invoices; paid times of reminded late payers move.
            invoice_order: Position (within the iteration) of each invoice's order.
            r: When each order's experience resolved.
            churn_logit: The churn logit without outreach.

        Returns:
            The churn probability after pending outreach, per order.
        """
        p = self.world.params
        op = p.outreach
        horizon = self.world.timeline.days
        m = cust.size
        lam = self.pop.order_rate[cust]
        lost = ship["lost"]
        late = ship["late"]
        unresolved = con_agg["unresolved_count"] > 0
        complaint = con_agg["complaint"]
        pop = self.pop

        # Contacts of the order, first unresolved and first resolved (positions in batch).
        local = np.where(contacts.order >= 0, contacts.order - g[0], -1) if m else contacts.order
        related = local >= 0
        end = contacts.end
        first_unresolved = _first_by(local, end, related & ~contacts.resolved, m)
        first_resolved = _first_by(local, end, related & contacts.resolved, m)

        # Send times and subjects of each competing action (NaN: not eligible).
        nan = np.full(m, np.nan)
        recovery_contact_t = _at(end, first_unresolved)
        recovery_lost_t = np.where(
            lost, ship["promised"] + p.shipping.lost_exception_hours * HOUR, np.nan
        )
        by_contact = ~np.isnan(recovery_contact_t) & ~(recovery_lost_t < recovery_contact_t)
        recovery_t = np.where(by_contact, recovery_contact_t, recovery_lost_t)
        recovery_t = recovery_t + op.recovery_hours * HOUR
        satisfaction_t = np.where(lost, nan, ship["delivered"] + op.satisfaction_days)
        settled = np.where(lost, ship["promised"], ship["delivered"])
        onboarding_t = settled + op.onboarding_days if k == 0 else nan
        survey_t = _at(end, first_resolved) + op.survey_hours * HOUR
        reminder_t = nan.copy()
        reminder_invoice = np.full(m, -1)
        due_send = invoices["due"] + op.reminder_days
        unpaid_then = ~(invoices["paid"] <= due_send)
        reminder_t[invoice_order[unpaid_then]] = due_send[unpaid_then]
        reminder_invoice[invoice_order[unpaid_then]] = np.flatnonzero(unpaid_then)
        times = np.column_stack([recovery_t, satisfaction_t, onboarding_t, survey_t, reminder_t])
        message = self.message_channel[cust]
        voice = np.where(pop.consent[cust, VOICE], VOICE, -1)
        channels = np.column_stack([voice, message, message, message, message])
        eligible = ~np.isnan(times) & (times < horizon) & (channels >= 0)
        chosen, pi, holdout = self._choose(eligible, _AFTER, amount)
        picked = chosen >= 0
        pick = np.maximum(chosen, 0)
        rows = np.arange(m)
        send_t = np.where(picked, times[rows, pick], np.nan)
        action = np.where(picked, np.array([ACTION[a] for a in _AFTER])[pick], -1)
        channel = channels[rows, pick]
        subject_kind = np.select(
            [
                action == ACTION["service_recovery_call"],
                action == ACTION["satisfaction_check"],
                action == ACTION["onboarding_followup"],
                action == ACTION["nps_survey"],
                action == ACTION["payment_reminder"],
            ],
            [
                np.where(by_contact, SUBJECT_CONTACT, SUBJECT_SHIPMENT),
                SUBJECT_SHIPMENT,
                SUBJECT_ORDER,
                SUBJECT_CONTACT,
                SUBJECT_INVOICE,
            ],
            SUBJECT_NONE,
        )
        subject = np.select(
            [
                subject_kind == SUBJECT_CONTACT,
                subject_kind == SUBJECT_INVOICE,
                (subject_kind == SUBJECT_SHIPMENT) | (subject_kind == SUBJECT_ORDER),
            ],
            [
                self.contact_offset
                + np.where(action == ACTION["nps_survey"], first_resolved, first_unresolved),
                self.invoice_offset + reminder_invoice,
                g,
            ],
            -1,
        )
        sent = picked & ~holdout

        def gain_of(action_index: np.ndarray) -> np.ndarray:
            return retention_gain(
                action_index,
                pop.churn_base[cust],
                pop.loyalty[cust],
                pop.price_sensitivity[cust],
                self.delay_sensitivity[cust],
                amount,
                late,
                lost,
                damaged,
                unresolved,
                complaint,
                p,
            )

        notice = self._pending
        notice_gain = gain_of(np.full(m, ACTION["delay_notice"]))
        slot_gain = gain_of(np.maximum(action, 0))
        pending = picked & (send_t <= r)
        slot_shift = np.where(pending & sent, slot_gain, 0.0)
        notice_shift = np.where(notice["sent"], notice_gain, 0.0)
        q = expit(churn_logit - notice_shift - slot_shift)

        # Delay notices act on the pending decision (they go out before delivery).
        n = np.flatnonzero(notice["picked"])
        p_status = con_agg["status_p"][n]
        status_effect = np.where(
            con_agg["status_t"][n] > notice["t"][n], -notice["reduction"][n] * p_status, 0.0
        )
        self._log_pending(
            n,
            cust,
            ACTION["delay_notice"],
            notice["t"],
            notice["channel"],
            SUBJECT_SHIPMENT,
            g,
            notice["pi"],
            notice["holdout"],
            notice_gain,
            expit(churn_logit - slot_shift),
            r,
            lam,
            status_effect,
            np.full(n.size, np.nan),
        )

        # Payment reminders to late payers shorten the remaining days to pay (applied when
        # the reminder goes out: now if pending, after the lapse check otherwise).
        speedup = op.reminder_speedup * expit(pop.payment_reliability[cust])
        reminded = np.flatnonzero(picked & (action == ACTION["payment_reminder"]))
        left = invoices["paid"][reminder_invoice[reminded]] - send_t[reminded]
        days_to_pay = nan.copy()
        days_to_pay[reminded] = -speedup[reminded] * left
        _speed_up_payments(
            invoices, reminder_invoice, days_to_pay, reminded[pending[reminded]], sent
        )

        s = np.flatnonzero(pending)
        self._log_pending(
            s,
            cust,
            action,
            send_t,
            channel,
            subject_kind,
            subject,
            pi,
            holdout,
            slot_gain,
            expit(churn_logit - notice_shift),
            r,
            lam,
            np.full(s.size, np.nan),
            days_to_pay[s],
        )
        later = picked & ~pending
        self._post = {
            "index": np.flatnonzero(later),
            "action": action,
            "t": send_t,
            "channel": channel,
            "subject_kind": subject_kind,
            "subject": subject,
            "pi": pi,
            "holdout": holdout,
            "gain": slot_gain,
            "days_to_pay": days_to_pay,
            "amount": amount,
            "experience": (late, lost, damaged, unresolved, complaint),
            "invoices": invoices,
            "reminder_invoice": reminder_invoice,
            "sent": sent,
        }
        self.contact_offset += contacts.size
        self.invoice_offset += invoices["order"].size
        return q

    def _log_pending(
        self,
        index: np.ndarray,
        cust: np.ndarray,
        action: np.ndarray | int,
        t: np.ndarray,
        channel: np.ndarray,
        subject_kind: np.ndarray | int,
        subject: np.ndarray,
        pi: np.ndarray,
        holdout: np.ndarray,
        gain: np.ndarray,
        p_churn: np.ndarray,
        r: np.ndarray,
        lam: np.ndarray,
        status_effect: np.ndarray,
        days_to_pay: np.ndarray,
    ) -> None:
        """Log rows acting on the pending churn decision (sent before it resolved)."""
        window = self._window(r[index], t[index], lam[index])
        treated, untreated = repurchase_effect(p_churn[index], gain[index], window)
        self._row(
            index,
            cust,
            action,
            t,
            channel,
            subject_kind,
            subject,
            pi,
            holdout,
            gain,
            p_churn[index],
            r[index],
            treated,
            untreated,
            status_effect,
            days_to_pay,
        )

    def _row(
        self,
        index: np.ndarray,
        cust: np.ndarray,
        action: np.ndarray | int,
        t: np.ndarray,
        channel: np.ndarray,
        subject_kind: np.ndarray | int,
        subject: np.ndarray,
        pi: np.ndarray,
        holdout: np.ndarray,
        gain: np.ndarray,
        p_churn: np.ndarray,
        clock_from: np.ndarray,
        treated: np.ndarray,
        untreated: np.ndarray,
        status_effect: np.ndarray,
        days_to_pay: np.ndarray,
    ) -> None:
        h = self.world.params.outreach.holdout_share
        size = index.size
        self._log(
            customer=cust[index],
            t=t[index],
            action=np.broadcast_to(action, cust.shape)[index],
            channel=channel[index],
            subject_kind=np.broadcast_to(subject_kind, cust.shape)[index],
            subject=subject[index],
            propensity=pi[index] * np.where(holdout[index], h, 1.0 - h),
            holdout=holdout[index],
            gain=gain[index],
            p_churn_untreated=p_churn,
            clock_from=clock_from,
            p_treated=treated,
            p_untreated=untreated,
            effect_status=np.broadcast_to(status_effect, (size,)),
            effect_days_to_pay=np.broadcast_to(days_to_pay, (size,)),
        )

    def after_decision(
        self,
        cust: np.ndarray,
        g: np.ndarray,
        r: np.ndarray,
        q: np.ndarray,
        churned: np.ndarray,
        nxt: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply outreach sent after the experience resolved, then the win-back run.

        Args:
            cust: Customer per order of this iteration.
            g: Journey number per order.
            r: When each experience resolved.
            q: Realised churn probability per order.
            churned: The drawn churn decisions.
            nxt: The drawn next order times (meaningless where churned).

        Returns:
            churned and nxt after revivals and losses.
        """
        p = self.world.params
        op = p.outreach
        tl = self.world.timeline
        horizon = tl.days
        m = cust.size
        lam = self.pop.order_rate[cust]
        churned = churned.copy()
        nxt = nxt.copy()
        state_t = r.copy()
        state_q = q.copy()

        post = self._post
        later = post["index"]
        # The moment lapses once the customer has ordered again.
        later = later[churned[later] | (nxt[later] > post["t"][later])]
        _speed_up_payments(
            post["invoices"], post["reminder_invoice"], post["days_to_pay"], later, post["sent"]
        )
        self._resolved(
            later,
            cust,
            g,
            post["action"],
            post,
            lam,
            churned,
            nxt,
            state_t,
            state_q,
        )

        # Win-back: the first monthly run at least `winback_min_days` after r.
        starts = tl.month_starts.astype(np.float64) + op.winback_hour * HOUR
        run = np.searchsorted(starts, r + op.winback_min_days, side="left")
        has_run = run < starts.size
        spread = op.winback_spread_h * HOUR * self.rng.random(m)
        send_t = np.where(has_run, starts[np.minimum(run, starts.size - 1)] + spread, np.inf)
        renewal = (cust, g, r, post, lam, churned, nxt, state_t, state_q)
        self._renewal_reminders(*renewal, -np.inf, send_t)
        channel = np.where(self.pop.consent[cust, 3], self.message_channel[cust], -1)
        quiet = churned | (nxt > send_t)
        eligible = has_run & (send_t < horizon) & quiet & (channel >= 0)
        chosen, pi, holdout = self._choose(eligible[:, None], ("winback_offer",), post["amount"])
        index = np.flatnonzero(chosen >= 0)
        winback = {
            "t": send_t,
            "channel": channel,
            "subject_kind": np.full(m, SUBJECT_NONE),
            "subject": np.full(m, -1),
            "pi": pi,
            "holdout": holdout,
            "gain": None,
            "days_to_pay": np.full(m, np.nan),
            "experience": post["experience"],
            "amount": post["amount"],
        }
        self._resolved(
            index,
            cust,
            g,
            np.full(m, ACTION["winback_offer"]),
            winback,
            lam,
            churned,
            nxt,
            state_t,
            state_q,
        )
        self._renewal_reminders(*renewal, send_t, np.inf)
        return churned, nxt

    def bill_memberships(self, invoices: dict[str, np.ndarray]) -> None:
        """Take the chunk's membership invoices: renewal reminders are about them, and a sent
        one moves their paid times (in place)."""
        op = self.world.params.outreach
        self.memberships = invoices
        self.renewal_t = np.maximum(invoices["due"] - op.renewal_reminder_days, invoices["issued"])
        customers, first, count = np.unique(
            invoices["customer"], return_index=True, return_counts=True
        )
        self.first_membership[customers] = first
        self.membership_count[customers] = count

    def _renewal_reminders(
        self,
        cust: np.ndarray,
        g: np.ndarray,
        r: np.ndarray,
        post: dict,
        lam: np.ndarray,
        churned: np.ndarray,
        nxt: np.ndarray,
        state_t: np.ndarray,
        state_q: np.ndarray,
        start: np.ndarray | float,
        end: np.ndarray | float,
    ) -> None:
        """Renewal reminders sent in [start, end) to customers quiet since r, in time order.

        A customer's renewal invoices are consecutive (by year) among the memberships, so the
        y-th renewal of every row is handled at once, year after year.
        """
        if not self.memberships:
            return
        op = self.world.params.outreach
        horizon = self.world.timeline.days
        m = cust.size
        count = self.membership_count[cust]
        paid = self.memberships["paid"]
        channel = self.message_channel[cust]
        speedup = op.reminder_speedup * expit(self.pop.payment_reliability[cust])
        for year in range(1, int(count.max(initial=0))):
            invoice = np.where(count > year, self.first_membership[cust] + year, -1)
            send_t = _at(self.renewal_t, invoice)
            unpaid = ~(_at(paid, invoice) <= send_t)
            eligible = (
                (invoice >= 0)
                & (send_t > r)
                & (send_t >= start)
                & (send_t < end)
                & (send_t < horizon)
                & (churned | (nxt > send_t))
                & unpaid
                & (channel >= 0)
            )
            if not eligible.any():
                continue
            amount = _at(self.memberships["amount"], invoice)
            chosen, pi, holdout = self._choose(
                eligible[:, None], ("renewal_reminder",), amount, self.renewal_rng
            )
            index = np.flatnonzero(chosen >= 0)
            # A reminder prompts an unpaid invoice's payment (never-payers do not move).
            days_to_pay = -speedup * (_at(paid, invoice) - send_t)
            moment = {
                "t": send_t,
                "channel": channel,
                "subject_kind": np.full(m, SUBJECT_MEMBERSHIP),
                "subject": invoice,
                "pi": pi,
                "holdout": holdout,
                "gain": None,
                "days_to_pay": days_to_pay,
                "experience": post["experience"],
                "amount": post["amount"],
            }
            self._resolved(
                index,
                cust,
                g,
                np.full(m, ACTION["renewal_reminder"]),
                moment,
                lam,
                churned,
                nxt,
                state_t,
                state_q,
                self.renewal_rng,
            )
            _speed_up_payments(self.memberships, invoice, days_to_pay, index, ~holdout)

    def _resolved(
        self,
        index: np.ndarray,
        cust: np.ndarray,
        g: np.ndarray,
        action: np.ndarray,
        moment: dict,
        lam: np.ndarray,
        churned: np.ndarray,
        nxt: np.ndarray,
        state_t: np.ndarray,
        state_q: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> None:
        """Log and apply actions sent after the decision, to customers quiet since then.

        `state_t`/`state_q` hold the last point where the customer's alive probability is
        known exactly (the resolution, or the last outreach applied) and the churned
        probability there; they, `churned` and `nxt` are updated in place.
        """
        if index.size == 0:
            return
        p = self.world.params
        tl = self.world.timeline
        pop = self.pop
        c = cust[index]
        send = moment["t"][index]
        if moment["gain"] is None:
            gain = retention_gain(
                action[index],
                pop.churn_base[c],
                pop.loyalty[c],
                pop.price_sensitivity[c],
                self.delay_sensitivity[c],
                moment["amount"][index],
                *(flags[index] for flags in moment["experience"]),
                p,
            )
        else:
            gain = moment["gain"][index]
        survive = (1.0 - state_q[index]) * np.exp(
            -lam[index] * np.maximum(tl.season_clock(send) - tl.season_clock(state_t[index]), 0.0)
        )
        alive = survive / (survive + state_q[index])
        window = self._window(send, send, lam[index])
        treated, untreated = repurchase_effect(1.0 - alive, gain, window)
        full_gain = np.zeros(cust.size)
        full_gain[index] = gain
        self._row(
            index,
            cust,
            action,
            moment["t"],
            moment["channel"],
            moment["subject_kind"],
            moment["subject"],
            moment["pi"],
            moment["holdout"],
            full_gain,
            1.0 - alive,
            send,
            treated,
            untreated,
            np.full(index.size, np.nan),
            moment["days_to_pay"][index],
        )
        sent = ~moment["holdout"][index]
        alive_after = expit(logit(np.clip(alive, _EPS, 1.0 - _EPS)) + gain)
        rng = self.rng if rng is None else rng
        u = rng.random(index.size)
        e = rng.exponential(size=index.size)
        revive = sent & churned[index] & (gain > 0) & (u < (alive_after - alive) / (1.0 - alive))
        lose = sent & ~churned[index] & (gain < 0) & (u < (alive - alive_after) / alive)
        restart = tl.season_clock_inverse(tl.season_clock(send) + e / lam[index])
        nxt[index[revive]] = restart[revive]
        churned[index[revive]] = False
        churned[index[lose]] = True
        done = index[sent]
        state_t[done] = send[sent]
        state_q[done] = 1.0 - alive_after[sent]
        self.resets.setdefault("order", []).append(g[done])
        self.resets.setdefault("t", []).append(send[sent])
        self.resets.setdefault("q", []).append(1.0 - alive_after[sent])

    def results(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The logged rows (sorted by customer and time) and the truth's state resets."""
        rows = {name: np.concatenate(parts) for name, parts in self.rows.items()}
        resets = {name: np.concatenate(parts) for name, parts in self.resets.items()}
        if not rows:
            rows = empty_outreach()
        if not resets:
            resets = empty_resets()
        sort = np.lexsort((rows["t"], rows["customer"]))
        return {name: values[sort] for name, values in rows.items()}, resets


def _speed_up_payments(
    invoices: dict[str, np.ndarray],
    reminder_invoice: np.ndarray,
    days_to_pay: np.ndarray,
    index: np.ndarray,
    sent: np.ndarray,
) -> None:
    """Move the paid times of the late payers among `index` whose reminder was sent."""
    moves = index[sent[index] & ~np.isnan(days_to_pay[index])]
    invoices["paid"][reminder_invoice[moves]] += days_to_pay[moves]


def _at(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[index], NaN where index is -1."""
    padded = np.append(values, np.nan)
    return padded[np.where(index >= 0, index, values.size)]


def _first_by(local: np.ndarray, time: np.ndarray, mask: np.ndarray, m: int) -> np.ndarray:
    """Per order (0..m-1), the batch position of its earliest masked contact, -1 if none."""
    pick = np.flatnonzero(mask)
    out = np.full(m, -1)
    if pick.size == 0:
        return out
    order = pick[np.lexsort((time[pick], local[pick]))]
    first = np.ones(order.size, dtype=bool)
    first[1:] = local[order][1:] != local[order][:-1]
    out[local[order][first]] = order[first]
    return out


_OUTREACH_FIELDS = {
    "customer": np.int64,
    "t": np.float64,
    "action": np.int64,
    "channel": np.int64,
    "subject_kind": np.int64,
    "subject": np.int64,
    "propensity": np.float64,
    "holdout": bool,
    "gain": np.float64,
    "p_churn_untreated": np.float64,
    "clock_from": np.float64,
    "p_treated": np.float64,
    "p_untreated": np.float64,
    "effect_status": np.float64,
    "effect_days_to_pay": np.float64,
}


def empty_outreach() -> dict[str, np.ndarray]:
    return {name: np.zeros(0, dtype=dtype) for name, dtype in _OUTREACH_FIELDS.items()}


def empty_resets() -> dict[str, np.ndarray]:
    return {"order": np.zeros(0, np.int64), "t": np.zeros(0), "q": np.zeros(0)}
