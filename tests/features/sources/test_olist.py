"""The Olist adapter: the mapping row by row on tiny hand-made files, then the real sample
against the contract (skipped when ../shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.contract.schema import CONTRACT
from features.contract.validate import validate_folder
from features.ingest import check, stage
from features.sources.olist import (
    SOURCE_DTYPES,
    STATE_CENTROIDS,
    STATE_TIMEZONES,
    OlistSource,
    default_olist_path,
    end_of_local_day_utc,
    local_to_utc,
    olist_tables,
    read_olist_csv,
)

DATA_PATH = default_olist_path()
# Only the tests of the real sample need it; the mapping tests run everywhere.
needs_data = pytest.mark.skipif(
    not DATA_PATH.is_file(), reason=f"Olist sample not found at {DATA_PATH} (shared data)"
)
UTC = pa.timestamp("us", tz="UTC")
HEADER = [*SOURCE_DTYPES, "review_comment_message"]

# Three orders around São Paulo's 2017/18 daylight-saving changes: clocks went forward at
# midnight starting 2017-10-15 and back at midnight ending 2018-02-17.
THREE_ROWS = [
    # Delivered late; promise day 2017-10-14 ends at the skipped midnight; a late complaint.
    {
        "id": "1",
        "order_status": "delivered",
        "order_products_value": "100.0",
        "order_freight_value": "10.5",
        "order_purchase_timestamp": "2017-10-01 10:00:00.000000",
        "order_aproved_at": "2017-10-01 10:30:00.000000",
        "order_estimated_delivery_date": "2017-10-14 00:00:00.000000",
        "order_delivered_customer_date": "2017-10-16 12:00:00.000000",
        "customer_state": "SP",
        "review_score": "2",
        "review_answer_timestamp": "2017-10-17 15:00:00+00:00",
        "most_voted_subclass": "atrasado",
        "review_comment_message": "demorou demais para chegar",
    },
    # Delivered early, bought in the repeated hour; praise is not a contact.
    {
        "id": "2",
        "order_status": "delivered",
        "order_products_value": "50.0",
        "order_freight_value": "0.0",
        "order_purchase_timestamp": "2018-02-17 23:30:00.000000",
        "order_aproved_at": "2018-02-18 00:10:00.000000",
        "order_estimated_delivery_date": "2018-03-01 00:00:00.000000",
        "order_delivered_customer_date": "2018-02-25 09:00:00.000000",
        "customer_state": "AM",
        "review_score": "5",
        "review_answer_timestamp": "2018-02-26 12:00:00+00:00",
        "most_voted_subclass": "satisfeito",
        "review_comment_message": "chegou antes do prazo adorei",
    },
    # Canceled: an order and a customer, no parcel, so its complaint is no contact.
    {
        "id": "3",
        "order_status": "canceled",
        "order_products_value": "30.0",
        "order_freight_value": "5.0",
        "order_purchase_timestamp": "2017-03-01 09:00:00.000000",
        "order_aproved_at": "2017-03-01 09:05:00.000000",
        "order_estimated_delivery_date": "2017-03-20 00:00:00.000000",
        "order_delivered_customer_date": "",
        "customer_state": "RJ",
        "review_score": "1",
        "review_answer_timestamp": "2017-03-25 10:00:00+00:00",
        "most_voted_subclass": "devolucao",
        "review_comment_message": "cancelaram meu pedido sem aviso",
    },
]


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def write_csv(path: Path, rows: list[dict[str, str]], columns: list[str] = HEADER) -> Path:
    pd.DataFrame(rows, columns=columns, dtype=str).to_csv(path, index=True)
    return path


def mapped(tmp_path: Path, rows: list[dict[str, str]], **kw) -> dict[str, list[dict]]:
    raw = read_olist_csv(write_csv(tmp_path / "olist.csv", rows))
    return {name: t.to_pylist() for name, t in olist_tables(raw, **kw).tables.items()}


def test_three_rows_map_to_exactly_these_rows(tmp_path: Path) -> None:
    tables = mapped(tmp_path, THREE_ROWS)
    assert tables["orders"] == [
        {
            "order_id": "1",
            "customer_id": "c1",
            "order_ts": utc("2017-10-01 13:00"),
            "amount": 110.5,
            "payment_method": "other",
        },
        {
            "order_id": "2",
            "customer_id": "c2",
            # 23:30 happened twice that night; read as standard time (UTC-3), the later one.
            "order_ts": utc("2018-02-18 02:30"),
            "amount": 50.0,
            "payment_method": "other",
        },
        {
            "order_id": "3",
            "customer_id": "c3",
            "order_ts": utc("2017-03-01 12:00"),
            "amount": 35.0,
            "payment_method": "other",
        },
    ]
    common = {
        "language": "pt",
        "preferred_channel": "email",
        "consent_email": True,
        "consent_sms": False,
        "consent_voice": False,
        "consent_marketing": False,
    }
    assert tables["customers"] == [
        {
            "customer_id": "c1",
            "signup_ts": utc("2017-10-01 13:00"),
            "region": "SP",
            "timezone": "America/Sao_Paulo",
            **common,
        },
        {
            "customer_id": "c2",
            "signup_ts": utc("2018-02-18 02:30"),
            "region": "AM",
            "timezone": "America/Manaus",
            **common,
        },
        {
            "customer_id": "c3",
            "signup_ts": utc("2017-03-01 12:00"),
            "region": "RJ",
            "timezone": "America/Sao_Paulo",
            **common,
        },
    ]
    parcel = {
        "carrier": "unknown",
        "service_level": "standard",
        "origin_region": "BR",
        "distance_km": 0.0,
    }
    assert tables["shipments"] == [
        {
            "shipment_id": "1-1",
            "order_id": "1",
            **parcel,
            "destination_region": "SP",
            "shipped_ts": utc("2017-10-01 13:30"),
            # 2017-10-15 00:00 did not exist locally: the day ended at 01:00 UTC-2.
            "promised_ts": utc("2017-10-15 02:59:59.999999"),
            "delivered_ts": utc("2017-10-16 14:00"),
        },
        {
            "shipment_id": "2-1",
            "order_id": "2",
            **parcel,
            "destination_region": "AM",
            "shipped_ts": utc("2018-02-18 03:10"),
            "promised_ts": utc("2018-03-02 02:59:59.999999"),
            "delivered_ts": utc("2018-02-25 12:00"),
        },
    ]
    assert tables["contacts"] == [
        {
            "contact_id": "1-review",
            "customer_id": "c1",
            "order_id": "1",
            "ts": utc("2017-10-17 15:00"),
            "channel": "email",
            "language": "pt",
            "reason": "delivery_delay",
            "handled_by": "human",
            "wait_s": 0.0,
            "handle_s": 0.0,
            "transfers": 0,
            "resolved_first_contact": True,
            "csat": 2,
            "ces": None,
            "nps": None,
        }
    ]


def test_tables_have_the_contracts_exact_schemas(tmp_path: Path) -> None:
    raw = read_olist_csv(write_csv(tmp_path / "olist.csv", THREE_ROWS))
    for name, table in olist_tables(raw).tables.items():
        assert table.schema == CONTRACT[name].source_schema


def test_written_folder_passes_the_contract(tmp_path: Path) -> None:
    source = OlistSource(write_csv(tmp_path / "olist.csv", THREE_ROWS))
    out = tmp_path / "raw"
    out.mkdir()
    source.write(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "contacts.parquet",
        "customers.parquet",
        "orders.parquet",
        "shipments.parquet",
    ]
    report = validate_folder(out)
    assert report.violations == []


@pytest.mark.parametrize(
    ("change", "table", "expected_ids", "reason"),
    [
        (
            {"order_purchase_timestamp": ""},
            "orders",
            [],
            "missing or unparseable purchase time",
        ),
        (
            {"order_purchase_timestamp": "not a date"},
            "orders",
            [],
            "missing or unparseable purchase time",
        ),
        ({"order_freight_value": "-1"}, "orders", [], "missing or negative order value"),
        ({"order_products_value": ""}, "orders", [], "missing or negative order value"),
        (
            {"order_delivered_customer_date": "2017-10-01 10:10:00.000000"},
            "shipments",
            [],
            "shipment: delivered before approval (dispatch)",
        ),
        (
            {"order_estimated_delivery_date": "2017-09-30 00:00:00.000000"},
            "shipments",
            [],
            "shipment: promised before approval (dispatch)",
        ),
        (
            {"review_answer_timestamp": "2017-10-16 13:00:00+00:00"},
            "contacts",
            [],
            "contact: complaint review answered before delivery or without a time",
        ),
    ],
)
def test_unmappable_rows_are_dropped_and_counted(
    tmp_path: Path, change: dict[str, str], table: str, expected_ids: list[str], reason: str
) -> None:
    raw = read_olist_csv(write_csv(tmp_path / "olist.csv", [{**THREE_ROWS[0], **change}]))
    result = olist_tables(raw)
    key = CONTRACT[table].key[0]
    assert result.tables[table].column(key).to_pylist() == expected_ids
    assert result.dropped == {reason: 1}


def test_shipped_but_undelivered_order_is_an_open_parcel(tmp_path: Path) -> None:
    row = {**THREE_ROWS[0], "order_status": "shipped", "order_delivered_customer_date": ""}
    tables = mapped(tmp_path, [row])
    assert [s["delivered_ts"] for s in tables["shipments"]] == [None]
    # Without delivery there is no after-delivery review to turn into a contact.
    assert tables["contacts"] == []


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        ("atrasado", "delivery_delay"),
        ("entrega_parcial", "missing_item"),
        ("baixa_qualidade", "complaint"),
        ("diferente_do_anunciado", "complaint"),
        ("devolucao", "return_refund"),
        ("outro_pedido", "other"),
        ("satisfeito", None),
        ("antes_prazo", None),
        ("", None),
    ],
)
def test_complaint_labels_become_contact_reasons(
    tmp_path: Path, label: str, reason: str | None
) -> None:
    tables = mapped(tmp_path, [{**THREE_ROWS[0], "most_voted_subclass": label}])
    assert [c["reason"] for c in tables["contacts"]] == ([reason] if reason else [])


def test_assumed_origin_gives_centroid_distances(tmp_path: Path) -> None:
    tables = mapped(tmp_path, THREE_ROWS, origin_region="SP")
    by_destination = {s["destination_region"]: s for s in tables["shipments"]}
    assert by_destination["SP"]["distance_km"] == 0.0
    assert by_destination["SP"]["origin_region"] == "SP"
    # São Paulo to Amazonas is roughly 2,600 km as the crow flies.
    assert 2_400 < by_destination["AM"]["distance_km"] < 2_900


def test_unknown_origin_state_is_an_error(tmp_path: Path) -> None:
    raw = read_olist_csv(write_csv(tmp_path / "olist.csv", THREE_ROWS))
    with pytest.raises(ValueError, match="unknown origin state"):
        olist_tables(raw, origin_region="XX")


def test_missing_column_is_an_error(tmp_path: Path) -> None:
    columns = [c for c in HEADER if c != "order_aproved_at"]
    path = write_csv(tmp_path / "olist.csv", THREE_ROWS, columns)
    with pytest.raises(ValueError, match="order_aproved_at"):
        read_olist_csv(path)


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("2017-08-30 11:41:01.000000", "2017-08-30 14:41:01"),
        ("2017-12-01 12:00:00.500000", "2017-12-01 14:00:00.5"),
        # Skipped hour (clocks forward at midnight): moved to 01:00 UTC-2.
        ("2017-10-15 00:30:00.000000", "2017-10-15 03:00:00"),
        # Repeated hour (clocks back at midnight): standard time.
        ("2018-02-17 23:15:00.000000", "2018-02-18 02:15:00"),
    ],
)
def test_local_to_utc(local: str, expected: str) -> None:
    assert local_to_utc(pd.Series([local]))[0] == utc(expected)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        ("2017-09-21 00:00:00.000000", "2017-09-22 02:59:59.999999"),
        ("2017-12-21", "2017-12-22 01:59:59.999999"),
        ("2018-02-17 00:00:00", "2018-02-18 02:59:59.999999"),
    ],
)
def test_end_of_local_day_utc(day: str, expected: str) -> None:
    assert end_of_local_day_utc(pd.Series([day]))[0] == utc(expected)


def test_default_path_points_at_the_shared_data_folder() -> None:
    assert DATA_PATH.is_absolute()
    assert DATA_PATH.parts[-3:] == (
        "data",
        "olist_orders_sample",
        "olist_classified_public_dataset.csv",
    )
    assert DATA_PATH.parents[2] == Path(__file__).resolve().parents[3].parent / "shared"


def test_state_tables_cover_the_27_federative_units() -> None:
    assert len(STATE_TIMEZONES) == len(STATE_CENTROIDS) == 27
    assert set(STATE_TIMEZONES) == set(STATE_CENTROIDS)


@pytest.fixture(scope="module")
def olist_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("olist")
    OlistSource(DATA_PATH).write(out)
    return out


@pytest.fixture(scope="module")
def olist(olist_raw: Path) -> dict[str, pa.Table]:
    return {p.stem: pq.read_table(p) for p in sorted(olist_raw.glob("*.parquet"))}


@pytest.mark.real_data
@needs_data
class TestRealSample:
    """The shared 3,584-order sample, written once per module."""

    def test_passes_the_contract(self, olist_raw: Path) -> None:
        report = validate_folder(olist_raw)
        assert report.violations == []

    def test_counts_are_sane(self, olist: dict[str, pa.Table]) -> None:
        assert set(olist) == {"customers", "orders", "shipments", "contacts"}
        # Every order has a purchase time and a value: none is dropped.
        assert olist["orders"].num_rows == 3_584
        assert olist["customers"].num_rows == olist["orders"].num_rows
        # 3,467 delivered plus 48 in transit, less 3 delivered before their approval.
        assert 3_400 <= olist["shipments"].num_rows <= 3_515
        assert 0 < olist["contacts"].num_rows < olist["shipments"].num_rows

    def test_late_rate(self, olist: dict[str, pa.Table]) -> None:
        shipments = olist["shipments"].to_pandas()
        delivered = shipments[shipments["delivered_ts"].notna()]
        late_rate = (delivered["delivered_ts"] > delivered["promised_ts"]).mean()
        assert 0.05 < late_rate < 0.20

    def test_timestamps_are_utc(self, olist: dict[str, pa.Table]) -> None:
        for name, table in olist.items():
            for f in table.schema:
                if pa.types.is_timestamp(f.type):
                    assert f.type == UTC, f"{name}.{f.name}"

    def test_review_data_stays_out_of_dispatch_tables(self, olist: dict[str, pa.Table]) -> None:
        reviews = pd.read_csv(DATA_PATH, usecols=["review_comment_message"], dtype=str)
        messages = [m for m in reviews["review_comment_message"].dropna() if len(m) >= 4]
        for name in ("orders", "shipments", "customers"):
            table = olist[name]
            assert not any(
                word in f.name for f in table.schema for word in ("review", "vote", "score")
            )
            cells = "\n".join(
                str(v) for c in table.columns if pa.types.is_string(c.type) for v in c.to_pylist()
            )
            assert not [m for m in messages if m in cells], name

    def test_contacts_come_after_delivery(self, olist: dict[str, pa.Table]) -> None:
        contacts = olist["contacts"].to_pandas()
        shipments = olist["shipments"].to_pandas()
        joined = contacts.merge(shipments, on="order_id")
        assert len(joined) == len(contacts)
        assert (joined["ts"] > joined["delivered_ts"]).all()

    def test_is_deterministic(self, olist: dict[str, pa.Table], tmp_path: Path) -> None:
        OlistSource(DATA_PATH).write(tmp_path)
        for name, table in olist.items():
            assert pq.read_table(tmp_path / f"{name}.parquet").equals(table), name

    def test_ingests(self, tmp_path: Path) -> None:
        tables = check(stage(OlistSource(DATA_PATH), tmp_path / "raw"))
        assert tables["orders"].num_rows == 3_584
