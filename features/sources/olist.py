"""Adapter for Olist's public "classified" orders sample: real Brazilian e-commerce orders.

One CSV row is one order with its purchase, approval, promise and delivery times, the
customer's state, order value and freight, and the customer's review with crowd-voted
complaint labels. It maps to the contract tables `customers`, `orders`, `shipments` and
`contacts`; `docs/sources.md` lists every column mapping and assumption.

Review fields exist only after delivery, so they go nowhere but `contacts`, stamped when the
customer answered and only when that is after delivery; shipments and orders carry no review
information, since delay features read them at dispatch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.contract.schema import CONTRACT

log = logging.getLogger(__name__)

# Relative to the project root; the data folder is shared between checkouts, never copied
# into the repository (see ../shared/data/README.md).
OLIST_RELATIVE_PATH = Path("../shared/data/olist_orders_sample/olist_classified_public_dataset.csv")

# Olist's platform clock: every naive timestamp in the file is São Paulo wall time, whatever
# the customer's state.
SOURCE_TIMEZONE = "America/Sao_Paulo"

# Each state's IANA zone, for the customer's quiet hours (zone.tab's Brazil entries; where a
# state spans two zones, the capital's).
STATE_TIMEZONES: dict[str, str] = {
    "AC": "America/Rio_Branco",
    "AL": "America/Maceio",
    "AM": "America/Manaus",
    "AP": "America/Belem",
    "BA": "America/Bahia",
    "CE": "America/Fortaleza",
    "DF": "America/Sao_Paulo",
    "ES": "America/Sao_Paulo",
    "GO": "America/Sao_Paulo",
    "MA": "America/Fortaleza",
    "MG": "America/Sao_Paulo",
    "MS": "America/Campo_Grande",
    "MT": "America/Cuiaba",
    "PA": "America/Belem",
    "PB": "America/Fortaleza",
    "PE": "America/Recife",
    "PI": "America/Fortaleza",
    "PR": "America/Sao_Paulo",
    "RJ": "America/Sao_Paulo",
    "RN": "America/Fortaleza",
    "RO": "America/Porto_Velho",
    "RR": "America/Boa_Vista",
    "RS": "America/Sao_Paulo",
    "SC": "America/Sao_Paulo",
    "SE": "America/Maceio",
    "SP": "America/Sao_Paulo",
    "TO": "America/Araguaina",
}

# Approximate geographic centres (latitude, longitude in degrees, 0.1° precision) of the 27
# federative units; used only when an origin state is assumed (see `OlistSource`).
STATE_CENTROIDS: dict[str, tuple[float, float]] = {
    "AC": (-9.0, -70.5),
    "AL": (-9.6, -36.6),
    "AM": (-4.0, -64.6),
    "AP": (1.4, -51.8),
    "BA": (-12.5, -41.7),
    "CE": (-5.2, -39.5),
    "DF": (-15.8, -47.8),
    "ES": (-19.6, -40.6),
    "GO": (-15.9, -49.6),
    "MA": (-5.1, -45.3),
    "MG": (-18.5, -44.6),
    "MS": (-20.5, -54.8),
    "MT": (-12.9, -56.0),
    "PA": (-3.8, -52.5),
    "PB": (-7.1, -36.8),
    "PE": (-8.3, -37.9),
    "PI": (-7.7, -42.7),
    "PR": (-24.6, -51.5),
    "RJ": (-22.3, -42.7),
    "RN": (-5.8, -36.6),
    "RO": (-10.9, -63.0),
    "RR": (2.1, -61.4),
    "RS": (-29.7, -53.3),
    "SC": (-27.3, -50.4),
    "SE": (-10.6, -37.4),
    "SP": (-22.2, -48.7),
    "TO": (-10.2, -48.3),
}

# Crowd-voted review labels (the file's `most_voted_subclass`; its `most_voted_class` holds
# the coarser groups such as problemas_de_entrega) to contact reasons. Labels left out
# (satisfeito, antes_prazo, or no majority) are praise, not a customer getting in touch.
COMPLAINT_REASONS: dict[str, str] = {
    "atrasado": "delivery_delay",
    "entrega_parcial": "missing_item",
    "baixa_qualidade": "complaint",
    "diferente_do_anunciado": "complaint",
    "devolucao": "return_refund",
    "outro_entrega": "other",
    "outro_pedido": "other",
}

# Statuses whose parcel reached the carrier; canceled, invoiced and processing orders never
# shipped.
SHIPPED_STATUSES = ("delivered", "shipped")

# The columns this adapter reads, with the dtype each is read as; timestamps are read as
# text and parsed afterwards so that an unparseable value drops one row, not the file.
SOURCE_DTYPES: dict[str, str] = {
    "id": "string",
    "order_status": "string",
    "order_products_value": "float64",
    "order_freight_value": "float64",
    "order_purchase_timestamp": "string",
    "order_aproved_at": "string",
    "order_estimated_delivery_date": "string",
    "order_delivered_customer_date": "string",
    "customer_state": "string",
    "review_score": "Int64",
    "review_answer_timestamp": "string",
    "most_voted_subclass": "string",
}

EARTH_RADIUS_KM = 6371.0088


def default_olist_path() -> Path:
    """Where the shared Olist sample lives for this checkout.

    The file sits beside the project, in `../shared/data/olist_orders_sample/` relative to
    the project root (the folder holding `pyproject.toml`), so checkouts share one copy. The
    path is resolved from this module's location, not the working directory; the file may
    be absent.

    Returns:
        Absolute path of `olist_classified_public_dataset.csv`.
    """
    project_root = Path(__file__).resolve().parents[2]
    return (project_root / OLIST_RELATIVE_PATH).resolve()


def read_olist_csv(path: Path) -> pd.DataFrame:
    """Read the columns this adapter uses, with explicit dtypes and timestamps left as text.

    Args:
        path: The Olist classified CSV.

    Returns:
        One row per line of the file, columns as in `SOURCE_DTYPES`.

    Raises:
        ValueError: A column of `SOURCE_DTYPES` is missing from the header.
    """
    header = pd.read_csv(path, nrows=0).columns
    missing = [c for c in SOURCE_DTYPES if c not in header]
    if missing:
        raise ValueError(f"{path} lacks Olist columns: {', '.join(missing)}")
    return pd.read_csv(path, usecols=list(SOURCE_DTYPES), dtype=SOURCE_DTYPES)


def local_to_utc(values: pd.Series, tz: str = SOURCE_TIMEZONE) -> pd.Series:
    """Read naive wall-clock text as times in `tz` and return UTC instants.

    Around daylight-saving changes the mapping is made deterministic: a repeated hour
    (clocks set back) is read as standard time, the later of the two instants, and a
    skipped hour (clocks set forward) is moved forward to the first valid instant.

    Args:
        values: Timestamps as text, e.g. `2017-08-30 11:41:01.000000`; missing or
            unparseable values become NaT.
        tz: IANA zone of the wall clock.

    Returns:
        `datetime64[us, UTC]` values, index kept.
    """
    return _localize(pd.to_datetime(values, format="ISO8601", errors="coerce"), tz)


def end_of_local_day_utc(values: pd.Series, tz: str = SOURCE_TIMEZONE) -> pd.Series:
    """The last microsecond of each value's local calendar day, as a UTC instant.

    A promise of "by 2017-09-21" holds until that day ends where it was made. Computed as the
    next local midnight less one microsecond, so a day whose midnight was skipped by a
    daylight-saving change still ends when the next day actually begins.

    Args:
        values: Dates (or timestamps, whose time of day is ignored) as text.
        tz: IANA zone of the calendar.

    Returns:
        `datetime64[us, UTC]` values, index kept.
    """
    day = pd.to_datetime(values, format="ISO8601", errors="coerce").dt.normalize()
    return _localize(day + pd.Timedelta(days=1), tz) - pd.Timedelta(microseconds=1)


def _localize(naive: pd.Series, tz: str) -> pd.Series:
    standard_time = np.zeros(len(naive), dtype=bool)
    local = naive.astype("datetime64[us]").dt.tz_localize(
        tz, ambiguous=standard_time, nonexistent="shift_forward"
    )
    return local.dt.tz_convert("UTC")


def haversine_km(origin: tuple[float, float], lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Great-circle distance in km from one (latitude, longitude) point to many."""
    lat0, lon0 = np.radians(origin[0]), np.radians(origin[1])
    lat1, lon1 = np.radians(lat), np.radians(lon)
    a = (
        np.sin((lat1 - lat0) / 2) ** 2
        + np.cos(lat0) * np.cos(lat1) * np.sin((lon1 - lon0) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a))


@dataclass
class OlistTables:
    """The mapped contract tables and how many source rows each step left out.

    Attributes:
        tables: Contract tables by name, in the contract's exact Arrow schemas.
        dropped: Rows left out, by reason (only reasons that occurred).
    """

    tables: dict[str, pa.Table]
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, mask: pd.Series, by_design: bool = False) -> pd.Series:
        """Record how many rows `mask` removes; return the rows to keep.

        Args:
            reason: Why, as a key of `dropped`.
            mask: True for the rows to leave out.
            by_design: The rows are fine but excluded by a mapping rule (logged at INFO
                rather than WARNING).
        """
        count = int(mask.sum())
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + count
            level = logging.INFO if by_design else logging.WARNING
            log.log(level, "olist: left out %d rows: %s", count, reason)
        return ~mask


def _arrow(name: str, frame: pd.DataFrame, key: str) -> pa.Table:
    schema = CONTRACT[name].source_schema
    frame = frame.sort_values(key, kind="stable").reset_index(drop=True)
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


def olist_tables(raw: pd.DataFrame, origin_region: str | None = None) -> OlistTables:
    """Map Olist rows (as read by `read_olist_csv`) to contract tables.

    Args:
        raw: The Olist rows.
        origin_region: A state to assume every parcel left from (e.g. "SP", where most
            Olist sellers are), giving centroid-to-centroid distances; by default the origin
            is unknown: "BR" with distance 0.

    Returns:
        Tables `customers`, `orders`, `shipments` and `contacts`, sorted by key, and the
        counts of rows left out.

    Raises:
        ValueError: `origin_region` is not a Brazilian state code.
    """
    if origin_region is not None and origin_region not in STATE_CENTROIDS:
        raise ValueError(f"unknown origin state {origin_region!r}; use one of STATE_CENTROIDS")
    result = OlistTables(tables={})
    src = pd.DataFrame(
        {
            "order_id": raw["id"].str.strip(),
            "status": raw["order_status"].str.strip().str.lower(),
            "state": raw["customer_state"].str.strip().str.upper(),
            "order_ts": local_to_utc(raw["order_purchase_timestamp"]),
            "approved_ts": local_to_utc(raw["order_aproved_at"]),
            "promised_ts": end_of_local_day_utc(raw["order_estimated_delivery_date"]),
            "delivered_ts": local_to_utc(raw["order_delivered_customer_date"]),
            "products_value": raw["order_products_value"],
            "freight_value": raw["order_freight_value"],
            # The only column written with an explicit offset (+00:00), and its hour-of-day
            # profile sits three hours after the purchases' (night lull at 07-10 instead of
            # 04-07), so it is honoured as UTC.
            "answered_ts": pd.to_datetime(
                raw["review_answer_timestamp"], format="ISO8601", utc=True, errors="coerce"
            ).astype("datetime64[us, UTC]"),
            "score": raw["review_score"],
            "label": raw["most_voted_subclass"].str.strip(),
        }
    )

    keep = result.drop("missing order id", src["order_id"].isna() | (src["order_id"] == ""))
    src = src[keep]
    src = src[result.drop("duplicated order id", src["order_id"].duplicated(keep="first"))]
    src = src[result.drop("missing or unparseable purchase time", src["order_ts"].isna())]
    valid_value = (src["products_value"] >= 0) & (src["freight_value"] >= 0)
    src = src[result.drop("missing or negative order value", ~valid_value)]
    src = src.assign(amount=src["products_value"] + src["freight_value"])

    # The file has no customer key: every order is its own customer, so repeat purchases
    # (and churn) cannot be observed in this source.
    src = src.assign(customer_id="c" + src["order_id"])
    orders = src.assign(payment_method="other")
    result.tables["orders"] = _arrow("orders", orders, "order_id")

    state = src["state"].fillna("BR")
    customers = pd.DataFrame(
        {
            "customer_id": src["customer_id"],
            "signup_ts": src["order_ts"],
            "region": state,
            "timezone": state.map(STATE_TIMEZONES).fillna(SOURCE_TIMEZONE),
            "language": "pt",
            "preferred_channel": "email",
            "consent_email": True,
            "consent_sms": False,
            "consent_voice": False,
            "consent_marketing": False,
        }
    )
    result.tables["customers"] = _arrow("customers", customers, "customer_id")

    shipped = src[src["status"].isin(SHIPPED_STATUSES) | src["delivered_ts"].notna()]
    shipped = shipped[
        result.drop(
            "shipment: delivered status without a delivery time",
            (shipped["status"] == "delivered") & shipped["delivered_ts"].isna(),
        )
    ]
    shipped = shipped[
        result.drop("shipment: missing approval time (dispatch)", shipped["approved_ts"].isna())
    ]
    shipped = shipped[result.drop("shipment: missing promise", shipped["promised_ts"].isna())]
    # The contract's orderings: the validator would reject the whole batch otherwise.
    shipped = shipped[
        result.drop(
            "shipment: approved (dispatch) before purchase",
            shipped["approved_ts"] < shipped["order_ts"],
        )
    ]
    shipped = shipped[
        result.drop(
            "shipment: delivered before approval (dispatch)",
            shipped["delivered_ts"] < shipped["approved_ts"],
        )
    ]
    shipped = shipped[
        result.drop(
            "shipment: promised before approval (dispatch)",
            shipped["promised_ts"] < shipped["approved_ts"],
        )
    ]
    destination = shipped["state"].fillna("BR")
    if origin_region is None:
        origin, distance_km = "BR", np.zeros(len(shipped))
    else:
        lat = destination.map({s: c[0] for s, c in STATE_CENTROIDS.items()})
        lon = destination.map({s: c[1] for s, c in STATE_CENTROIDS.items()})
        distances = haversine_km(
            STATE_CENTROIDS[origin_region], lat.to_numpy(float), lon.to_numpy(float)
        )
        # A state outside the table has no centroid: 0, the contract's "unknown".
        origin, distance_km = origin_region, np.nan_to_num(distances, nan=0.0)
    shipments = pd.DataFrame(
        {
            "shipment_id": shipped["order_id"] + "-1",
            "order_id": shipped["order_id"],
            "carrier": "unknown",
            "service_level": "standard",
            "origin_region": origin,
            "destination_region": destination,
            "distance_km": distance_km,
            "shipped_ts": shipped["approved_ts"],
            "promised_ts": shipped["promised_ts"],
            "delivered_ts": shipped["delivered_ts"],
        }
    )
    result.tables["shipments"] = _arrow("shipments", shipments, "shipment_id")

    # Reviews become contacts only once the parcel is delivered, and only complaints.
    reviewed = shipped[shipped["delivered_ts"].notna()]
    reviewed = reviewed[reviewed["label"].isin(list(COMPLAINT_REASONS))]
    reviewed = reviewed[
        result.drop(
            "contact: complaint review answered before delivery or without a time",
            ~(reviewed["answered_ts"] > reviewed["delivered_ts"]),
            by_design=True,
        )
    ]
    score = reviewed["score"].where(reviewed["score"].between(1, 5))
    contacts = pd.DataFrame(
        {
            "contact_id": reviewed["order_id"] + "-review",
            "customer_id": reviewed["customer_id"],
            "order_id": reviewed["order_id"],
            "ts": reviewed["answered_ts"],
            "channel": "email",
            "language": "pt",
            "reason": reviewed["label"].map(COMPLAINT_REASONS),
            "handled_by": "human",
            # A review has no queue or handling: zeros, not estimates.
            "wait_s": 0.0,
            "handle_s": 0.0,
            "transfers": 0,
            # No customer contacts twice in this file, so no repeat contact is observed.
            "resolved_first_contact": True,
            "csat": score,
            "ces": pd.array([pd.NA] * len(reviewed), dtype="Int64"),
            "nps": pd.array([pd.NA] * len(reviewed), dtype="Int64"),
        }
    )
    result.tables["contacts"] = _arrow("contacts", contacts, "contact_id")
    return result


@dataclass(frozen=True)
class OlistSource:
    """Olist's public classified orders sample, as contract tables.

    Attributes:
        path: The CSV file (see `default_olist_path`).
        name: Source name recorded by ingest.
        origin_region: Assumed origin state of every parcel; None leaves it unknown.
    """

    path: Path
    name: str = "olist"
    origin_region: str | None = None

    def write(self, out_dir: Path) -> None:
        """Write `customers`, `orders`, `shipments` and `contacts` Parquet files."""
        raw = read_olist_csv(self.path)
        mapped = olist_tables(raw, origin_region=self.origin_region)
        for table_name, table in mapped.tables.items():
            pq.write_table(table, out_dir / f"{table_name}.parquet")
        rows = ", ".join(f"{n} {t.num_rows}" for n, t in mapped.tables.items())
        log.info(
            "olist: %d source rows -> %s; %d rows left out",
            len(raw),
            rows,
            sum(mapped.dropped.values()),
        )
