"""Regime changes from a date. A carrier slowdown: the carrier's parcels dispatched from then
arrive later and more of them late; before it, and for the other carriers, service is as
without it. A region opening: from then a share of the new customers live in a region nobody
lived in, and its parcels travel long, erratic lanes; earlier customers are as without it. A
price change: from then offers are accepted less after a price rise, and nothing else moves."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from aftersale.cli import app
from features.sources.simulator import simulate
from features.sources.simulator.params import CarrierSlowdown, PriceChange, RegionOpening

START = date(2025, 4, 1)
OPENING = date(2024, 10, 1)
PRICE_DAY = date(2025, 1, 1)
PRICE_FACTOR = 1.25
TABLES = ("customers", "orders", "shipments", "tracking_events", "contacts", "returns")


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


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A plain run, one with SE opening at 30 % and one with offer prices up 25 %."""
    root = tmp_path_factory.mktemp("more_shocks")
    shocks = {
        "plain": (),
        "region": (RegionOpening("SE", OPENING, share=0.3),),
        "price": (PriceChange(PRICE_DAY, PRICE_FACTOR),),
    }
    return {
        name: simulate(root / name, customers=1500, seed=3, months=18, shocks=chosen).out_dir
        for name, chosen in shocks.items()
    }


def _table(folder, name: str) -> pd.DataFrame:
    return pq.read_table(folder / f"{name}.parquet").to_pandas()


def _said(output: str) -> str:
    """The command's words without the error box's frame and line breaks."""
    return " ".join(output.replace("│", " ").split())


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


def test_a_region_opens_to_new_customers_from_its_date(folders) -> None:
    opening = pd.Timestamp(OPENING, tz="UTC")
    plain, opened = _table(folders["plain"], "customers"), _table(folders["region"], "customers")
    after = opened["signup_ts"] >= opening
    assert not (plain["region"] == "SE").any()
    assert not (opened.loc[~after, "region"] == "SE").any()
    share = (opened.loc[after, "region"] == "SE").mean()
    assert 0.22 < share < 0.38, share
    moved = opened[opened["region"] == "SE"]
    assert set(moved["timezone"]) == {"Europe/Stockholm"}
    assert set(moved["language"]) <= {"sv", "en"}
    # The same customers: only where the new ones live differs, and nobody who signed up
    # before the opening moved.
    others = [c for c in plain.columns if c not in ("region", "timezone", "language")]
    pd.testing.assert_frame_equal(plain[others], opened[others])
    pd.testing.assert_frame_equal(plain[~after], opened[~after])


def test_an_opened_regions_parcels_look_new(folders) -> None:
    plain, opened = _shipments(folders["plain"]), _shipments(folders["region"])
    for frame in (plain, opened):
        frame["transit_h"] = (frame["delivered_ts"] - frame["shipped_ts"]).dt.total_seconds() / 3600
    new = opened[opened["destination_region"] == "SE"]
    assert len(new) > 100
    assert (new["shipped_ts"] >= pd.Timestamp(OPENING, tz="UTC")).all()
    later = plain[plain["after"]]
    assert new["transit_h"].median() > 1.3 * later["transit_h"].median()
    spread = new["transit_h"].quantile(0.9) / new["transit_h"].quantile(0.1)
    assert spread > 1.3 * later["transit_h"].quantile(0.9) / later["transit_h"].quantile(0.1)
    assert new["late"].mean() > later["late"].mean() + 0.05
    # Journeys share the chunk's random stream, so the rest of the business is alike in
    # distribution only: its lateness before the opening is as in the plain run.
    before = [
        f[f["shipped_ts"] < pd.Timestamp(OPENING, tz="UTC")]["late"].mean() for f in (plain, opened)
    ]
    assert abs(before[0] - before[1]) < 0.03, before


def test_a_price_rise_lowers_acceptance_from_its_date_only(folders) -> None:
    # Offers are drawn last and do not feed back: every other table is byte-identical.
    for name in TABLES:
        assert (folders["plain"] / f"{name}.parquet").read_bytes() == (
            folders["price"] / f"{name}.parquet"
        ).read_bytes(), name
    plain, priced = _table(folders["plain"], "offers"), _table(folders["price"], "offers")
    day = pd.Timestamp(PRICE_DAY, tz="UTC")
    after = plain["ts"] >= day
    pd.testing.assert_frame_equal(plain[~after], priced[~after])
    outcome = ["accepted_ts", "revenue"]
    pd.testing.assert_frame_equal(plain.drop(columns=outcome), priced.drop(columns=outcome))
    shown = plain["offer_type"] != "none"

    def accepted(frame: pd.DataFrame, rows: pd.Series) -> float:
        return frame.loc[rows, "accepted_ts"].notna().mean()

    # The control arm buys anyway, whatever the prices (at the new price); shown offers are
    # taken less.
    pd.testing.assert_series_equal(
        plain.loc[~shown, "accepted_ts"], priced.loc[~shown, "accepted_ts"]
    )
    assert abs(accepted(plain, shown & after) - accepted(plain, shown & ~after)) < 0.03
    assert accepted(priced, shown & after) < accepted(plain, shown & after) - 0.03
    both = after & plain["revenue"].notna() & priced["revenue"].notna()
    ratio = priced.loc[both, "revenue"] / plain.loc[both, "revenue"]
    assert ratio.between(PRICE_FACTOR - 0.01, PRICE_FACTOR + 0.01).all()


@pytest.mark.parametrize(
    ("shock", "says"),
    [
        ("region:XX:2025-01-01", "unknown region 'XX'"),
        ("region:SE:2025-01-01:1.5", "not in (0, 1]"),
        ("region:SE:2025-01-01:many", "is not a number"),
        ("region:SE", "names its region and day"),
        ("region:SE:soon", "is not a day"),
        ("price:2025-01-01", "names its day and factor"),
        ("price:2025-01-01:cheap", "is not a number"),
        ("price:2025-01-01:0", "not positive"),
        ("ParcelOne", "names its carrier and day"),
    ],
)
def test_a_malformed_shock_is_a_named_usage_error(tmp_path, shock, says) -> None:
    result = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path), "--shock", shock])
    assert result.exit_code == 2, result.output
    assert "--shock" in _said(result.output)
    assert says in _said(result.output)
    assert "Traceback" not in result.output


def test_the_command_takes_every_kind_of_shock(tmp_path) -> None:
    out = tmp_path / "all"
    shocks = ["ParcelOne:2024-06-01:1.5", "region:se:2024-03-01:1", "price:2024-06-01:0.8"]
    args = ["simulate", "--out", str(out), "--customers", "60", "--months", "18"]
    result = CliRunner().invoke(app, [*args, *(x for s in shocks for x in ("--shock", s))])
    assert result.exit_code == 0, result.output
    customers = _table(out, "customers")
    later = customers["signup_ts"] >= pd.Timestamp("2024-03-01", tz="UTC")
    assert (customers.loc[later, "region"] == "SE").all()


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
    assert "is not a number" in _said(bad.output)
