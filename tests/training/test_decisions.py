"""What the decision champions are worth, read back from a real MLflow registry: the offer
policy's values and the outreach effects as their runs logged them, and the report's
section showing them."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from features.report.page import DECISIONS, _decisions
from models.served.registry import CHAMPION, tracking
from training.model_cards import decisions

OFFER_METRICS = {
    "test_policy_model_dr": 4.2,
    "test_policy_model_dr_low": 3.8,
    "test_policy_model_dr_high": 4.6,
    "test_policy_popularity_dr": 2.4,
    "test_policy_popularity_dr_low": 2.0,
    "test_policy_popularity_dr_high": 2.8,
    "test_policy_random_dr": 0.9,
    "test_policy_random_dr_low": 0.8,
    "test_policy_random_dr_high": 1.0,
}
UPLIFT_METRICS = {
    "test_action_winback_offer_observed_uplift": 0.03,
    "test_action_winback_offer_predicted_uplift": 0.05,
    "test_action_delay_notice_observed_uplift": -0.01,
    "second_wismo_contacts_14d_delay_notice_effect": -0.08,
    "second_wismo_contacts_14d_delay_notice_low": -0.12,
    "second_wismo_contacts_14d_delay_notice_high": -0.04,
}


def _champion(name: str, metrics: dict[str, float], version_runs: int = 1) -> None:
    """A run logging `metrics`, registered as the champion of `name` (a second, older
    version with other figures shows that only the champion is read)."""
    client = mlflow.MlflowClient()
    experiment = client.create_experiment(name)
    for number in range(version_runs + 1):
        run = client.create_run(experiment)
        values = metrics if number == version_runs else {k: -99.0 for k in metrics}
        for key, value in values.items():
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id)
        if number == 0:
            client.create_registered_model(name)
        version = client.create_model_version(
            name, f"runs:/{run.info.run_id}/model", run.info.run_id
        )
        if number == version_runs:
            client.set_registered_model_alias(name, CHAMPION, version.version)


def test_decisions_are_the_champions_logged_figures(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert decisions(uri).empty  # no store yet: nothing read, nothing created
    assert not (tmp_path / "mlflow.db").exists()
    with tracking(uri):
        _champion("next_best_offer", OFFER_METRICS)
        _champion("outreach_uplift", UPLIFT_METRICS)
    found = decisions(uri)
    policy = found[found["kind"] == "policy value"].set_index("name")
    assert policy.index.tolist() == ["model", "popularity", "random"]
    assert policy.loc["model", ["value", "low", "high"]].tolist() == [4.2, 3.8, 4.6]
    assert (policy["version"] == "2").all()
    effects = found[found["kind"] == "outreach effect"].set_index("name")
    assert effects.loc["winback_offer", "value"] == pytest.approx(0.03)
    assert effects.loc["winback_offer", "note"] == "predicted +0.050"
    assert effects.loc["delay_notice", "note"] == ""
    assert set(effects.index) == {"winback_offer", "delay_notice"}
    second = found[found["kind"] == "second outcome"].iloc[0]
    assert second["name"].startswith("delay_notice: contacts asking where the order is")
    assert [second["value"], second["low"], second["high"]] == [-0.08, -0.12, -0.04]
    page = _decisions(found)
    assert DECISIONS in page
    for shown in ("4.200", "predicted +0.050", "-0.080"):
        assert shown in page
    assert _decisions(pd.DataFrame()) == ""
