"""Dataset detection, the dataset's own data folder, and which models a dataset can train."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from features.datasets import (
    OLIST_FILE,
    OLIST_TEST_FRACTION,
    data_dir_set_to,
    dataset_dir,
    detect_dataset,
    missing_tables,
)


def test_a_folder_of_contract_tables(tmp_path: Path) -> None:
    folder = tmp_path / "my shop"
    folder.mkdir()
    (folder / "orders.csv").write_text("order_id\n")
    dataset = detect_dataset(folder)
    assert (dataset.name, dataset.source, dataset.path) == ("my_shop", "folder", folder)
    assert dataset.test_fraction is None


def test_the_olist_folder_or_file(tmp_path: Path) -> None:
    folder = tmp_path / "olist_orders_sample"
    folder.mkdir()
    csv = folder / OLIST_FILE
    csv.write_text("id\n")
    for given in (folder, csv):
        dataset = detect_dataset(given)
        assert (dataset.name, dataset.source, dataset.path) == ("olist_orders_sample", "olist", csv)
        assert dataset.test_fraction == OLIST_TEST_FRACTION


def test_unknown_contents_are_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="neither contract tables"):
        detect_dataset(tmp_path)
    with pytest.raises(ValueError, match="not the Olist sample"):
        detect_dataset(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        detect_dataset(tmp_path / "absent")


def test_data_dir_is_set_for_the_block_and_restored(tmp_path: Path, monkeypatch) -> None:
    from aftersale.settings import get_settings

    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path / "default"))
    folder = dataset_dir(tmp_path / "default", "olist")
    assert folder == tmp_path / "default" / "datasets" / "olist"
    with data_dir_set_to(folder):
        assert get_settings().data_dir == folder
    assert get_settings().data_dir == tmp_path / "default"
    monkeypatch.delenv("AFTERSALE_DATA_DIR")
    with pytest.raises(RuntimeError), data_dir_set_to(folder):
        raise RuntimeError
    assert "AFTERSALE_DATA_DIR" not in os.environ


def test_missing_tables_per_model() -> None:
    required = {"delay_risk": ("shipments",), "offers": ("offers", "products", "orders")}
    present = {"orders", "shipments", "customers"}
    assert missing_tables(required, present) == {"offers": ["offers", "products"]}
