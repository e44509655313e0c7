"""Request and response schemas of the service's versioned routes.

Requests forbid unknown fields, so a misspelt filter is an error naming it rather than a
silently ignored key. Answers carry ids, scores and words, never personal data.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from features.contract.schema import OUTREACH_ACTIONS, OUTREACH_CHANNELS

MAX_IDS_PER_REQUEST = 100
MAX_QUEUE_LIMIT = 10_000

Band = Literal["low", "medium", "high"]
# A customer who never ordered is outside the churn model's population and says so.
ChurnStatus = Literal["ok", "unknown_id", "no_order"]
# A parcel is scored only while it is in transit; delivered and likely lost parcels say so.
DelayStatus = Literal["ok", "unknown_id", "delivered", "likely_lost"]
# The contract's outreach channels and actions: declared once, there.
Channel = Literal[OUTREACH_CHANNELS]
Action = Literal[OUTREACH_ACTIONS]

_IdList = Field(
    min_length=1,
    max_length=MAX_IDS_PER_REQUEST,
    description=f"1 to {MAX_IDS_PER_REQUEST} ids.",
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DelayRequest(_Request):
    """Shipments to score."""

    shipment_ids: list[str] = _IdList


class ChurnRequest(_Request):
    """Customers to score."""

    customer_ids: list[str] = _IdList


# The served models /v1/explain explains.
ExplainedModel = Literal["delay_risk", "churn", "next_best_offer", "outreach_uplift"]
# Besides the delay and churn answers' statuses: an order whose customer has no history yet
# (the page shows best sellers, no model score), an order whose page shows no offer (showing
# nothing is worth most), a customer without an action predicted to help in the latest batch.
ExplainStatus = Literal[
    "ok",
    "unknown_id",
    "delivered",
    "likely_lost",
    "no_order",
    "cold_start",
    "no_offer",
    "no_action",
]


class ExplainRequest(_Request):
    """Ids to explain with one served model, and what each id's explanation explains.

    - `delay_risk`: shipment ids; the delay risk of a parcel in transit.
    - `churn`: customer ids; the churn risk.
    - `next_best_offer`: order ids; the acceptance probability of the top offer the order's
      tracking page shows (rank 1 of `/v1/recommend`). One explanation per order keeps the
      answer one result per id, as for every model; the other offers differ from the top one
      only in their category's history and the offer's own columns.
    - `outreach_uplift`: customer ids; the predicted uplift of the customer's best action in
      the latest batch (the `best_action` of the churn answer), from the inputs the batch
      predicted it from.
    """

    model: ExplainedModel
    ids: list[str] = _IdList


class OutreachRequest(_Request):
    """Which part of the day's outreach queue to return."""

    as_of: datetime | None = Field(
        None, description="Decision instant; its day must be the queue's (default: the queue's)."
    )
    # Strict: lax parsing would take `true` or `2.0` for a number the document calls integer.
    limit: int = Field(
        100, ge=1, le=MAX_QUEUE_LIMIT, strict=True, description="Most actions returned."
    )
    channel: Channel | None = Field(None, description="Only actions on this channel.")
    region: str | None = Field(None, min_length=1, description="Only customers of this region.")


class RecommendRequest(_Request):
    """The order shown on a tracking page."""

    order_id: str = Field(min_length=1)
    k: int = Field(3, ge=1, le=20, strict=True, description="Offers returned.")
    token: str | None = Field(
        None,
        description="The shop's signed token for this order (`aftersale token ORDER_ID`); "
        "without a valid one the answer is 401.",
    )


class TrackingRequest(_Request):
    """The order a tracking page shows the parcels of."""

    order_id: str = Field(min_length=1)
    token: str | None = Field(
        None,
        description="The shop's signed token for this order (`aftersale token ORDER_ID`); "
        "without a valid one the answer is 401.",
    )


class ReasonOut(BaseModel):
    """One reason behind a score, in words, with its SHAP contribution (log-odds)."""

    feature: str
    text: str
    contribution: float


class DeliveryWindow(BaseModel):
    """Most likely delivery date and a calibrated window (from the delivery-estimate model).

    earliest ≤ most_likely ≤ latest, for the instants and for the dates alike.
    """

    most_likely: datetime = Field(description="Most likely delivery instant (UTC).")
    earliest: datetime = Field(
        description="Start of the window (UTC): the start of its first local date, or the "
        "decision instant when later (coverage is calibrated on local dates)."
    )
    latest: datetime = Field(description="End of the window (UTC): the end of its last local date.")
    most_likely_date: date = Field(description="Most likely delivery date, local to `timezone`.")
    earliest_date: date = Field(description="First date of the window, local to `timezone`.")
    latest_date: date = Field(description="Last date of the window, local to `timezone`.")
    timezone: str = Field(description="IANA time zone of the dates.")
    timezone_known: bool = Field(
        description="Whether `timezone` is the customer's own; false: UTC stands in for it."
    )
    coverage: float = Field(description="Probability the parcel arrives within the window.")
    calibration: Literal["split", "adaptive"] = Field(
        "split",
        description="How the window was calibrated: 'split' (once, before the model was "
        "registered) or 'adaptive' (offsets that followed the outcomes up to then).",
    )
    text: str = Field(description="The window in words: 'arrives between <date> and <date>'.")


class DelayScore(BaseModel):
    """Delay risk of one shipment in transit; or that it was delivered, or is likely lost.

    `status` "delivered": the delivery instant, its local date and whether it was late, no
    risk and no window. "likely_lost": past its promise with no tracking scan for the
    configured time; `status_reason` says so in words, with no risk and no date.
    """

    shipment_id: str
    status: DelayStatus
    features_as_of: datetime | None = Field(
        None, description="Instant of the shipment state answered (its newest feature row)."
    )
    probability: float | None = Field(None, description="Calibrated probability of lateness.")
    risk_score: int | None = Field(None, description="The probability on a 0-100 scale.")
    band: Band | None = None
    reasons: list[ReasonOut] = Field(default_factory=list)
    delivery_window: DeliveryWindow | None = Field(
        None,
        description="Null until a delivery-estimate champion is registered, and for parcels "
        "not in transit.",
    )
    delivered_at: datetime | None = Field(None, description="Delivery instant (UTC).")
    delivered_date: date | None = Field(
        None, description="Delivery date, local to the customer's time zone."
    )
    late: bool | None = Field(None, description="Delivered after the promise.")
    status_reason: str | None = Field(
        None, description="Why a parcel is not scored, in words (delivered, likely lost)."
    )


class ChurnScore(BaseModel):
    """Churn risk of one customer; or that they never ordered.

    `status` "no_order": the customer has no order as of the decision instant, so is outside
    the population the churn model learnt from (customers with an earlier order);
    `status_reason` says so in words, with no risk, no reasons and no action.
    """

    customer_id: str
    status: ChurnStatus
    probability: float | None = Field(None, description="Calibrated probability of churn.")
    risk_score: int | None = None
    band: Band | None = None
    features_as_of: datetime | None = Field(
        None, description="Instant of the customer state answered (its newest snapshot row)."
    )
    contact_reason: str | None = Field(
        None,
        description="Of the customer's own contact reasons, the one contributing most to the "
        "risk; 'no_contact' for a customer who never contacted service.",
    )
    reasons: list[ReasonOut] = Field(default_factory=list)
    best_action: str | None = Field(
        None,
        description="The outreach action the uplift model predicts helps this customer most, "
        "as of the latest batch (None: no action is predicted to help, or no uplift model).",
    )
    best_action_uplift: float | None = Field(
        None, description="Its predicted effect on the chance of another order within 90 days."
    )
    best_action_uplift_low: float | None = None
    best_action_uplift_high: float | None = None
    status_reason: str | None = Field(
        None, description="Why a customer is not scored, in words (never ordered)."
    )


class ModelRef(BaseModel):
    """The model version an answer came from."""

    name: str
    version: str


class Contribution(BaseModel):
    """One feature's part in a score: its value and its SHAP contribution."""

    feature: str
    value: str = Field(description="The feature's value, formatted for people.")
    contribution: float = Field(description="SHAP contribution to the model's raw output.")
    text: str = Field(description="The feature and its value in words.")


class Explanation(BaseModel):
    """Every feature's contribution to one id's served score: `base_value` plus the
    contributions equals `output`, the model's raw output.

    For delay risk, churn and the offer `output` is the margin (log-odds) and `score` the
    served probability: the margin through the sigmoid, then calibrated (a monotone map, so
    `score` is not `output` itself), as `/v1/score/*` answers it, or the top offer's
    `acceptance_probability` in `/v1/recommend`, at the same instant. For the uplift model
    the effect is a weighted sum of regression trees with no link: `output` is the
    predicted uplift itself and `score` the `best_action_uplift` the churn answer reports.
    """

    id: str
    status: ExplainStatus
    features_as_of: datetime | None = Field(
        None,
        description="Instant of the state explained (the uplift: the latest batch's decision "
        "instant, whose inputs it explains).",
    )
    category: str | None = Field(None, description="The offer: the top offer's category.")
    offer_type: Literal["recommendation", "discount"] | None = Field(
        None, description="The offer: how the top offer is made."
    )
    discount: float | None = Field(None, description="The offer: the top offer's discount.")
    action: Action | None = Field(
        None, description="The uplift: the customer's best action in the latest batch."
    )
    base_value: float | None = None
    output: float | None = Field(
        None, description="The model's raw output: the margin (log-odds), or the uplift."
    )
    score: float | None = Field(
        None, description="The served score: a calibrated probability, or the uplift."
    )
    contributions: list[Contribution] = Field(
        default_factory=list, description="Every feature, largest absolute contribution first."
    )


class ExplainResponse(BaseModel):
    model: ModelRef
    as_of: datetime
    results: list[Explanation]


class DelayResponse(BaseModel):
    model: ModelRef
    as_of: datetime
    results: list[DelayScore]


class ChurnResponse(BaseModel):
    model: ModelRef
    as_of: datetime
    results: list[ChurnScore]


class OutreachAction(BaseModel):
    """One action for a scheduler."""

    rank: int
    customer_id: str
    action: Action
    subject_id: str | None = Field(None, description="The shipment or invoice it is about.")
    channel: Channel
    language: str
    region: str
    send_window_start: str = Field(
        description="Customer's local time, ISO 8601 with its offset (the zone's name is "
        "personal data and not exported)."
    )
    send_window_end: str
    priority: float = Field(
        description="Expected value saved less the action's cost: predicted uplift × the "
        "customer's value − cost (before an uplift model is trained: risk × value × the "
        "action's assumed uplift − cost)."
    )
    risk: float
    value: float
    uplift: float = Field(
        description="The uplift model's predicted effect on the chance of another order "
        "within 90 days (before one is trained: the action's assumed share of value saved)."
    )
    uplift_low: float | None = Field(
        None, description="Low end of the interval of like predictions, measured on holdouts."
    )
    uplift_high: float | None = Field(None, description="High end of that interval.")
    cost: float | None = Field(None, description="Cost of the action on its channel.")
    reason: str = Field(description="Why, in words.")


class OutreachResponse(BaseModel):
    queue_date: str
    as_of: datetime
    total: int = Field(description="Actions in the queue matching the filters.")
    actions: list[OutreachAction]


class Offer(BaseModel):
    """One offer for a tracking page: a category and how it is offered, no personal data."""

    rank: int
    category: str
    offer_type: Literal["recommendation", "discount"]
    discount: float = Field(description="Discount as a fraction of list price.")
    acceptance_probability: float | None = Field(
        None, description="Calibrated probability it is accepted within 7 days."
    )
    expected_value: float | None = Field(
        None, description="Acceptance probability × value if accepted."
    )
    uplift_over_no_offer: float | None = Field(
        None, description="Expected value minus that of showing nothing (buying anyway)."
    )
    value_if_accepted: float = Field(description="List price × (margin − discount).")


class RecommendResponse(BaseModel):
    model: ModelRef
    as_of: datetime
    order_id: str
    cold_start: bool = Field(description="True when the order or customer is not known yet.")
    cold_start_reason: str | None = None
    parcel_late: bool | None = Field(
        None, description="Whether the order's parcel is past its promise and undelivered."
    )
    offers: list[Offer]


# An order the service knows, with its parcels; one placed but not yet shipped; an unknown one.
OrderStatus = Literal["ok", "not_shipped", "unknown_id"]


class TrackedWindow(BaseModel):
    """A parcel's delivery window as a tracking page shows it: local dates and words, not the
    customer's time zone."""

    most_likely_date: date
    earliest_date: date
    latest_date: date
    coverage: float = Field(description="Probability the parcel arrives within the window.")
    text: str = Field(description="The window in words, as `/v1/score/delay` words it.")


class TrackedParcel(BaseModel):
    """One parcel of the order: where it is, when it should arrive, and its delay risk in
    words (the band of `/v1/score/delay`); no probability, no reasons, no personal data."""

    shipment_id: str
    status: DelayStatus
    status_text: str = Field(description="Where the parcel is, in words.")
    band: Band | None = None
    risk_text: str | None = Field(
        None,
        description="The delay risk in words: 'likely on time', 'some risk of delay', "
        "'high risk of delay' (bands low, medium, high).",
    )
    delivery_window: TrackedWindow | None = Field(
        None, description="Null for a parcel not in transit or without a delivery-estimate model."
    )
    delivered_date: date | None = None
    late: bool | None = None


class TrackingResponse(BaseModel):
    model: ModelRef
    as_of: datetime
    order_id: str
    status: OrderStatus
    parcels: list[TrackedParcel] = Field(description="The order's parcels, first shipped first.")


class MemoCounts(BaseModel):
    rows: int = Field(description="Rows whose answers the memo holds.")
    hits: int = Field(description="Request rows answered from the memo since the model loaded.")
    misses: int = Field(description="Request rows computed since the model loaded.")
    answered_ahead: int = Field(
        description="Rows computed before anyone asked: parcels in transit and the customers "
        "the outreach queue names, answered as the model loaded (`AFTERSALE_ANSWER_AHEAD`)."
    )


class LoadedModel(BaseModel):
    name: str
    version: str
    aliases: list[str]
    loaded_at: datetime
    memo: MemoCounts | None = Field(
        None,
        description="The worker's memo of this model's answers by the side each row takes at "
        "every split (`AFTERSALE_ANSWER_MEMO_ROWS`); null where the model keeps none.",
    )


class OnlineRows(BaseModel):
    reader: str = Field(description="What reads them: a scoring model, or the offers' view.")
    view: str = Field(description="The feature view.")
    kept: int = Field(description="Rows the worker keeps now (`AFTERSALE_ONLINE_CACHE_ROWS`).")
    found: int = Field(description="Rows asked and found kept since the model loaded.")
    read: int = Field(description="Rows asked and read from the online store since then.")


class ModelsResponse(BaseModel):
    models: list[LoadedModel]
    online_rows: list[OnlineRows] = Field(
        default_factory=list,
        description="The online feature rows each reader keeps and how often a row asked was "
        "found there; all are let go of whenever the online store changes.",
    )
    outreach_queue: str | None = Field(None, description="Date of the queue being served.")
    unavailable: dict[str, str] = Field(
        default_factory=dict,
        description="Optional models not loaded, and why (none registered, or unloadable).",
    )
    fallbacks: dict[str, str] = Field(
        default_factory=dict,
        description="Models served from the local copy of their last good champion, and why "
        "(the registry unreachable, or its champion unloadable).",
    )
    retrain_due: dict[str, str] = Field(
        default_factory=dict,
        description="Champions the monitor marked for retraining, and why; the next "
        "pipeline run retrains them.",
    )
    reload_error: str | None = Field(
        None, description="Why the latest reload failed; the loaded champions keep serving."
    )
    window_calibration: str | None = Field(
        None,
        description="Which conformal offsets the delivery window serves: 'adaptive, updated "
        "<date>' (updated nightly from the outcomes known up to that day) or '<method>, as "
        "registered'; null without a window champion.",
    )


class ErrorDetail(BaseModel):
    """One part of a request that failed validation, as pydantic reports it."""

    type: str = Field(description="What kind of error, e.g. 'missing', 'json_invalid'.")
    loc: list[str | int] = Field(description="Where in the body: field names and list indexes.")
    msg: str = Field(description="The error in words.")


class ErrorResponse(BaseModel):
    """Every error answer of the service, whichever layer gives it: what went wrong in words
    and, for a body that fails validation, each invalid part."""

    error: str
    detail: list[ErrorDetail] | None = Field(
        None, description="The invalid parts of a request body (400 answers of validation)."
    )
