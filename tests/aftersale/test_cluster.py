"""A Dask scheduler that cannot be reached is named by its setting, never a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from aftersale.cli import app
from aftersale.cluster import ClusterError, dask_client
from aftersale.settings import get_settings


@pytest.mark.parametrize("address", ["nonsense", "foo://host:1", "tcp://127.0.0.1:1"])
def test_an_unreachable_scheduler_names_the_setting(address) -> None:
    named = pytest.raises(ClusterError, match=f"AFTERSALE_DASK_ADDRESS: .*{address}")
    with named, dask_client(address, timeout_s=1):
        pass


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_address_is_unset(monkeypatch, value) -> None:
    monkeypatch.setenv("AFTERSALE_DASK_ADDRESS", value)
    assert get_settings().dask_address is None


def test_a_job_stops_before_it_starts_on_a_bad_address(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AFTERSALE_DASK_ADDRESS", "tcp://no-such-host.invalid:8786")
    result = CliRunner().invoke(app, ["score"])
    assert result.exit_code == 2, result.output
    assert "AFTERSALE_DASK_ADDRESS: cannot reach a Dask scheduler" in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
