"""Contact reason from text: why did the customer get in touch, read from their message?

- Entity: contact. Decision: when a contact arrives as free text with no reason code.
- Label: one of the contract's contact reasons (`features.contract.schema.CONTACT_REASONS`).
- Training data: Bitext's customer-support messages (`../shared/data/bitext_customer_support`),
  whose 27 intents map to the contract's reasons by `INTENT_REASONS` below; an intent with no
  fitting reason maps to `other`.
- Inputs: the message text alone.
- Baseline: always the most frequent reason of the training messages.
- Answer: the most probable reason; below `CONFIDENCE_THRESHOLD` the answer is `other`,
  flagged low-confidence, so a doubtful message is never filed under a specific reason.
- Primary test metric: accuracy of the answer on held-out messages.

The model is not a `ModelSpec`: it reads no contract table and no Feast feature service, so
it is trained by `training.text_reason`, not by a trainer of `training.trainers.TRAINERS`.
Nothing here imports training.
"""

from __future__ import annotations

from types import MappingProxyType

from features.contract.schema import CONTACT_REASONS

NAME = "contact_reason"
# The reason of a message no reason fits, and of every low-confidence answer.
FALLBACK = "other"
# Below this probability of its most likely reason a message is answered `FALLBACK`,
# flagged low-confidence. Measured at 0.5: 0.2% of the typo-noised held-out Bitext messages
# and 7 of the 42 hand-written ones fall back; at 0.6 and above both lose accuracy.
CONFIDENCE_THRESHOLD = 0.5
PRIMARY_METRIC = "accuracy"
TEXT = "text"

# Bitext intent → contract reason. Only reasons of the contract; every intent of the
# dataset (27) is listed. `missing_item`, `damaged_item` and `renewal` have no Bitext intent,
# so this model never answers them.
INTENT_REASONS: MappingProxyType[str, str] = MappingProxyType(
    {
        # Where the order stands.
        "track_order": "order_status",
        # When the parcel will arrive: in a post-purchase shop, what a slow parcel makes a
        # customer ask.
        "delivery_period": "delivery_delay",
        "get_refund": "return_refund",
        "track_refund": "return_refund",
        "check_refund_policy": "return_refund",
        # Invoices and fees are what a billing dispute is about: the contract's only
        # billing reason.
        "check_invoice": "billing_dispute",
        "get_invoice": "billing_dispute",
        "check_cancellation_fee": "billing_dispute",
        "payment_issue": "payment",
        "check_payment_methods": "payment",
        "complaint": "complaint",
        # Feedback that is not a complaint.
        "review": FALLBACK,
        # Changing or cancelling an order: the contract has no reason for it (`renewal` is a
        # membership's).
        "cancel_order": FALLBACK,
        "change_order": FALLBACK,
        "place_order": FALLBACK,
        "delivery_options": FALLBACK,
        "change_shipping_address": FALLBACK,
        "set_up_shipping_address": FALLBACK,
        "create_account": FALLBACK,
        "delete_account": FALLBACK,
        "edit_account": FALLBACK,
        "recover_password": FALLBACK,
        "registration_problems": FALLBACK,
        "switch_account": FALLBACK,
        "newsletter_subscription": FALLBACK,
        "contact_customer_service": FALLBACK,
        "contact_human_agent": FALLBACK,
    }
)

REASONS: tuple[str, ...] = CONTACT_REASONS


def reason_of(intent: str) -> str:
    """The contract reason of a Bitext intent.

    Raises:
        KeyError: The intent is not in `INTENT_REASONS`.
    """
    try:
        return INTENT_REASONS[intent]
    except KeyError:
        raise KeyError(
            f"no contact reason for intent {intent!r}; add it to INTENT_REASONS"
        ) from None
