"""The order-tracking page: an order's parcels as its page shows them, and the demo page.

A tracking page knows an order id, not its shipment ids: `OrderParcels` finds an order's
parcels in the published raw `shipments` table (the order's own rows, shipped by the
decision instant), and `tracked_parcel` turns the delay answer of each into what the page
shows: where it is, the delivery window in words and the delay risk in plain words (the
bands of `serving.scoring.band`). `POST /v1/tracking` answers it behind the order's signed
token, as `/v1/recommend` answers the page's offers.

The widget is a static script (`static/tracking.js`) that a shop's page embeds with the
order id and the token its backend minted; `GET /demo/tracking/{order_id}` is such a page,
which mints the token itself. It stands in for the shop's page, so it shows any order to
whoever names it: it answers only where `AFTERSALE_DEMO_PAGES` is on.
"""

from __future__ import annotations

import html
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from string import Template

import pandas as pd
import pyarrow.parquet as pq

from features import versioned
from serving import schemas

STATIC_DIR = Path(__file__).parent / "static"
WIDGET_SCRIPT = STATIC_DIR / "tracking.js"
PAGE_TEMPLATE = STATIC_DIR / "tracking_page.html"
# Where the service serves the widget and the demo page.
WIDGET_PATH = "/widget/tracking.js"
DEMO_PREFIX = "/demo/tracking/"
# Ids are keys of the contract's tables (e.g. "o11290", Olist's 32 hex digits): letters,
# digits and a few separators. Anything else is refused before any lookup.
ORDER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# The delay-risk bands (`serving.scoring.BANDS`: low < 0.2 ≤ medium < 0.5 ≤ high) in words.
RISK_WORDS = {
    "low": "likely on time",
    "medium": "some risk of delay",
    "high": "high risk of delay",
}
IN_TRANSIT_WORDS = "In transit"
NO_SCAN_WORDS = "Handed to the carrier: no tracking information yet"


def valid_order_id(order_id: str) -> bool:
    """Whether the id has the shape of an order key."""
    return ORDER_ID_PATTERN.fullmatch(order_id) is not None


@dataclass(frozen=True)
class _Loaded:
    version: Path
    ordered: dict[str, pd.Timestamp]
    shipped: dict[str, list[tuple[pd.Timestamp, str]]]


class OrderParcels:
    """Each order's parcels, from the published raw `orders` and `shipments` tables, re-read
    when a new version is published.

    Args:
        raw_root: The published raw tables (versions and their `current` link).
    """

    def __init__(self, raw_root: Path) -> None:
        self.raw_root = raw_root
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()

    def _get(self) -> _Loaded | None:
        version = versioned.current(self.raw_root)
        if version is None:
            return None
        loaded = self._loaded
        if loaded is not None and loaded.version == version:
            return loaded
        with self._lock:
            if self._loaded is None or self._loaded.version != version:
                self._loaded = _read(version)
            return self._loaded

    def parcels(self, order_id: str, as_of: pd.Timestamp) -> list[str] | None:
        """The shipment ids of the order shipped by `as_of`, first shipped first; None when
        the order was not placed by then (or no raw data is published)."""
        loaded = self._get()
        if loaded is None:
            return None
        ordered = loaded.ordered.get(order_id)
        if ordered is None or ordered > as_of:
            return None
        return [sid for shipped, sid in loaded.shipped.get(order_id, []) if shipped <= as_of]


def _read(version: Path) -> _Loaded:
    orders = pq.read_table(version / "orders.parquet", columns=["order_id", "order_ts"])
    ordered = dict(
        zip(
            orders.column("order_id").to_pylist(),
            orders.column("order_ts").to_pandas(),
            strict=True,
        )
    )
    shipped: dict[str, list[tuple[pd.Timestamp, str]]] = {}
    path = version / "shipments.parquet"
    if path.is_file():
        columns = ["shipment_id", "order_id", "shipped_ts"]
        ships = pq.read_table(path, columns=columns).to_pandas()
        ships = ships.dropna(subset=["shipped_ts"]).sort_values(["shipped_ts", "shipment_id"])
        for sid, oid, ts in ships.itertuples(index=False):
            shipped.setdefault(oid, []).append((ts, sid))
    return _Loaded(version, ordered, shipped)


def in_transit_shipments(raw_root: Path, as_of: pd.Timestamp, limit: int) -> list[str]:
    """The shipments of the published raw `shipments` table shipped by `as_of` and not
    delivered by then, the latest shipped first, at most `limit` (none where no raw data
    is published): the parcels whose tracking pages are likely asked for next."""
    version = versioned.current(raw_root)
    path = None if version is None else version / "shipments.parquet"
    if path is None or not path.is_file() or limit <= 0:
        return []
    columns = ["shipment_id", "shipped_ts", "delivered_ts"]
    ships = pq.read_table(path, columns=columns).to_pandas()
    shipped = ships["shipped_ts"] <= as_of
    undelivered = ships["delivered_ts"].isna() | (ships["delivered_ts"] > as_of)
    moving = ships[shipped & undelivered].sort_values(
        ["shipped_ts", "shipment_id"], ascending=False, kind="stable"
    )
    return moving["shipment_id"].head(limit).tolist()


def tracked_parcel(score: schemas.DelayScore) -> schemas.TrackedParcel:
    """What the tracking page shows of one delay answer."""
    window = score.delivery_window
    if score.status_reason is not None:
        status_text = score.status_reason
    else:
        status_text = NO_SCAN_WORDS if score.status == "unknown_id" else IN_TRANSIT_WORDS
    return schemas.TrackedParcel(
        shipment_id=score.shipment_id,
        status=score.status,
        status_text=status_text,
        band=score.band,
        risk_text=None if score.band is None else RISK_WORDS[score.band],
        delivery_window=None
        if window is None
        else schemas.TrackedWindow(
            most_likely_date=window.most_likely_date,
            earliest_date=window.earliest_date,
            latest_date=window.latest_date,
            coverage=window.coverage,
            text=window.text,
        ),
        delivered_date=score.delivered_date,
        late=score.late,
    )


def widget_script() -> str:
    return WIDGET_SCRIPT.read_text()


def demo_page(order_id: str, token: str) -> str:
    """The demo tracking page of an order: the widget, given the order id and its token."""
    return Template(PAGE_TEMPLATE.read_text()).substitute(
        order_id=html.escape(order_id),
        widget_path=WIDGET_PATH,
        # Attribute values are HTML-escaped; the widget reads them back as plain text.
        order_attribute=html.escape(order_id, quote=True),
        token_attribute=html.escape(token, quote=True),
    )


def message_page(title: str, message: str) -> str:
    """A plain page saying why there is no tracking page (unknown or malformed order)."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(message)}</p></body></html>"
    )
