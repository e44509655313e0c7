"""Personal values stay out of messages: a rule broken by a personal column names the rows
by their keys, never by the value, while other columns' examples keep their values."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from aftersale.cli import app
from features.contract.schema import CONTRACT, PERSONAL_COLUMNS
from features.personal import DERIVED, PERSONAL_FEATURES
from models.served.reasons import Reason, reason_codes

# Values nothing else in the data or the messages could contain.
CANARY_ZONE = "Mars/Zq_Canary_Base"
CANARY_LANGUAGE = "ZQ-canary-language"
CANARY_CHANNEL = "zq-canary-pigeon"
CANARY_CONSENT = "zq-canary-maybe"
CANARY_PAYMENT = "zq-canary-barter"


def test_the_contract_marks_what_describes_a_person() -> None:
    customers = {c.name for c in CONTRACT["customers"].columns if c.personal}
    assert {"region", "timezone", "language", "preferred_channel"} <= customers
    assert "customer_id" not in PERSONAL_COLUMNS
    assert all(not c.personal for t in CONTRACT.values() for c in t.columns if c.name in t.key)
    # A derived feature embeds the values of a column the contract marks.
    assert all(column in PERSONAL_COLUMNS for column in DERIVED.values())
    assert PERSONAL_COLUMNS | set(DERIVED) == PERSONAL_FEATURES


def _set(folder: Path, name: str, column: str, rows: int, value: str) -> None:
    """Write `value` as text into the first `rows` rows of a column, retyped as text."""
    table = pq.read_table(folder / f"{name}.parquet")
    values = table.column(column).cast(pa.string()).to_pylist()
    values[:rows] = [value] * rows
    index = table.schema.get_field_index(column)
    pq.write_table(
        table.set_column(index, column, pa.array(values, pa.string())), folder / f"{name}.parquet"
    )


@pytest.fixture
def canary_dir(sim_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "raw"
    shutil.copytree(sim_dir, folder, ignore=shutil.ignore_patterns("_truth"))
    _set(folder, "customers", "timezone", 2, CANARY_ZONE)
    _set(folder, "customers", "language", 3, CANARY_LANGUAGE)
    _set(folder, "customers", "preferred_channel", 1, CANARY_CHANNEL)
    _set(folder, "customers", "consent_sms", 2, CANARY_CONSENT)
    _set(folder, "orders", "payment_method", 2, CANARY_PAYMENT)
    return folder


def test_validate_names_personal_rows_by_key_only(canary_dir: Path, tmp_path: Path) -> None:
    customers = pq.read_table(canary_dir / "customers.parquet")
    first = customers.column("customer_id")[0].as_py()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(tmp_path / "data"))
        result = CliRunner().invoke(app, ["validate", str(canary_dir)])
    assert result.exit_code == 1, result.output
    output = result.output
    for rule in (
        "customers.timezone: 2 rows are not IANA time zones",
        "customers.language: 3 rows do not match the pattern",
        "customers.preferred_channel: 1 row has a value outside",
        "customers.consent_sms: 2 rows are not true/false",
    ):
        assert rule in output, output
    assert f"customer_id {first}" in output, output
    for canary in (CANARY_ZONE, CANARY_LANGUAGE, CANARY_CHANNEL, CANARY_CONSENT):
        assert canary not in output, output
    # Not personal: the example keeps its value, so the check above can see one.
    assert f"={CANARY_PAYMENT!r}" in output, output


def test_a_ragged_csv_row_is_named_by_line_not_repeated(sim_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    shutil.copytree(sim_dir, folder, ignore=shutil.ignore_patterns("_truth"))
    customers = pq.read_table(folder / "customers.parquet")
    (folder / "customers.parquet").unlink()
    header = ",".join(customers.column_names)
    first = ",".join(str(v) for v in customers.slice(0, 1).to_pylist()[0].values())
    ragged = first.replace(customers.column("timezone")[0].as_py(), f"{CANARY_ZONE},extra")
    (folder / "customers.csv").write_text(f"{header}\n{first}\n{ragged}\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(tmp_path / "data"))
        result = CliRunner().invoke(app, ["validate", str(folder)])
    assert result.exit_code == 1, result.output
    width = len(customers.column_names)
    assert f"line 3 has {width + 1} fields where the header has {width}" in result.output
    assert CANARY_ZONE not in result.output


def test_withheld_reasons_name_the_feature_without_its_value() -> None:
    import pandas as pd

    data = pd.DataFrame({"timezone": [CANARY_ZONE], "orders_90d": [4.0]})
    contrib = pd.DataFrame({"timezone": [0.8], "orders_90d": [0.5], "bias": [-1.0]})
    words = {"timezone": "Time zone", "orders_90d": "Orders in 90 days"}
    (shown,) = reason_codes(contrib, data, words, k=2)
    assert CANARY_ZONE in shown[0].text
    (withheld,) = reason_codes(contrib, data, words, k=2, withheld=PERSONAL_FEATURES)
    assert [r.text for r in withheld] == [
        "Time zone (raises the score)",
        "Orders in 90 days: 4 (raises the score)",
    ]
    assert withheld[0].value == ""
    assert Reason.of("lane", f"DE→{CANARY_ZONE}", -0.2, {}, PERSONAL_FEATURES).value == ""
