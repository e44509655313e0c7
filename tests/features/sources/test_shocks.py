"""A carrier slowdown from a date: the carrier's parcels dispatched from then arrive later and
more of them late; before it, and for the other carriers, service is as without it."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from aftersale.cli import app
from features.sources.simulator import simulate
from features.sources.simulator.params import CarrierSlowdown

START = date(2025, 4, 1)


def _shipments(folder) -> pd.DataFrame:
    frame = pq.read_table(folder / "shipments.parquet").to_pandas()
    frame["late"] = frame["delivered_ts"].isna() | (frame["delivered_ts"] > frame["promised_ts"])
    frame["after"] = frame["shipped_ts"] >= pd.Timestamp(START, tz="UTC")
    return frame


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("shocks")
    plain = simulate(root / "plain", customers=1500, seed=3, months=18).out_dir
    shocked = simulate(
        root / "shocked",
        customers=1500,
        seed=3,
        months=18,
        shocks=(CarrierSlowdown("ParcelOne", START, factor=1.8),),
    ).out_dir
    return _shipments(plain), _shipments(shocked)


def test_the_carrier_slows_down_from_its_date_only(runs) -> None:
    plain, shocked = runs
    # Late parcels feed back into behaviour (fewer repeat orders), and customers' journeys
    # draw from shared random streams, so the two runs are alike in distribution, not row by
    # row: before the date, the carrier is as late in both.
    before = [frame[~frame["after"] & (frame["carrier"] == "ParcelOne")] for frame in runs]
    assert abs(before[0]["late"].mean() - before[1]["late"].mean()) < 0.05
    for frame in (plain, shocked):
        transit = frame["delivered_ts"] - frame["shipped_ts"]
        frame["transit_h"] = transit.dt.total_seconds() / 3600

    def hit(frame: pd.DataFrame, carrier_is: bool) -> pd.DataFrame:
        return frame[frame["after"] & ((frame["carrier"] == "ParcelOne") == carrier_is)]

    ratio = hit(shocked, True)["transit_h"].median() / hit(plain, True)["transit_h"].median()
    assert 1.5 < ratio < 2.1, ratio
    assert hit(shocked, True)["late"].mean() > 2 * hit(plain, True)["late"].mean()
    # The other carriers keep their service.
    others = hit(shocked, False)["late"].mean() - hit(plain, False)["late"].mean()
    assert abs(others) < 0.05, others


def test_the_command_names_a_bad_shock(tmp_path) -> None:
    runner = CliRunner()
    unknown = runner.invoke(
        app,
        [
            "simulate",
            "--out",
            str(tmp_path / "x"),
            "--customers",
            "50",
            "--shock",
            "Nobody:2025-01-01",
        ],
    )
    assert unknown.exit_code != 0
    assert "unknown carrier 'Nobody'" in unknown.output
    assert "Traceback" not in unknown.output
    bad = runner.invoke(
        app, ["simulate", "--out", str(tmp_path / "y"), "--shock", "ParcelOne:2025-01-01:fast"]
    )
    assert bad.exit_code != 0
    assert "is not a number" in bad.output
