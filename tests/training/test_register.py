"""Registry helpers without a tracking store: data versions and the tracking URI scope."""

from __future__ import annotations

import mlflow
import pandas as pd
import pyarrow as pa
import pytest

from aftersale.settings import Settings
from models.served.registry import tracking
from training.register import data_version, file_digest, table_digest


def test_table_digest_ignores_chunking_and_metadata_but_not_content() -> None:
    table = pa.table({"a": [1, 2, 3, 4], "b": ["w", "x", None, "z"]})
    chunked = pa.concat_tables([table.slice(0, 1), table.slice(1, 3)])
    assert chunked.column("a").num_chunks == 2
    tagged = table.replace_schema_metadata({"pandas": "{}"})
    assert table_digest(table) == table_digest(chunked) == table_digest(tagged)
    changed = pa.table({"a": [1, 2, 3, 5], "b": ["w", "x", None, "z"]})
    assert table_digest(changed) != table_digest(table)
    sliced = pa.table({"a": [0, 1, 2, 3, 4], "b": ["v", "w", "x", None, "z"]}).slice(1)
    assert table_digest(sliced) == table_digest(table)


def test_data_version_combines_tables_and_files(tmp_path) -> None:
    path = tmp_path / "features.parquet"
    path.write_bytes(b"feature rows")
    table = pa.table({"a": [1]})
    first = data_version({"shipments": table}, {"shipment_events": path})
    assert set(first) == {"data_version", "raw/shipments", "features/shipment_events"}
    assert first["features/shipment_events"] == file_digest(path)
    path.write_bytes(b"other rows")
    assert (
        data_version({"shipments": table}, {"shipment_events": path})["data_version"]
        != (first["data_version"])
    )


def test_defaults_live_under_the_data_folder(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    assert settings.artifact_root == tmp_path.resolve() / "mlflow" / "artifacts"
    server = Settings(data_dir=tmp_path, mlflow_tracking_uri="http://tracking.example:5000")
    assert server.tracking_uri == "http://tracking.example:5000"
    assert server.artifact_root is None


def test_tracking_uri_is_set_only_inside_the_block(tmp_path) -> None:
    before = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path}/x.db"
    with tracking(uri):
        assert mlflow.get_tracking_uri() == uri
        assert mlflow.get_registry_uri() == uri
    assert mlflow.get_tracking_uri() == before


@pytest.mark.parametrize("rows", [0, 1, 3, 4, 6, 10])
def test_signature_rows_are_the_first_rows_of_the_frames_in_order(rows: int) -> None:
    from training.record import first_rows

    valid = pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["a", None, "b"]}, index=[7, 8, 9])
    test = pd.DataFrame({"x": [4.0, None], "c": ["c", "d"]}, index=[10, 11])
    expected = pd.concat([valid, test]).head(rows)
    pd.testing.assert_frame_equal(first_rows((valid, test), rows), expected)
    pd.testing.assert_frame_equal(first_rows(pd.concat([valid, test]), rows), expected)
