"""The outreach queue ranked by the uplift champion, held against the raw tables: a small
business trained with `outreach_uplift`, batch-scored with a holdout, served over ASGI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

HOLDOUT_SHARE = 0.3
# Enough customers for every action the learners see to have 30 held-out rows in training.
CUSTOMERS = 2_500


@pytest.fixture(scope="module")
def uplift_data(tmp_path_factory, prefect_harness):
    """A data folder whose queue the uplift champion ranked, with a 30% holdout."""
    from features.sources.simulator import simulate
    from flows.build_features import build_features
    from flows.ingest import ingest
    from flows.score_batch import score_batch
    from flows.train import train

    sim_dir = tmp_path_factory.mktemp("uplift-sim") / "raw"
    simulate(sim_dir, customers=CUSTOMERS, seed=11)
    folder = tmp_path_factory.mktemp("uplift-served")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(folder))
        patch.setenv("AFTERSALE_OUTREACH_HOLDOUT_SHARE", str(HOLDOUT_SHARE))
        ingest(source="folder", path=sim_dir)
        build_features(materialize_to_online=True)
        train(models=["delay_risk", "churn", "delivery_estimate", "outreach_uplift"])
        queue_path = score_batch()
        meta = json.loads(pq.read_schema(queue_path).metadata[b"aftersale"])
        as_of = pd.Timestamp(meta["as_of"])
        patch.setenv("AFTERSALE_AS_OF", as_of.isoformat())
        yield folder, queue_path, as_of, meta


@pytest.fixture(scope="module")
def runtime(uplift_data):
    """The service's runtime over the folder. (Not a second ASGI app: BentoML registers
    its request metrics once per process, and the service tests build one; the routes
    themselves are tested there.)"""
    from aftersale.settings import get_settings
    from serving.runtime import Runtime

    return Runtime.start(get_settings())


def _raw(uplift_data, name: str) -> pd.DataFrame:
    return pq.read_table(uplift_data[0] / "raw" / "current" / f"{name}.parquet").to_pandas()


def _queue(uplift_data) -> pd.DataFrame:
    return pq.read_table(uplift_data[1]).to_pandas()


def _effects(uplift_data) -> pd.DataFrame:
    from serving.queue import EFFECTS_FILE

    return pq.read_table(uplift_data[1].parent / EFFECTS_FILE).to_pandas()


def test_the_queue_ranks_by_measured_uplift(uplift_data) -> None:
    _, _, _, meta = uplift_data
    queue = _queue(uplift_data)
    assert "outreach_uplift" in meta["models"]
    assert len(queue) > 0
    # Every queued action was predicted to help, with an interval around its prediction.
    assert (queue["uplift"] > 0).all()
    assert (queue["uplift_low"] <= queue["uplift"]).all()
    assert (queue["uplift"] <= queue["uplift_high"]).all()
    # Its reasons are the uplift model's, in words.
    assert (queue["reason"].str.len() > 0).all()
    # Value saved less the cost of the channel it goes out on, highest first: the due
    # actions, then the others, so the priorities fall in at most two runs.
    priority = queue["priority"].to_numpy()
    assert np.isfinite(priority).all()
    assert (np.diff(priority) > 1e-12).sum() <= 1


def test_queued_actions_are_about_the_customers_own_open_business(uplift_data) -> None:
    """Each queued action's subject belongs to its customer and is open at the decision
    instant, by the raw tables; its channel is one the customer consented to."""
    _, _, as_of, _ = uplift_data
    queue = _queue(uplift_data)
    orders = _raw(uplift_data, "orders")
    ships = _raw(uplift_data, "shipments").merge(orders[["order_id", "customer_id"]])
    invoices = _raw(uplift_data, "invoices")
    contacts = _raw(uplift_data, "contacts")
    customers = _raw(uplift_data, "customers").set_index("customer_id")
    owner = {
        **dict(zip(ships["shipment_id"], ships["customer_id"], strict=True)),
        **dict(zip(orders["order_id"], orders["customer_id"], strict=True)),
        **dict(zip(invoices["invoice_id"], invoices["customer_id"], strict=True)),
        **dict(zip(contacts["contact_id"], contacts["customer_id"], strict=True)),
    }
    ships = ships.set_index("shipment_id")
    invoices = invoices.set_index("invoice_id")
    contacts = contacts.set_index("contact_id")
    first_order = orders[orders["order_ts"] <= as_of].groupby("customer_id")["order_id"].first()
    for row in queue.itertuples():
        assert bool(customers.loc[row.customer_id, f"consent_{row.channel}"]), row
        if row.subject_id is None:
            assert row.action in ("winback_offer", "service_recovery_call"), row
            continue
        assert owner[row.subject_id] == row.customer_id, row
        if row.action == "delay_notice":
            parcel = ships.loc[row.subject_id]
            assert parcel["shipped_ts"] <= as_of
            assert pd.isna(parcel["delivered_ts"]) or parcel["delivered_ts"] > as_of, row
        elif row.action == "satisfaction_check":
            delivered = ships.loc[row.subject_id, "delivered_ts"]
            assert as_of - pd.Timedelta(days=7) < delivered <= as_of, row
        elif row.action == "payment_reminder":
            invoice = invoices.loc[row.subject_id]
            assert invoice["due_date"] < as_of
            assert pd.isna(invoice["paid_ts"]) or invoice["paid_ts"] > as_of, row
        elif row.action == "nps_survey":
            contact = contacts.loc[row.subject_id]
            assert bool(contact["resolved_first_contact"])
            assert as_of - pd.Timedelta(days=7) < contact["ts"] <= as_of, row
        elif row.action == "onboarding_followup":
            assert first_order.get(row.customer_id) == row.subject_id, row


def test_no_queued_customer_was_sent_an_action_within_the_cap_window(uplift_data) -> None:
    """The frequency cap counts the raw `outreach` log, whoever sent from it: by the raw
    table, no queued customer had a sent (not held-out) action in the 7 days before."""
    _, _, as_of, _ = uplift_data
    queue = _queue(uplift_data)
    log = _raw(uplift_data, "outreach")
    ts = pd.to_datetime(log["ts"], utc=True)
    recent = log[
        (~log["holdout"].astype(bool)) & (ts > as_of - pd.Timedelta(days=7)) & (ts <= as_of)
    ]
    # The data must hold such customers, or the check could not fail.
    assert recent["customer_id"].nunique() > 0
    assert not set(queue["customer_id"]) & set(recent["customer_id"])


def test_the_holdout_is_recorded_with_propensities_and_kept_from_schedulers(
    uplift_data, runtime
) -> None:
    _, _, as_of, meta = uplift_data
    queue = _queue(uplift_data)
    held = queue["holdout"].to_numpy(dtype=bool)
    assert meta["held_out"] == int(held.sum())
    assert meta["holdout_share"] == HOLDOUT_SHARE
    assert 0 < held.sum() < len(queue)
    np.testing.assert_allclose(queue.loc[held, "propensity"], HOLDOUT_SHARE)
    np.testing.assert_allclose(queue.loc[~held, "propensity"], 1 - HOLDOUT_SHARE)
    # The history keeps sent and held-out actions alike.
    history = pq.read_table(uplift_data[1].parent / "outreach_history.parquet").to_pandas()
    day = history[history["queue_date"] == as_of.strftime("%Y-%m-%d")]
    assert len(day) == len(queue)
    assert day["holdout"].sum() == held.sum()
    # Schedulers get the sent ones only, with the predicted uplift of each.
    from serving.outreach import select_actions

    body = select_actions(runtime.queue.get(), None, 10_000, None, None).model_dump(mode="json")
    served = pd.DataFrame(body["actions"])
    sent = queue[~held]
    assert body["total"] == len(sent)
    assert served["rank"].tolist() == sent["rank"].tolist()
    np.testing.assert_allclose(served["uplift"], sent["uplift"])
    np.testing.assert_allclose(served["uplift_low"], sent["uplift_low"])
    np.testing.assert_allclose(served["uplift_high"], sent["uplift_high"])
    assert not set(queue.loc[held, "rank"]) & set(served["rank"])


def test_churn_answers_name_the_best_action_of_the_batch(uplift_data, runtime) -> None:
    """`/v1/score/churn` answers each customer's best action as the batch measured it: the
    action of highest predicted uplift among the customer's candidates."""
    queue = _queue(uplift_data)
    effects = _effects(uplift_data).set_index("customer_id")
    assert (effects["uplift"] > 0).all()
    assert effects.index.is_unique
    # No queued action of a customer beats the customer's best one.
    for row in queue.itertuples():
        assert row.uplift <= effects.loc[row.customer_id, "uplift"] + 1e-12, row
    customers = _raw(uplift_data, "customers")["customer_id"].tolist()
    answered = []
    for start in range(0, len(customers), 100):
        body = runtime.score_churn(customers[start : start + 100]).model_dump(mode="json")
        answered += [r for r in body["results"] if r["status"] == "ok"]
    assert answered
    with_action = 0
    for answer in answered:
        customer = answer["customer_id"]
        if customer not in effects.index:
            assert answer["best_action"] is None, answer
            continue
        best = effects.loc[customer]
        assert answer["best_action"] == best["action"], answer
        assert answer["best_action_uplift"] == pytest.approx(best["uplift"])
        assert answer["best_action_uplift_low"] == pytest.approx(best["uplift_low"])
        assert answer["best_action_uplift_high"] == pytest.approx(best["uplift_high"])
        with_action += 1
    assert with_action > 0


def test_the_outreach_log_is_a_valid_contract_table(uplift_data, tmp_path) -> None:
    """What was queued and held out goes back as the `outreach` table the next training
    reads: the contract accepts it beside the raw tables it refers to."""
    import shutil

    from features.contract.validate import load_folder
    from serving.queue import outreach_log, read_history

    folder, _, _, _ = uplift_data
    log = outreach_log(read_history(uplift_data[1].parent))
    assert log["holdout"].any()
    raw = folder / "raw" / "current"
    target = tmp_path / "next"
    shutil.copytree(raw, target)
    earlier = pq.read_table(target / "outreach.parquet").to_pandas()
    both = pd.concat([earlier, log], ignore_index=True)
    both["ts"] = pd.to_datetime(both["ts"], utc=True).astype("datetime64[us, UTC]")
    pq.write_table(pa.Table.from_pandas(both, preserve_index=False), target / "outreach.parquet")
    tables, report = load_folder(target)
    assert report.ok, [str(v) for v in report.violations][:5]
    assert tables["outreach"].num_rows == len(earlier) + len(log)


def _batch(settings, inputs: dict, models: dict, tables=None):
    """Batch scoring of the flow's inputs and champions, given these raw tables (None: none)."""
    from flows.score_batch import rules_of
    from serving.batch import score_batch

    return score_batch(
        models,
        inputs["customers"],
        inputs["shipments"],
        inputs["invoices"],
        inputs["history"],
        inputs["as_of"],
        rules_of(settings),
        tables,
    )


def test_without_raw_tables_the_queue_ranks_with_the_context_missing(uplift_data) -> None:
    """Batch scoring given no raw tables (no proactive moments, nothing known of what an
    action is about) still ranks by the uplift model, its context features missing."""
    from aftersale.settings import get_settings
    from flows.score_batch import load_inputs, load_models

    settings = get_settings()
    inputs = load_inputs.fn(settings, None)
    models = load_models.fn(settings)
    assert "outreach_uplift" in models
    result = _batch(settings, inputs, models)
    assert len(result.queue) > 0
    assert (result.queue["uplift"] > 0).all()
    assert result.effects is not None


def test_the_queue_from_the_columns_it_reads_equals_the_queue_from_whole_tables(
    uplift_data,
) -> None:
    """Batch scoring reads only some columns of the larger raw tables; its queue, candidates
    and best effects are those the whole tables give."""
    from aftersale.settings import get_settings
    from features.contract.io import read_validated
    from features.ingest import latest_raw
    from flows.score_batch import CONTEXT_TABLES, RAW_TABLES, load_inputs, load_models

    settings = get_settings()
    inputs = load_inputs.fn(settings, None)
    models = load_models.fn(settings)
    whole = read_validated(latest_raw(settings.raw_root), tables=[*RAW_TABLES, *CONTEXT_TABLES])
    for name in ("tracking_events", "contacts"):
        assert inputs["tables"][name].num_columns < whole[name].num_columns
    read, full = (
        _batch(settings, inputs, models, tables)
        for tables in (inputs["tables"], {n: t for n, t in whole.items() if n != "customers"})
    )
    assert len(read.queue) > 0
    assert read.candidates == full.candidates
    pd.testing.assert_frame_equal(read.queue, full.queue)
    pd.testing.assert_frame_equal(read.effects, full.effects)


def test_explain_adds_up_to_the_best_actions_uplift(uplift_data, runtime) -> None:
    """`/v1/explain` of the uplift model: for each customer, the best action the churn answer
    names, every feature's contribution adding up to its predicted uplift (no link: the
    effect is a sum of regression trees), and the uplift the churn answer reports at the
    same instant; a customer without a helping action is `no_action`, one who never ordered
    `no_order`, as the churn answer says, an unknown one `unknown_id`."""
    effects = _effects(uplift_data)
    with_action = effects["customer_id"].head(40).tolist()
    customers = _raw(uplift_data, "customers")["customer_id"]
    without = customers[~customers.isin(effects["customer_id"])].head(5).tolist()
    asked = [*with_action, *without, "no-such-customer"]
    body = runtime.explain("outreach_uplift", asked).model_dump(mode="json")
    churn = runtime.score_churn(asked).model_dump(mode="json")["results"]
    assert body["model"]["name"] == "outreach_uplift"
    results = body["results"]
    assert [r["id"] for r in results] == asked
    assert results[-1]["status"] == "unknown_id"
    assert results[-1]["contributions"] == []
    explained = 0
    for result, answer in zip(results[:-1], churn[:-1], strict=True):
        if answer["status"] == "no_order":
            assert result["status"] == "no_order", result
            assert result["contributions"] == []
            continue
        if answer["best_action"] is None:
            assert result["status"] == "no_action", result
            assert result["contributions"] == []
            continue
        assert result["status"] == "ok", result
        assert result["action"] == answer["best_action"]
        contributions = [c["contribution"] for c in result["contributions"]]
        assert result["base_value"] + sum(contributions) == pytest.approx(result["output"])
        assert result["output"] == pytest.approx(result["score"], abs=1e-9)
        assert result["score"] == pytest.approx(answer["best_action_uplift"], rel=1e-12)
        magnitudes = [abs(c) for c in contributions]
        assert magnitudes == sorted(magnitudes, reverse=True)
        assert len({c["feature"] for c in result["contributions"]}) == len(contributions) > 5
        assert all(c["text"] for c in result["contributions"])
        explained += 1
    assert explained == len(with_action)
    unscored = sum(r["status"] in ("no_action", "no_order") for r in results)
    assert unscored == len(without) > 0


def test_the_monitor_measures_the_uplift_on_the_newest_holdouts(uplift_data) -> None:
    """The monitor's observed effect is the sent rows' repurchase rate less the held-out
    rows', counted from the raw `outreach` and `orders` tables over the actions the champion
    learned, in its newest labelled 91 days."""
    from aftersale.settings import get_settings
    from features.instants import watermark
    from flows.monitor import monitor_uplift
    from models.served.registry import load_champion

    quality = monitor_uplift.fn()
    _, model = load_champion("outreach_uplift", get_settings().tracking_uri)
    raw = {
        n: pa.Table.from_pandas(_raw(uplift_data, n)) for n in ("orders", "customers", "outreach")
    }
    outreach = raw["outreach"].to_pandas()
    orders = raw["orders"].to_pandas()
    ts = pd.to_datetime(outreach["ts"], utc=True)
    horizon = pd.Timedelta(days=90)
    end = watermark(raw)
    labelled = (ts + horizon <= end) & outreach["action"].isin(model.actions)
    last = ts[labelled].max()
    window = outreach[labelled & (ts > last - pd.Timedelta(days=91))]
    by_customer = {
        c: pd.to_datetime(g, utc=True) for c, g in orders.groupby("customer_id")["order_ts"]
    }
    bought = []
    for row in window.itertuples():
        theirs = by_customer.get(row.customer_id, pd.Series([], dtype="datetime64[ns, UTC]"))
        sent = pd.Timestamp(row.ts)
        bought.append(bool(((theirs > sent) & (theirs <= sent + horizon)).any()))
    bought = pd.Series(bought, index=window.index)
    held = window["holdout"].astype(bool)
    assert quality["rows"] == len(window)
    assert quality["held_out_rows"] == int(held.sum())
    observed = bought[~held].mean() - bought[held].mean()
    assert quality["observed_uplift"] == pytest.approx(observed)
    assert quality["observed_uplift_low"] < observed < quality["observed_uplift_high"]
    assert np.isfinite(quality["predicted_uplift"])
    assert np.isfinite(quality["qini"])
