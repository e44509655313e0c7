"""Logs hold ids only, and the outreach export only what a scheduler needs.

The whole job runs through its commands (`aftersale ingest`, `features build`, `train`,
`score`) on a small business whose personal values are canaries: regions, time zones and
languages that nothing else holds. A served load follows, bad requests included. Then
neither the commands' output, nor the log file, nor the server's output may hold a canary,
or a personal field written with a value. The canaries do reach the answers that need them
(an explanation shows a customer's time zone; the queue carries the region and language a
scheduler routes by), so their absence from the logs is not an accident of the data.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from aftersale.cli import app
from features.personal import PERSONAL_FEATURES
from serving.tokens import mint

pytestmark = pytest.mark.slow

TOKEN_SECRET = "tracking-token-secret-for-personal-data-tests"
# Valid IANA zones far from any simulated market, so they occur nowhere else.
CANARY_ZONES = (
    "Pacific/Chatham",
    "Antarctica/Troll",
    "America/Argentina/Ushuaia",
    "Asia/Kamchatka",
    "Atlantic/Stanley",
    "Indian/Kerguelen",
    "Pacific/Marquesas",
    "Arctic/Longyearbyen",
    "Pacific/Pitcairn",
    "Asia/Srednekolymsk",
    "Antarctica/Macquarie",
    "Pacific/Kiritimati",
)
# Two-letter codes no ISO 639-1 language has.
CANARY_LANGUAGES = ("qa", "qb", "qc", "qd", "qe", "qf", "qg", "qh", "qi", "qj", "qk", "ql")
# An export column may hold a personal value only where a scheduler needs it.
EXPORTED_PERSONAL = {"region", "language"}


def _canary_regions(regions: list[str]) -> dict[str, str]:
    return {r: f"Zq{k}canaryregion" for k, r in enumerate(sorted(regions))}


def _replace(table: pa.Table, column: str, mapping: dict[str, str]) -> pa.Table:
    values = pd.Series(table.column(column).to_pylist(), dtype=object)
    replaced = values.map(lambda v: mapping.get(v, v))
    index = table.schema.get_field_index(column)
    return table.set_column(index, column, pa.array(replaced.tolist(), pa.string()))


@pytest.fixture(scope="module")
def canaries(sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The small business with every region, time zone and language replaced by a canary."""
    folder = tmp_path_factory.mktemp("canary") / "raw"
    folder.mkdir()
    tables = {p.stem: pq.read_table(p) for p in sim_dir.glob("*.parquet")}
    customers = tables["customers"]
    regions = _canary_regions(sorted(set(customers.column("region").to_pylist())))
    zones_found = sorted(set(customers.column("timezone").to_pylist()))
    languages_found = sorted(
        set(customers.column("language").to_pylist())
        | set(tables["contacts"].column("language").to_pylist())
    )
    assert len(zones_found) <= len(CANARY_ZONES)
    assert len(languages_found) <= len(CANARY_LANGUAGES)
    zones = dict(zip(zones_found, CANARY_ZONES, strict=False))
    languages = dict(zip(languages_found, CANARY_LANGUAGES, strict=False))
    customers = _replace(customers, "region", regions)
    customers = _replace(customers, "timezone", zones)
    tables["customers"] = _replace(customers, "language", languages)
    tables["contacts"] = _replace(tables["contacts"], "language", languages)
    tables["shipments"] = _replace(tables["shipments"], "destination_region", regions)
    for name, table in tables.items():
        pq.write_table(table, folder / f"{name}.parquet")
    return folder, {"regions": regions, "zones": zones, "languages": languages}


def _leaks(text: str, values: dict) -> list[str]:
    """Canary values, and personal fields written with a value, found in `text`."""
    found = [v for v in [*values["regions"].values(), *values["zones"].values()] if v in text]
    languages = "|".join(values["languages"].values())
    found += re.findall(rf"(?<![\w-])(?:{languages})(?![\w-])", text)
    names = "|".join(sorted(PERSONAL_FEATURES, key=len, reverse=True))
    found += re.findall(rf"(?<![\w.])['\"]?(?:{names})['\"]?\s*[=:]\s*['\"]?\w+", text)
    return found


@pytest.fixture(scope="module")
def job(canaries, tmp_path_factory, prefect_harness) -> dict:
    """The job's commands on the canary business; their output and the data folder."""
    folder, _ = canaries
    data = tmp_path_factory.mktemp("data")
    runner = CliRunner()
    outputs = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(data))
        for command in (
            ["ingest", "--source", "folder", "--path", str(folder)],
            ["features", "build"],
            ["train"],
            ["score"],
        ):
            result = runner.invoke(app, command)
            assert result.exit_code == 0, (command, result.output)
            outputs.append(result.output)
    queue = data / "serving" / "outreach_queue.parquet"
    meta = json.loads(pq.read_schema(queue).metadata[b"aftersale"])
    return {"data": data, "output": "\n".join(outputs), "as_of": meta["as_of"]}


def test_the_export_holds_what_a_scheduler_needs(job, canaries) -> None:
    _, values = canaries
    queue = pq.read_table(job["data"] / "serving" / "outreach_queue.parquet").to_pandas()
    assert len(queue) > 0
    personal = set(queue.columns) & PERSONAL_FEATURES
    assert personal <= EXPORTED_PERSONAL, personal
    assert "timezone" not in queue.columns
    # Routing by region and writing in the customer's language need those two columns.
    assert set(queue["region"]) <= set(values["regions"].values())
    assert set(queue["language"]) <= set(values["languages"].values())
    # Nowhere else in the export, reasons included: they name personal features only.
    others = queue.drop(columns=sorted(EXPORTED_PERSONAL))
    assert _leaks(others.to_csv(index=False), values) == []
    for path in (job["data"] / "serving").glob("*.parquet"):
        if path.name != "outreach_queue.parquet":
            text = pq.read_table(path).to_pandas().to_csv(index=False)
            assert _leaks(text, values) == [], path.name


def test_logs_of_the_job_and_a_served_load_hold_ids_only(
    job, canaries, serve_service, service_key, tmp_path_factory
) -> None:
    _, values = canaries
    data = job["data"]
    raw = next(p for p in sorted((data / "raw").iterdir()) if p.is_dir())
    customers = pq.read_table(raw / "customers.parquet").column("customer_id").to_pylist()
    shipments = pq.read_table(raw / "shipments.parquet").to_pandas()
    env = {
        **os.environ,
        "AFTERSALE_DATA_DIR": str(data),
        "AFTERSALE_AS_OF": pd.Timestamp(job["as_of"]).isoformat(),
        "AFTERSALE_API_KEYS": f"tests:score:read+outreach:read+admin:{service_key}",
        "AFTERSALE_TOKEN_SECRET": TOKEN_SECRET,
    }
    log_path = tmp_path_factory.mktemp("served") / "serve.log"
    region = sorted(values["regions"].values())[0]
    answers = []
    with serve_service(env, log_path) as url:
        headers = {"Authorization": f"Bearer {service_key}"}
        with httpx.Client(base_url=url, timeout=30, headers=headers) as http:
            for k in range(0, 200, 20):
                ids = customers[k : k + 20]
                answers.append(http.post("/v1/score/churn", json={"customer_ids": ids}))
                answers.append(http.post("/v1/explain", json={"model": "churn", "ids": ids[:3]}))
                ships = shipments["shipment_id"].iloc[k : k + 20].tolist()
                answers.append(http.post("/v1/score/delay", json={"shipment_ids": ships}))
                order = str(shipments["order_id"].iloc[k])
                token = mint(order, TOKEN_SECRET.encode())
                answers.append(http.post("/v1/recommend", json={"order_id": order, "token": token}))
                answers.append(
                    http.post("/v1/outreach/queue", json={"limit": 20, "region": region})
                )
            # Bad requests carrying personal values: answered 4xx, not written down.
            bad = [
                http.post("/v1/outreach/queue", json={"region": f"{region}x"}),
                http.post("/v1/score/churn", json={"customer_ids": [region], "x": region}),
                http.post("/v1/recommend", json={"order_id": order, "token": region}),
                http.post("/v1/explain", json={"model": region, "ids": ["c1"]}),
            ]
            assert http.post("/v1/admin/reload").status_code == 200
        served = log_path.read_text()
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers[:3]]
    assert all(400 <= b.status_code < 500 for b in bad), [b.status_code for b in bad]
    # The canaries reach the answers that need them ...
    answered = "\n".join(a.text for a in answers)
    assert any(z in answered for z in values["zones"].values())
    assert region in answered
    # ... and no log: the commands' output, the log files, the server's output.
    assert served.strip(), "the server wrote no log"
    logs = {"commands": job["output"], "server": served}
    for path in (data / "logs").glob("*"):
        logs[path.name] = path.read_text()
    assert any(name.endswith(".log") for name in logs), sorted(logs)
    for name, text in logs.items():
        assert _leaks(text, values) == [], name
