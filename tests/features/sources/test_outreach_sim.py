"""Simulated outreach: random, recorded holdouts; consented channels; subjects that resolve;
true effects that match the mechanism and show in the realised repurchases."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from features.contract.schema import CONTRACT, OUTREACH_ACTIONS, OUTREACH_SUBJECTS
from features.sources.simulator import DEFAULT_PARAMS, SimulationResult, simulate
from features.sources.simulator.engine import run_simulation
from features.sources.simulator.outreach import ACTION, repurchase_effect, retention_gain
from features.sources.simulator.timeline import build_timeline
from features.sources.simulator.truth import WINDOW_DAYS

CUSTOMERS = 5_000
SEED = 11
START = pd.Timestamp("2024-01-01", tz="UTC")
END = pd.Timestamp("2026-01-01", tz="UTC")
OP = DEFAULT_PARAMS.outreach
TABLES = ("customers", "orders", "shipments", "contacts", "invoices", "outreach")
SUBJECT_TS = {
    "shipments": "shipped_ts",
    "contacts": "ts",
    "invoices": "due_date",
    "orders": "order_ts",
}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimulationResult:
    return simulate(tmp_path_factory.mktemp("outreach") / "raw", customers=CUSTOMERS, seed=SEED)


@pytest.fixture(scope="module")
def raw(sim: SimulationResult) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(sim.out_dir / f"{name}.parquet") for name in TABLES}


@pytest.fixture(scope="module")
def latent(sim: SimulationResult) -> pd.DataFrame:
    return pd.read_parquet(sim.out_dir / "_truth" / "customer_latent.parquet").set_index(
        "customer_id"
    )


@pytest.fixture(scope="module")
def logged(sim: SimulationResult, raw) -> pd.DataFrame:
    """Outreach rows with their truth and the realised order within 90 days of the send."""
    truth = pd.read_parquet(sim.out_dir / "_truth" / "outreach.parquet")
    rows = raw["outreach"].merge(truth, on="outreach_id", validate="1:1")
    orders = raw["orders"][["customer_id", "order_ts"]]
    joined = rows[["outreach_id", "customer_id", "ts"]].merge(orders, on="customer_id")
    within = (joined.order_ts > joined.ts) & (
        joined.order_ts <= joined.ts + pd.Timedelta(days=WINDOW_DAYS)
    )
    ordered = within.groupby(joined.outreach_id).any()
    rows["ordered_90d"] = rows.outreach_id.map(ordered).fillna(False).astype(bool)
    rows["window_known"] = rows.ts + pd.Timedelta(days=WINDOW_DAYS) <= END
    return rows


def _days(ts: pd.Series) -> np.ndarray:
    return ((ts - START) / pd.Timedelta(days=1)).to_numpy()


# --- the log ----------------------------------------------------------------------------------


def test_every_simulated_action_is_logged_with_sent_and_held_out_rows(logged) -> None:
    assert set(logged.action) == set(OUTREACH_ACTIONS)
    both = logged.groupby("action").holdout.agg(["min", "max"])
    assert (~both["min"] & both["max"]).all()
    assert logged.propensity.gt(0).all()
    assert logged.propensity.le(1).all()
    assert (logged.ts < END).all()
    number = logged.customer_id.str.removeprefix("c").astype(int)
    order = pd.DataFrame({"number": number, "ts": logged.ts})
    assert order.sort_values(["number", "ts"], kind="stable").index.equals(order.index)


def test_holdout_share_is_close_to_the_setting_per_action(logged) -> None:
    share = logged.groupby("action").holdout.agg(["mean", "size"])
    large = share[share["size"] >= 300]
    assert len(large) >= 5
    assert (large["mean"] - OP.holdout_share).abs().max() < 0.035
    assert abs(logged.holdout.mean() - OP.holdout_share) < 0.01


def test_holdout_is_independent_of_observables(logged, raw) -> None:
    rows = logged.merge(raw["customers"], on="customer_id")
    overall = rows.holdout.mean()
    for column in ("channel", "region", "preferred_channel", "consent_marketing"):
        groups = rows.groupby(column).holdout.agg(["mean", "size"])
        groups = groups[groups["size"] >= 500]
        assert (groups["mean"] - overall).abs().max() < 0.03, column
    # The policy's own probability π (propensity without the holdout factor) has the same
    # distribution whether the choice was then held out or sent.
    pi = rows.propensity / np.where(rows.holdout, OP.holdout_share, 1 - OP.holdout_share)
    assert abs(pi[rows.holdout].mean() - pi[~rows.holdout].mean()) < 0.02


def test_propensity_is_the_probability_of_the_logged_choice(logged, raw) -> None:
    # A delay notice competes with nothing: π = w / (1 + w), w from the order amount.
    notices = logged[logged.action == "delay_notice"]
    amount = notices.subject_id.map(
        raw["shipments"]
        .set_index("shipment_id")
        .order_id.map(raw["orders"].set_index("order_id").amount)
    )
    score = OP.policy_score[ACTION["delay_notice"]] + OP.high_value_score * (
        amount > OP.high_value_amount
    )
    pi = expit(score - OP.none_score)
    factor = np.where(notices.holdout, OP.holdout_share, 1 - OP.holdout_share)
    assert np.allclose(notices.propensity, pi * factor, rtol=1e-12)


def test_holdouts_are_reproducible_by_seed(tmp_path: Path) -> None:
    a = simulate(tmp_path / "a", customers=400, seed=3, months=8).out_dir
    b = simulate(tmp_path / "b", customers=400, seed=3, months=8).out_dir
    c = simulate(tmp_path / "c", customers=400, seed=4, months=8).out_dir
    for name in ("outreach.parquet", "_truth/outreach.parquet"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).read_bytes() != (c / name).read_bytes()
    assert pd.read_parquet(a / "outreach.parquet").holdout.any()


def test_outreach_switched_off_logs_nothing_and_keeps_the_population(tmp_path: Path) -> None:
    off = replace(DEFAULT_PARAMS, outreach=replace(OP, enabled=False))
    start = date(2024, 1, 1)
    quiet = run_simulation(tmp_path / "off", 400, 3, "parquet", start, 8, 1, off).out_dir
    loud = simulate(tmp_path / "on", customers=400, seed=3, months=8).out_dir
    assert pd.read_parquet(quiet / "outreach.parquet").empty
    assert (
        pd.read_parquet(quiet / "_truth" / "customer_latent.parquet").delay_sensitivity.isna().all()
    )
    # Outreach draws from its own stream: who the customers are does not change.
    for name in ("customers.parquet", "products.parquet"):
        assert (quiet / name).read_bytes() == (loud / name).read_bytes()


def test_rows_go_out_only_on_consented_channels(logged, raw) -> None:
    rows = logged.merge(raw["customers"], on="customer_id")
    consented = np.select(
        [rows.channel == "email", rows.channel == "sms", rows.channel == "voice"],
        [rows.consent_email, rows.consent_sms, rows.consent_voice],
        False,
    )
    assert consented.all()
    assert rows.consent_marketing[rows.action == "winback_offer"].all()
    assert ((rows.channel == "voice") == (rows.action == "service_recovery_call")).all()


def test_subjects_resolve_to_the_customers_own_rows_before_the_send(logged, raw) -> None:
    owner = {
        "orders": raw["orders"].set_index("order_id").customer_id,
        "contacts": raw["contacts"].set_index("contact_id").customer_id,
        "invoices": raw["invoices"].set_index("invoice_id").customer_id,
    }
    owner["shipments"] = raw["shipments"].set_index("shipment_id").order_id.map(owner["orders"])
    for action, names in OUTREACH_SUBJECTS.items():
        rows = logged[logged.action == action]
        if not names:
            assert rows.subject_id.isna().all(), action
            continue
        assert rows.subject_id.notna().all(), action
        found = pd.Series(False, index=rows.index)
        for name in names:
            table = raw[name].set_index(CONTRACT[name].key[0])
            here = rows.subject_id.isin(table.index)
            mine = rows[here]
            assert (mine.subject_id.map(owner[name]) == mine.customer_id).all(), (action, name)
            # A renewal reminder goes out before its invoice's due date, once it is issued.
            since = "issued_ts" if action == "renewal_reminder" else SUBJECT_TS[name]
            assert (mine.ts >= mine.subject_id.map(table[since])).all(), (action, name)
            found |= here
        assert found.all(), action
    notices = logged[logged.action == "delay_notice"]
    delivered = notices.subject_id.map(raw["shipments"].set_index("shipment_id").delivered_ts)
    assert (delivered.isna() | (delivered > notices.ts)).all()


# --- the true effects -------------------------------------------------------------------------


def test_truth_matches_a_recomputation_from_the_mechanism(logged, latent) -> None:
    timeline = build_timeline(date(2024, 1, 1), 24, DEFAULT_PARAMS.seasonality)
    rate = logged.customer_id.map(latent.order_rate).to_numpy()
    span = timeline.season_clock(_days(logged.ts) + WINDOW_DAYS) - timeline.season_clock(
        _days(logged.clock_from_ts)
    )
    window = -np.expm1(-rate * np.maximum(span, 0.0))
    treated, untreated = repurchase_effect(
        logged.p_churn_untreated.to_numpy(), logged.retention_gain.to_numpy(), window
    )
    # Timestamps are written in whole seconds, so the window is recomputed to ~1e-6.
    assert np.allclose(treated, logged.p_repurchase_90d_treated, atol=1e-5)
    assert np.allclose(untreated, logged.p_repurchase_90d_untreated, atol=1e-5)
    assert np.allclose(
        logged.effect_repurchase_90d,
        logged.p_repurchase_90d_treated - logged.p_repurchase_90d_untreated,
    )
    assert logged.effect_repurchase_90d[logged.holdout].notna().all()
    assert logged.effect_repurchase_90d.abs().max() < 0.5


def test_gains_follow_traits_and_experience(logged, latent, raw) -> None:
    shipments = raw["shipments"].set_index("shipment_id")
    notices = logged[logged.action == "delay_notice"]
    notices = notices[notices.subject_id.map(shipments.promised_ts) < END - pd.Timedelta(days=20)]
    ship = shipments.loc[notices.subject_id]
    late = (ship.delivered_ts.isna() | (ship.delivered_ts > ship.promised_ts)).to_numpy()
    amount = ship.order_id.map(raw["orders"].set_index("order_id").amount).to_numpy()
    traits = latent.loc[notices.customer_id]
    no = np.zeros(len(notices), dtype=bool)
    gain = retention_gain(
        np.full(len(notices), ACTION["delay_notice"]),
        traits.churn_base_logit.to_numpy(),
        traits.loyalty.to_numpy(),
        traits.price_sensitivity.to_numpy(),
        traits.delay_sensitivity.to_numpy(),
        amount,
        late,
        ship.delivered_ts.isna().to_numpy(),
        no,
        no,
        no,
        DEFAULT_PARAMS,
    )
    assert np.allclose(gain, notices.retention_gain, rtol=1e-9, atol=1e-12)
    # Notices help late parcels of movable customers most; lost causes are moved by nothing.
    movable = traits.churn_base_logit.to_numpy() < OP.lost_cause_logit - 0.5
    assert notices.retention_gain[late & movable].mean() > 4 * max(
        notices.retention_gain[~late & movable].mean(), 0.01
    )
    lost_cause = logged.customer_id.map(latent.churn_base_logit) > OP.lost_cause_logit + 0.8
    assert logged.retention_gain[lost_cause].abs().max() < 0.01


def test_some_actions_harm_satisfied_loyal_customers(logged, latent) -> None:
    loyalty = logged.customer_id.map(latent.loyalty)
    winback = logged[(logged.action == "winback_offer")]
    assert (winback.effect_repurchase_90d < -0.02).any()
    assert (winback.effect_repurchase_90d > 0.05).any()
    harmed = winback.effect_repurchase_90d < 0
    assert loyalty[harmed.index[harmed]].mean() > loyalty[harmed.index[~harmed]].mean() + 0.5
    surveys = logged[logged.action == "nps_survey"]
    assert (surveys.effect_repurchase_90d < 0).mean() > 0.2
    recovery = logged[logged.action == "service_recovery_call"]
    assert recovery.effect_repurchase_90d.mean() > 0.04


def test_realised_repurchase_follows_the_true_effects(logged) -> None:
    known = logged[logged.window_known]
    helped = known[known.effect_repurchase_90d > 0.05]
    sent, held = helped[~helped.holdout], helped[helped.holdout]
    assert len(held) >= 100
    difference = sent.ordered_90d.mean() - held.ordered_90d.mean()
    assert difference > 0
    assert abs(difference - helped.effect_repurchase_90d.mean()) < 0.1
    # Harm: sent rows order less often than the truth says they would have without it.
    harmed = known[(known.effect_repurchase_90d < -0.02) & ~known.holdout]
    assert len(harmed) >= 200
    assert (harmed.ordered_90d - harmed.p_repurchase_90d_untreated).mean() < 0
    # Both arms are calibrated: realised rates match the truth of the arm actually taken.
    expected = known.p_repurchase_90d_untreated.where(known.holdout, known.p_repurchase_90d_treated)
    for arm in (True, False):
        mine = known.holdout == arm
        assert abs(known.ordered_90d[mine].mean() - expected[mine].mean()) < 0.04


def test_second_outcomes_are_recorded_where_they_apply(logged) -> None:
    notices = logged.action == "delay_notice"
    status = logged.effect_order_status_contact
    assert status[notices].notna().all()
    assert status[~notices].isna().all()
    assert status[notices].le(0).all()
    assert status[notices].mean() < -0.03
    reminders = logged.action.isin(["payment_reminder", "renewal_reminder"])
    days = logged.effect_days_to_pay
    assert days[~reminders].isna().all()
    assert days[reminders].dropna().le(0).all()
    assert days[reminders].notna().any()


def test_renewal_reminders_are_about_their_own_unpaid_membership_renewals(logged, raw) -> None:
    reminders = logged[logged.action == "renewal_reminder"]
    assert reminders.holdout.any()
    assert (~reminders.holdout).any()
    invoices = raw["invoices"]
    first = invoices[invoices.kind == "membership"].groupby("customer_id").issued_ts.min()
    about = reminders.merge(
        invoices, left_on="subject_id", right_on="invoice_id", suffixes=("", "_invoice")
    )
    assert len(about) == len(reminders)
    assert (about.kind == "membership").all()
    assert (about.customer_id_invoice == about.customer_id).all()
    assert (about.issued_ts > about.customer_id.map(first)).all()
    before = (about.due_date - about.ts) / pd.Timedelta(days=1)
    assert np.allclose(before, OP.renewal_reminder_days, atol=1e-4)
    assert (about.paid_ts.isna() | (about.paid_ts > about.ts)).all()
    # The policy draws a renewal reminder alone against nothing: π = sigmoid(score).
    pi = expit(OP.policy_score[ACTION["renewal_reminder"]] - OP.none_score)
    factor = np.where(about.holdout, OP.holdout_share, 1 - OP.holdout_share)
    assert np.allclose(about.propensity, pi * factor, rtol=1e-12)
    assert about.retention_gain.gt(0).all()
    assert about.effect_repurchase_90d.notna().all()
    assert about.effect_repurchase_90d.gt(0).all()
    assert about.effect_repurchase_90d[about.holdout].notna().all()
