"""How the contact center handles a contact: channel, handler, waits, resolution, surveys.

Which contacts happen is decided where the experience happens (`journeys`, `memberships`);
this module only turns (reason, customer, time) into a handled contact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.sources.simulator.params import CONTACT_REASONS
from features.sources.simulator.world import World, draw_categorical

REASON = {name: i for i, name in enumerate(CONTACT_REASONS)}


@dataclass
class ContactBatch:
    """Contacts as parallel arrays; `order` is the order index (-1 when none).

    Attributes:
        customer: Customer index within the chunk.
        order: Order index (journey numbering) or -1.
        t: Start time, days.
        reason: Index into `CONTACT_REASONS`.
        channel: Index into (voice, chat, email).
        ai: Handled first by the AI agent.
        wait_s: Seconds waiting.
        handle_s: Seconds of handling.
        transfers: Number of transfers.
        resolved: Resolved at first contact.
        csat: 1-5, or -1 when the survey was not answered.
        ces: 1-7, or -1.
        nps: 0-10, or -1.
        high_effort: The true effort score reaches the high-effort threshold (answered or not).
    """

    customer: np.ndarray
    order: np.ndarray
    t: np.ndarray
    reason: np.ndarray
    channel: np.ndarray
    ai: np.ndarray
    wait_s: np.ndarray
    handle_s: np.ndarray
    transfers: np.ndarray
    resolved: np.ndarray
    csat: np.ndarray
    ces: np.ndarray
    nps: np.ndarray
    high_effort: np.ndarray

    @property
    def size(self) -> int:
        return len(self.t)

    @property
    def end(self) -> np.ndarray:
        """When the contact was over, days."""
        return self.t + (self.wait_s + self.handle_s) / 86_400.0

    def take(self, index: np.ndarray) -> ContactBatch:
        return ContactBatch(**{k: v[index] for k, v in self.__dict__.items()})

    @staticmethod
    def concat(batches: list[ContactBatch]) -> ContactBatch:
        fields = ContactBatch.__dataclass_fields__
        return ContactBatch(**{k: np.concatenate([b.__dict__[k] for b in batches]) for k in fields})


def handle_contacts(
    rng: np.random.Generator,
    world: World,
    customer: np.ndarray,
    order: np.ndarray,
    t: np.ndarray,
    reason: np.ndarray,
    preferred: np.ndarray,
    repeat: bool,
) -> ContactBatch:
    """Handle contacts that arise at times `t` for `reason`.

    Args:
        rng: Random stream of the chunk.
        world: Shared context.
        customer: Customer index per contact.
        order: Order index per contact (-1 when not order-related).
        t: Contact start times, days.
        reason: Reason index per contact.
        preferred: The customer's preferred outreach channel (email, sms, voice).
        repeat: Whether these are repeat contacts after an unresolved one (escalated).

    Returns:
        The handled contacts.
    """
    cp = world.params.contacts
    n = len(t)
    channel = draw_categorical(rng, world.channel_cum[preferred, reason])
    is_voice = channel == 0
    ai_share = np.asarray(cp.ai_share)[reason] * np.where(is_voice, cp.ai_voice_factor, 1.0)
    ai = rng.random(n) < ai_share
    complexity = np.asarray(cp.complexity)[reason]
    to_human = ai & (rng.random(n) < cp.ai_transfer_base + cp.ai_transfer_complexity * complexity)
    transfers = to_human.astype(np.int64) + rng.poisson(cp.human_transfer_mean, n)

    congestion = world.timeline.congestion_at(t)
    human_wait = np.asarray(cp.wait_median_human)[channel]
    wait_median = np.where(ai, np.asarray(cp.wait_median_ai)[channel], human_wait)
    # Queues for humans grow in peak season; the AI agent answers at once whatever the load.
    wait_median = wait_median * np.where(ai, 1.0, 1.0 + cp.wait_congestion * congestion)
    wait_s = wait_median * np.exp(cp.wait_sigma * rng.standard_normal(n))
    handle_median = np.where(
        ai, np.asarray(cp.handle_median_ai)[channel], np.asarray(cp.handle_median_human)[channel]
    )
    handle_s = (
        handle_median * (1.0 + 0.5 * complexity) * np.exp(cp.handle_sigma * rng.standard_normal(n))
        + cp.handle_per_transfer_s * transfers
    )

    logit = (
        np.asarray(cp.resolve_logit)[reason]
        - cp.ai_resolve_penalty * complexity * ai
        - cp.transfer_resolve_penalty * transfers
        + (cp.repeat_resolve_bonus if repeat else 0.0)
    )
    resolved = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))

    w_res, w_tr, w_wait, w_cx, sd = cp.sat_weights
    sat = (
        w_res * resolved
        + w_tr * transfers
        + w_wait * np.log(wait_s / human_wait)
        + w_cx * complexity
        + sd * rng.standard_normal(n)
    )
    noise = rng.standard_normal((3, n))
    csat = np.clip(np.rint(3.2 + 1.1 * sat + 0.4 * noise[0]), 1, 5).astype(np.int64)
    ces = np.clip(np.rint(3.4 - 1.2 * sat + 0.5 * transfers + 0.5 * noise[1]), 1, 7).astype(
        np.int64
    )
    nps = np.clip(np.rint(6.5 + 2.2 * sat + 0.8 * noise[2]), 0, 10).astype(np.int64)
    answered = rng.random(n) < cp.survey_prob
    return ContactBatch(
        customer=customer,
        order=order,
        t=t,
        reason=reason,
        channel=channel,
        ai=ai,
        wait_s=np.round(wait_s, 1),
        handle_s=np.round(handle_s, 1),
        transfers=transfers,
        resolved=resolved,
        csat=np.where(answered, csat, -1),
        ces=np.where(answered, ces, -1),
        nps=np.where(answered, nps, -1),
        high_effort=ces >= cp.high_effort_ces,
    )


def empty_contacts() -> ContactBatch:
    f = np.zeros(0)
    i = np.zeros(0, dtype=np.int64)
    b = np.zeros(0, dtype=bool)
    return ContactBatch(i, i, f, i, i, b, f, f, i, b, i, i, i, b)


def repeat_contacts(
    rng: np.random.Generator, world: World, first: ContactBatch, preferred_of: np.ndarray
) -> list[ContactBatch]:
    """Repeat contacts after unresolved ones: the customer tries again a few days later.

    Args:
        rng: Random stream of the chunk.
        world: Shared context.
        first: The contacts that may be repeated.
        preferred_of: Preferred channel per customer index.

    Returns:
        One batch per repeat round (possibly empty).
    """
    cp = world.params.contacts
    out = []
    current = first
    for prob in cp.repeat_prob:
        again = ~current.resolved & (rng.random(current.size) < prob)
        prev = current.take(np.flatnonzero(again))
        t = prev.end + 0.1 + rng.exponential(cp.repeat_days_mean, prev.size)
        current = handle_contacts(
            rng, world, prev.customer, prev.order, t, prev.reason, preferred_of[prev.customer],
            repeat=True,
        )  # fmt: skip
        out.append(current)
    return out
