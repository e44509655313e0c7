"""Shared fixtures: one small simulated business per test session."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

SIM_CUSTOMERS = 400
SIM_SEED = 11


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated business written as contract tables."""
    from features.sources.simulator import simulate

    out = tmp_path_factory.mktemp("sim") / "raw"
    simulate(out, customers=SIM_CUSTOMERS, seed=SIM_SEED)
    return out


@pytest.fixture(scope="session")
def sim_tables(sim_dir: Path) -> dict[str, pa.Table]:
    """The small simulated business, read and validated."""
    from features.contract.validate import load_folder

    tables, report = load_folder(sim_dir)
    assert report.ok, [str(v) for v in report.violations]
    return tables


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for every flow run of the session (starting one costs
    tens of seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    with pytest.MonkeyPatch.context() as patch:
        # Flow logic is also tested through `.fn()`, outside any flow run: its task logs
        # then have no run to attach to, which is expected there.
        patch.setenv("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
        patch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        with prefect_test_harness(server_startup_timeout=120):
            yield


@pytest.fixture(scope="session")
def service_key() -> str:
    """An API key with every scope for the tests that call the service; the tests put
    `tests:score:read+outreach:read+admin:<key>` in AFTERSALE_API_KEYS."""
    return "aftersale-tests-key-0123456789abcdef"


@pytest.fixture(scope="session")
def reader_key() -> str:
    """An API key with the `score:read` scope only."""
    return "aftersale-tests-reader-0123456789abcdef"
