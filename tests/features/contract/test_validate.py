"""The contract catches each kind of malformed input with a message naming table, column,
rows and rule — and never a stack trace."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from aftersale.cli import app
from features.contract.schema import CONTRACT
from features.contract.validate import load_folder, validate_folder

UTC = "+00:00"


def small_business() -> dict[str, pd.DataFrame]:
    """A tiny valid business, written as text the way a CSV export would hold it."""
    customers = pd.DataFrame(
        {
            "customer_id": ["c1", "c2", "c3"],
            "signup_ts": [f"2024-01-0{i}T09:00:00{UTC}" for i in (1, 2, 3)],
            "region": ["DE-N", "FR", "PL"],
            "timezone": ["Europe/Berlin", "Europe/Paris", "Europe/Warsaw"],
            "language": ["de", "fr", "pl"],
            "preferred_channel": ["email", "sms", "voice"],
            "consent_email": ["true", "true", "false"],
            "consent_sms": ["false", "true", "false"],
            "consent_voice": ["false", "false", "true"],
            "consent_marketing": ["true", "false", "true"],
        }
    )
    products = pd.DataFrame(
        {
            "product_id": ["p1", "p2"],
            "category": ["fashion", "books"],
            "price": ["40.0", "12.5"],
            "margin": ["0.4", "0.2"],
            "weight_g": ["500", "300"],
        }
    )
    orders = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3"],
            "customer_id": ["c1", "c2", "c3"],
            "order_ts": [f"2024-02-0{i}T10:00:00{UTC}" for i in (1, 2, 3)],
            "amount": ["52.5", "40.0", "12.5"],
            "payment_method": ["card", "invoice", "paypal"],
        }
    )
    order_items = pd.DataFrame(
        {
            "order_id": ["o1", "o1", "o2", "o3"],
            "product_id": ["p1", "p2", "p1", "p2"],
            "qty": ["1", "1", "1", "1"],
            "unit_price": ["40.0", "12.5", "40.0", "12.5"],
        }
    )
    shipments = pd.DataFrame(
        {
            "shipment_id": ["s1", "s2", "s3"],
            "order_id": ["o1", "o2", "o3"],
            "carrier": ["swiftship", "budgetex", "swiftship"],
            "service_level": ["standard", "economy", "express"],
            "origin_region": ["DE-N", "DE-N", "PL"],
            "destination_region": ["DE-N", "FR", "PL"],
            "distance_km": ["120", "880", "40"],
            "shipped_ts": [f"2024-02-0{i}T18:00:00{UTC}" for i in (1, 2, 3)],
            "promised_ts": [f"2024-02-0{i}T23:59:00{UTC}" for i in (4, 6, 4)],
            "delivered_ts": [f"2024-02-03T12:00:00{UTC}", f"2024-02-08T12:00:00{UTC}", None],
        }
    )
    tracking_events = pd.DataFrame(
        {
            "event_id": ["e1", "e2", "e3"],
            "shipment_id": ["s1", "s1", "s2"],
            "event_type": ["dispatched", "delivered", "dispatched"],
            "event_ts": [
                f"2024-02-01T18:00:00{UTC}",
                f"2024-02-03T12:00:00{UTC}",
                f"2024-02-02T18:00:00{UTC}",
            ],
        }
    )
    contacts = pd.DataFrame(
        {
            "contact_id": ["k1", "k2"],
            "customer_id": ["c2", "c3"],
            "order_id": ["o2", None],
            "ts": [f"2024-02-07T10:00:00{UTC}", f"2024-03-01T10:00:00{UTC}"],
            "channel": ["voice", "chat"],
            "language": ["fr", "pl"],
            "reason": ["delivery_delay", "other"],
            "handled_by": ["human", "ai_agent"],
            "wait_s": ["120", "5"],
            "handle_s": ["300", "60"],
            "transfers": ["0", "1"],
            "resolved_first_contact": ["true", "false"],
            "csat": ["4", None],
            "ces": ["2", None],
            "nps": ["8", None],
        }
    )
    return {
        "customers": customers,
        "products": products,
        "orders": orders,
        "order_items": order_items,
        "shipments": shipments,
        "tracking_events": tracking_events,
        "contacts": contacts,
    }


def write(folder: Path, tables: dict[str, pd.DataFrame], fmt: str = "csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        if fmt == "csv":
            frame.to_csv(folder / f"{name}.csv", index=False)
        else:
            typed = _typed(name, frame)
            pq.write_table(typed, folder / f"{name}.parquet")
    return folder


def _typed(name: str, frame: pd.DataFrame) -> pa.Table:
    """Parse the text frame into the contract's Arrow types, as a Parquet writer would."""
    schema = CONTRACT[name]
    arrays = {}
    for column in schema.columns:
        if column.name not in frame:
            continue
        text = frame[column.name]
        if column.kind == "timestamp":
            arrays[column.name] = pa.array(pd.to_datetime(text, utc=True), type=column.arrow_type)
        elif column.kind == "bool":
            arrays[column.name] = pa.array(text.map({"true": True, "false": False}))
        elif column.kind in ("int", "float"):
            arrays[column.name] = pa.array(pd.to_numeric(text), type=column.arrow_type)
        else:
            arrays[column.name] = pa.array(text, type=pa.string())
    return pa.table(arrays)


def messages(folder: Path) -> list[str]:
    return [str(v) for v in validate_folder(folder).violations]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_valid_business_passes(tmp_path: Path, fmt: str) -> None:
    report = validate_folder(write(tmp_path, small_business(), fmt))
    assert report.ok, [str(v) for v in report.violations]
    assert report.rows["orders"] == 3
    assert report.rows["contacts"] == 2
    assert any("returns: absent (optional)" in n for n in report.notes)


def test_typed_values_read_back(tmp_path: Path) -> None:
    tables, report = load_folder(write(tmp_path, small_business()))
    assert report.ok
    shipments = tables["shipments"]
    assert shipments.schema.field("shipped_ts").type == pa.timestamp("us", tz="UTC")
    assert shipments.column("delivered_ts").null_count == 1
    assert tables["contacts"].column("resolved_first_contact").to_pylist() == [True, False]
    assert tables["contacts"].column("csat").to_pylist() == [4, None]


def test_reference_to_unknown_customers_names_rows(tmp_path: Path) -> None:
    tables = small_business()
    orders = tables["orders"]
    extra = pd.DataFrame(
        {
            "order_id": ["o17", "o18", "o90"],
            "customer_id": ["c404", "c405", "c404"],
            "order_ts": [f"2024-02-05T10:00:00{UTC}"] * 3,
            "amount": ["1.0"] * 3,
            "payment_method": ["card"] * 3,
        }
    )
    tables["orders"] = pd.concat([orders, extra], ignore_index=True)
    assert messages(write(tmp_path, tables)) == [
        "orders.customer_id: 3 rows reference unknown customers (order_id o17, o18, o90)"
    ]


def test_wrong_delimiter(tmp_path: Path) -> None:
    tables = small_business()
    write(tmp_path, tables)
    tables["orders"].to_csv(tmp_path / "orders.csv", index=False, sep=";")
    (found,) = messages(tmp_path)
    assert found.startswith("orders: orders.csv is not comma-delimited")
    assert "';'" in found


def test_missing_columns(tmp_path: Path) -> None:
    tables = small_business()
    tables["orders"] = tables["orders"].drop(columns=["amount", "payment_method"])
    (found,) = messages(write(tmp_path, tables))
    assert found == "orders: missing columns: amount, payment_method (orders.csv)"


def test_unparseable_timestamps(tmp_path: Path) -> None:
    tables = small_business()
    tables["orders"].loc[1, "order_ts"] = "yesterday"
    (found,) = messages(write(tmp_path, tables))
    assert found == "orders.order_ts: 1 row has unparseable timestamps (order_id o2='yesterday')"


def test_duplicated_keys(tmp_path: Path) -> None:
    tables = small_business()
    tables["orders"].loc[2, "order_id"] = "o1"
    tables["order_items"] = tables["order_items"].iloc[:3]
    tables["shipments"] = tables["shipments"].iloc[:2]
    (found,) = messages(write(tmp_path, tables))
    assert found == "orders.order_id: 2 rows have a duplicated key (order_id o1, o1)"


def test_duplicated_composite_key(tmp_path: Path) -> None:
    tables = small_business()
    items = tables["order_items"]
    tables["order_items"] = pd.concat([items, items.iloc[[0]]], ignore_index=True)
    (found,) = messages(write(tmp_path, tables))
    assert found == (
        "order_items.order_id/product_id: 2 rows have a duplicated key "
        "(order_id/product_id o1/p1, o1/p1)"
    )


def test_negative_amounts(tmp_path: Path) -> None:
    tables = small_business()
    tables["orders"].loc[0, "amount"] = "-5.0"
    (found,) = messages(write(tmp_path, tables))
    assert found == "orders.amount: 1 row is negative (order_id o1=-5.0)"


def test_delivered_before_shipped(tmp_path: Path) -> None:
    tables = small_business()
    tables["shipments"].loc[0, "delivered_ts"] = f"2024-02-01T08:00:00{UTC}"
    (found,) = messages(write(tmp_path, tables))
    assert found.startswith(
        "shipments.delivered_ts: 1 row is earlier than shipped_ts (shipment_id s1="
    )


def test_naive_mixed_with_aware_timestamps(tmp_path: Path) -> None:
    tables = small_business()
    tables["orders"].loc[2, "order_ts"] = "2024-02-03T10:00:00"
    (found,) = messages(write(tmp_path, tables))
    assert found == (
        "orders.order_ts: 1 row is timezone-naive while the rest of the column is not "
        "(order_id o3='2024-02-03T10:00:00')"
    )


def test_shipped_before_ordered(tmp_path: Path) -> None:
    tables = small_business()
    tables["shipments"].loc[1, "shipped_ts"] = f"2024-01-30T10:00:00{UTC}"
    (found,) = messages(write(tmp_path, tables))
    assert found.startswith("shipments.shipped_ts: 1 row is earlier than the order's order_ts")
    assert "(shipment_id s2=" in found


@pytest.mark.parametrize(
    ("table", "column", "value", "expected"),
    [
        ("shipments", "service_level", "overnight", "have a value outside"),
        ("contacts", "csat", "9", "is above 5"),
        ("contacts", "reason", "weather", "have a value outside"),
        ("customers", "timezone", "Mars/Olympus", "is not IANA time zones"),
        ("customers", "language", "German", "does not match the pattern"),
        ("order_items", "qty", "1.5", "is not whole numbers"),
        ("order_items", "qty", "0", "is below 1"),
        ("contacts", "resolved_first_contact", "maybe", "is not true/false"),
        ("products", "price", "twelve", "is not numbers"),
    ],
)
def test_column_rules(tmp_path: Path, table: str, column: str, value: str, expected: str) -> None:
    tables = small_business()
    tables[table].loc[0, column] = value
    found = messages(write(tmp_path, tables))
    assert len(found) == 1, found
    assert found[0].startswith(f"{table}.{column}: 1 row ")
    assert expected.split(" ", 1)[1] in found[0]


def test_required_value_missing(tmp_path: Path) -> None:
    tables = small_business()
    tables["customers"].loc[1, "region"] = None
    (found,) = messages(write(tmp_path, tables))
    assert found == "customers.region: 1 row is missing a value (customer_id c2)"


def test_required_table_missing(tmp_path: Path) -> None:
    tables = small_business()
    del tables["customers"]
    found = messages(write(tmp_path, tables))
    assert "customers: required table is missing (customers.parquet or .csv)" in found


def test_only_required_tables(tmp_path: Path) -> None:
    tables = small_business()
    report = validate_folder(write(tmp_path, {k: tables[k] for k in ("customers", "orders")}))
    assert report.ok
    assert set(report.rows) == {"customers", "orders"}


def test_reference_to_absent_optional_table_is_noted(tmp_path: Path) -> None:
    tables = small_business()
    del tables["products"]
    report = validate_folder(write(tmp_path, tables))
    assert report.ok
    assert "order_items.product_id: not checked, products is absent" in report.notes


def test_ragged_csv_row(tmp_path: Path) -> None:
    write(tmp_path, small_business())
    with (tmp_path / "orders.csv").open("a") as fh:
        fh.write("o9,c1,2024-02-09T10:00:00+00:00,3.0,card,extra\n")
    lines = (tmp_path / "orders.csv").read_text().splitlines()
    (found,) = messages(tmp_path)
    # The line is named; the row itself (personal values, in general) is not repeated.
    assert found == (
        f"orders: cannot parse orders.csv: line {len(lines)} has 6 fields where the header has 5"
    )
    assert "extra" not in found


def test_empty_and_corrupt_files(tmp_path: Path) -> None:
    write(tmp_path, small_business(), fmt="parquet")
    (tmp_path / "shipments.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "contacts.parquet").unlink()
    (tmp_path / "contacts.csv").write_text("")
    found = messages(tmp_path)
    assert any(f.startswith("shipments: cannot read shipments.parquet") for f in found)
    assert "contacts: contacts.csv is empty (no header row)" in found


def test_both_formats_is_ambiguous(tmp_path: Path) -> None:
    tables = small_business()
    write(tmp_path, tables)
    write(tmp_path, {"orders": tables["orders"]}, fmt="parquet")
    assert "orders: found both orders.parquet and orders.csv; keep one" in messages(tmp_path)


def test_naive_parquet_timestamps_are_utc(tmp_path: Path) -> None:
    tables = small_business()
    write(tmp_path, tables, fmt="parquet")
    orders = pq.read_table(tmp_path / "orders.parquet")
    naive = orders.set_column(2, "order_ts", orders.column("order_ts").cast(pa.timestamp("us")))
    pq.write_table(naive, tmp_path / "orders.parquet")
    loaded, report = load_folder(tmp_path)
    assert report.ok
    assert loaded["orders"].column("order_ts").type == pa.timestamp("us", tz="UTC")
    assert loaded["orders"].column("order_ts")[0].as_py().hour == 10


@pytest.fixture
def cli(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A runner whose data folder, where the command's log file goes, is a temporary one."""
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    return CliRunner()


def test_cli_reports_without_traceback(tmp_path: Path, cli: CliRunner) -> None:
    tables = small_business()
    tables["orders"].loc[0, "amount"] = "-1"
    tables["shipments"].loc[0, "delivered_ts"] = f"2024-01-31T08:00:00{UTC}"
    write(tmp_path, tables)
    result = cli.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "orders.amount: 1 row is negative (order_id o1=-1.0)" in result.output
    assert "shipments.delivered_ts: 1 row is earlier than shipped_ts" in result.output
    assert "2 violations" in result.output


def test_cli_accepts_valid_folder(tmp_path: Path, cli: CliRunner) -> None:
    result = cli.invoke(app, ["validate", str(write(tmp_path, small_business()))])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_cli_on_missing_folder(tmp_path: Path, cli: CliRunner) -> None:
    result = cli.invoke(app, ["validate", str(tmp_path / "nope")])
    # A usage error, named at the edge, like every malformed option.
    assert result.exit_code == 2
    words = " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())  # the box unwrapped
    assert "Invalid value for 'folder'" in words
    assert "does not exist" in words


# --- outreach: a polymorphic subject, propensities, holdouts ------------------------------------


def with_outreach(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The small business plus one logged outreach row per kind of subject."""
    tables["outreach"] = pd.DataFrame(
        {
            "outreach_id": ["ou1", "ou2", "ou3", "ou4"],
            "customer_id": ["c1", "c2", "c3", "c1"],
            "ts": [
                f"2024-02-02T09:00:00{UTC}",
                f"2024-02-07T12:00:00{UTC}",
                f"2024-05-01T09:30:00{UTC}",
                f"2024-02-05T10:00:00{UTC}",
            ],
            "action": [
                "delay_notice",
                "service_recovery_call",
                "winback_offer",
                "onboarding_followup",
            ],
            "channel": ["email", "voice", "email", "sms"],
            "subject_id": ["s1", "k1", None, "o1"],
            "propensity": ["0.45", "0.3", "0.05", "0.2"],
            "holdout": ["false", "false", "true", "false"],
        }
    )
    return tables


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_valid_outreach_passes(tmp_path: Path, fmt: str) -> None:
    tables, report = load_folder(write(tmp_path, with_outreach(small_business()), fmt))
    assert report.ok, [str(v) for v in report.violations]
    assert report.rows["outreach"] == 4
    assert tables["outreach"].column("holdout").to_pylist() == [False, False, True, False]
    assert tables["outreach"].column("subject_id").null_count == 1


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        (
            "action",
            "discount_blast",
            "outreach.action: 1 row has a value outside {delay_notice, service_recovery_call, "
            "winback_offer, payment_reminder, satisfaction_check, renewal_reminder, "
            "onboarding_followup, nps_survey} (outreach_id ou1='discount_blast')",
        ),
        ("propensity", "0", "outreach.propensity: 1 row is below 1e-09 (outreach_id ou1=0.0)"),
        ("propensity", "1.5", "outreach.propensity: 1 row is above 1 (outreach_id ou1=1.5)"),
        (
            "customer_id",
            "c404",
            "outreach.customer_id: 1 row references unknown customers (outreach_id ou1)",
        ),
        (
            "subject_id",
            "k1",
            "outreach.subject_id: 1 row references unknown shipments for action delay_notice "
            "(outreach_id ou1='k1')",
        ),
        ("channel", "fax", "outreach.channel: 1 row has a value outside {email, sms, voice}"),
        ("holdout", "perhaps", "outreach.holdout: 1 row is not true/false"),
    ],
)
def test_outreach_violations_are_named(
    tmp_path: Path, column: str, value: str, expected: str
) -> None:
    tables = with_outreach(small_business())
    tables["outreach"].loc[0, column] = value
    found = messages(write(tmp_path, tables))
    assert found[0].startswith(expected), found
    # An unknown customer also owns none of the subjects: said too, and nothing else.
    also = ["outreach.subject_id: 1 row names a subject of another customer_id"]
    rest = found[1:]
    assert len(rest) == (1 if column == "customer_id" else 0), found
    assert all(m.startswith(a) for m, a in zip(rest, also, strict=False)), found


@pytest.mark.parametrize(
    ("row", "subject", "owner"),
    [
        (0, "s2", "a shipment of another customer's order"),
        (1, "k2", "another customer's contact"),
        (3, "o2", "another customer's order"),
    ],
)
def test_outreach_about_someone_elses_subject_is_named(
    tmp_path: Path, row: int, subject: str, owner: str
) -> None:
    tables = with_outreach(small_business())
    tables["outreach"].loc[row, "subject_id"] = subject
    (found,) = messages(write(tmp_path, tables))
    assert found.startswith("outreach.subject_id: 1 row names a subject of another customer_id")
    assert f"='{subject}'" in found, owner


def test_outreach_before_signup(tmp_path: Path) -> None:
    tables = with_outreach(small_business())
    tables["outreach"].loc[1, "ts"] = f"2023-12-24T10:00:00{UTC}"
    (found,) = messages(write(tmp_path, tables))
    assert found.startswith(
        "outreach.ts: 1 row is earlier than the customer's signup_ts (outreach_id ou2="
    )


@pytest.mark.parametrize(
    ("row", "subject", "expected"),
    [
        (
            2,
            "o3",
            "outreach.subject_id: 1 row has a subject although action winback_offer takes none "
            "(outreach_id ou3='o3')",
        ),
        (0, None, "outreach.subject_id: 1 row is missing a subject for action delay_notice "),
        # A recovery call may be about a contact or a shipment, but not an order.
        (
            1,
            "o2",
            "outreach.subject_id: 1 row references unknown contacts or shipments for action "
            "service_recovery_call (outreach_id ou2='o2')",
        ),
        (
            3,
            "s1",
            "outreach.subject_id: 1 row references unknown orders for action "
            "onboarding_followup (outreach_id ou4='s1')",
        ),
    ],
)
def test_outreach_subject_must_be_of_its_actions_table(
    tmp_path: Path, row: int, subject: str | None, expected: str
) -> None:
    tables = with_outreach(small_business())
    tables["outreach"].loc[row, "subject_id"] = subject
    (found,) = messages(write(tmp_path, tables))
    assert found.startswith(expected), found


def test_outreach_subject_in_absent_table_is_noted(tmp_path: Path) -> None:
    tables = with_outreach(small_business())
    tables["outreach"].loc[3, ["action", "subject_id"]] = ["payment_reminder", "in7"]
    report = validate_folder(write(tmp_path, tables))
    assert report.ok, [str(v) for v in report.violations]
    assert "outreach.subject_id of payment_reminder: not checked, invoices absent" in report.notes


def test_ingest_rejects_bad_outreach_and_keeps_current_data(tmp_path: Path) -> None:
    from features import ingest, versioned
    from features.sources.base import FolderSource

    raw_root = tmp_path / "raw"
    good = write(tmp_path / "good", with_outreach(small_business()), fmt="parquet")
    first = versioned.publish(_staged_and_checked(ingest, FolderSource(good), raw_root))
    tables = with_outreach(small_business())
    tables["outreach"].loc[0, "subject_id"] = "k2"
    bad = write(tmp_path / "bad", tables, fmt="parquet")
    staging = ingest.stage(FolderSource(bad), raw_root)
    with pytest.raises(ingest.ContractError, match=r"outreach.subject_id: 1 row references"):
        ingest.check(staging)
    assert versioned.current(raw_root) == first
    assert pq.read_table(first / "outreach.parquet").num_rows == 4
    assert not staging.exists()


def _staged_and_checked(ingest, source, raw_root: Path) -> Path:
    staging = ingest.stage(source, raw_root)
    ingest.check(staging)
    return staging
