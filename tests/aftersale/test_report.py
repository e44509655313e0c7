"""`aftersale report` on a small simulated business, published the way ingest publishes."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aftersale.cli import app
from aftersale.settings import get_settings
from features import versioned
from features.ingest import check, stage
from features.report import picture
from features.report.page import CONTACT_CENTRE, MODEL_CARDS, OUTCOMES
from features.sources.base import FolderSource
from features.sources.simulator import simulate


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "data"
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(folder))
    return folder


@pytest.fixture
def published(data_dir, tmp_path) -> Path:
    simulate(tmp_path / "sim", customers=300, seed=5)
    staging = stage(FolderSource(tmp_path / "sim"), get_settings().raw_root)
    check(staging)
    return versioned.publish(staging)


def test_report_writes_one_self_contained_page(published, tmp_path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["report", "--out", str(out)])
    assert result.exit_code == 0, result.output
    path = out / "report.html"
    assert str(path) in result.output.replace("\n", "")
    page = path.read_text(encoding="utf-8")
    for heading in (CONTACT_CENTRE, OUTCOMES, "repeat purchase", "Churn by contact reason"):
        assert heading in page
    assert "First-order experience and later revenue" in page
    assert re.search(r"<td class=\"number\">\d+\.\d%</td>", page)
    assert re.search(r"<td class=\"number\">[+-]\d+\.\d</td>", page)
    assert "data:image/png;base64," in page
    assert not re.search(r"https?://", page)
    assert page.count("Data from 20") >= 5


def test_report_without_a_tracking_store_says_no_model_is_registered(
    published, data_dir, tmp_path, monkeypatch
) -> None:
    monkeypatch.delenv("AFTERSALE_MLFLOW_TRACKING_URI", raising=False)
    before = {path for path in tmp_path.rglob("*") if path.is_file()}
    result = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert MODEL_CARDS in page
    assert "No champion model is registered." in page
    assert not list(tmp_path.rglob("*.db"))
    assert not (data_dir / "mlflow").exists()
    # Besides the page, only the console's log of third-party messages is written.
    created = {path for path in tmp_path.rglob("*") if path.is_file()} - before
    assert created - {data_dir / "logs" / "aftersale.log"} == {tmp_path / "out" / "report.html"}


def test_report_defaults_to_the_data_folder(published, data_dir) -> None:
    result = CliRunner().invoke(app, ["report"])
    assert result.exit_code == 0, result.output
    assert (data_dir / "reports" / "report.html").is_file()


def test_report_without_raw_data_is_an_error(data_dir) -> None:
    result = CliRunner().invoke(app, ["report"])
    assert result.exit_code == 1
    assert "aftersale ingest" in result.output


@pytest.mark.skipif(
    picture.find_chromium() is None,
    reason="no Chromium on PATH (Debian's `chromium` package; .ci/run installs it)",
)
def test_report_draws_its_picture_with_chromium(published, tmp_path) -> None:
    # The command `make report-picture` runs, on the small business.
    png_path = tmp_path / "docs" / "report.png"
    result = CliRunner().invoke(
        app, ["report", "--out", str(tmp_path / "out"), "--png", str(png_path)]
    )
    assert result.exit_code == 0, result.output
    assert str(png_path) in result.output.replace("\n", "")
    data = png_path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (picture.WINDOW_WIDTH, picture.WINDOW_HEIGHT)
    # Tables and charts, not a blank window: a blank 1280 x 2000 PNG is a few kilobytes.
    assert 50_000 < len(data) < 10_000_000


def test_report_picture_without_chromium_is_an_error(published, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(picture, "CHROMIUM_NAMES", ("no-such-chromium-binary",))
    png_path = tmp_path / "report.png"
    result = CliRunner().invoke(
        app, ["report", "--out", str(tmp_path / "out"), "--png", str(png_path)]
    )
    assert result.exit_code == 1
    assert "no Chromium on PATH" in result.output
    # The page itself is still written.
    assert (tmp_path / "out" / "report.html").is_file()
    assert not png_path.exists()
