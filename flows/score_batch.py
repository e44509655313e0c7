"""Flow `score_batch`: score every active customer and open shipment, queue the day's outreach.

The queue (with reasons for each selected action) is written atomically as Parquet under
the data folder's `serving/`, where schedulers read it and the service serves it; the
actions are added to the history the frequency cap counts.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from aftersale.console import report_stage
from aftersale.settings import Settings, get_settings
from features.instants import utc_instant

log = logging.getLogger(__name__)

RAW_TABLES = ("customers", "orders", "shipments", "invoices")
# Read where present: the proactive moments and what each action is about.
CONTEXT_TABLES = ("contacts", "returns", "tracking_events", "outreach")
# Columns read of the larger tables: those the queue uses (its customers' regions, the
# proactive moments, what each action is about); the rest (each scan's id, a contact's text
# and handling) would only be held: at a million customers 0.47 GiB of the 4.59 GiB held
# once the inputs are read.
COLUMNS = {
    "customers": ["customer_id", "region"],
    "tracking_events": ["shipment_id", "event_type", "event_ts"],
    "contacts": ["contact_id", "customer_id", "order_id", "ts", "reason", "resolved_first_contact"],
}


def rules_of(settings: Settings):
    """The outreach rules the settings give.

    Raises:
        ValueError: A channel setting names an unknown channel or a negative figure (the
            message names the environment variable).
    """
    from models.policies.outreach import OutreachRules

    try:
        return OutreachRules(
            capacity=settings.outreach_capacity,
            quiet_hours_start=settings.quiet_hours_start,
            quiet_hours_end=settings.quiet_hours_end,
            frequency_cap=settings.frequency_cap,
            frequency_cap_days=settings.frequency_cap_days,
            lost_after_days=settings.lost_after_days,
            channel_capacity=settings.outreach_channel_capacity,
            channel_cost=settings.outreach_channel_cost,
        )
    except ValueError as error:
        field, _, problem = str(error).partition(":")
        raise ValueError(f"AFTERSALE_OUTREACH_{field.upper()}:{problem}") from None


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def load_inputs(settings: Settings, as_of: datetime | None) -> dict:
    """Read the raw tables, the latest stored features and the outreach history."""
    import pyarrow as pa

    from features.build.parallel import watermark_of
    from features.contract.io import read_validated
    from features.ingest import latest_raw
    from features.store.latest import latest_rows
    from models.churn import has_ordered
    from models.policies.outreach import contacted
    from serving.batch import open_shipments, overdue_invoices
    from serving.queue import read_history

    raw = latest_raw(settings.raw_root)
    tables = read_validated(raw, tables=[*RAW_TABLES, *CONTEXT_TABLES], columns=COLUMNS)
    # By default the data's end: the latest thing that happened in any table (promises and
    # due dates lie ahead).
    instant = utc_instant(as_of if as_of is not None else watermark_of(raw, happened=True))
    current = settings.features_dir / "current"
    customers = latest_rows(current / "customer_snapshots", "customer_id", instant)
    customers = customers[has_ordered(customers["orders_total"])]
    ships = open_shipments(tables, instant)
    # Only the open shipments' rows: most stored parcels are delivered long since.
    features = latest_rows(
        current / "shipment_events",
        "shipment_id",
        instant,
        pa.Table.from_pandas(ships[["shipment_id"]], preserve_index=False),
    )
    history = read_history(settings.serving_dir)
    # A rerun for the same day replaces that day's queue: its own earlier actions must not
    # count against the frequency cap; every action the raw log shows as sent does.
    today = history["queue_date"] == instant.strftime("%Y-%m-%d")
    logged = tables["outreach"].to_pandas() if "outreach" in tables else None
    if logged is not None:
        logged = logged[~logged["outreach_id"].isin(history.loc[today, "outreach_id"])]
    history = contacted(history[~today], logged)
    shipments = features.merge(ships[["shipment_id", "customer_id"]], on="shipment_id")
    return {
        "as_of": instant,
        "customers": customers,
        "shipments": shipments,
        "invoices": overdue_invoices(tables, instant),
        "history": history,
        "regions": sorted(tables["customers"].column("region").unique().to_pylist()),
        "tables": {n: t for n, t in tables.items() if n != "customers"},
    }


@task(cache_policy=NO_CACHE)
def load_models(settings: Settings) -> dict:
    """The registry's champions of the churn and delay-risk models, and of the delivery
    estimate (with its newest published offsets) and the outreach uplift where they are
    registered."""
    from dataclasses import replace

    from models.served.registry import ModelUnavailableError
    from models.served.window import OFFSETS_FOLDER, read_published_offsets
    from serving.batch import UPLIFT_MODEL
    from serving.runtime import SERVED, WINDOW_MODEL
    from serving.scoring import load_champion, load_uplift_champion, load_window_champion

    uri = settings.tracking_uri
    models = {name: load_champion(name, uri) for name in SERVED}
    try:
        window = load_window_champion(WINDOW_MODEL, uri)
        # The offsets the service serves: the newest published for this version.
        published = read_published_offsets(settings.serving_dir / OFFSETS_FOLDER, window.version)
        if published is not None:
            window = replace(window, model=replace(window.model, offsets=published.offsets))
        models[WINDOW_MODEL] = window
    except ModelUnavailableError as error:
        # Delay notices then follow the risk alone.
        log.warning("no delivery windows for the outreach: %s", error)
    try:
        models[UPLIFT_MODEL] = load_uplift_champion(UPLIFT_MODEL, uri)
    except ModelUnavailableError as error:
        # The queue then ranks by risk × the assumed uplift of each action.
        log.warning("no measured uplift for the outreach: %s", error)
    return models


@task(cache_policy=NO_CACHE)
def build_queue(models: dict, inputs: dict, settings: Settings):
    """Score, plan the outreach and explain the selected actions."""
    from serving.batch import score_batch as run

    def score(client=None):
        return run(
            models,
            inputs["customers"],
            inputs["shipments"],
            inputs["invoices"],
            inputs["history"],
            inputs["as_of"],
            rules_of(settings),
            inputs["tables"],
            client=client,
        )

    if not settings.dask_address:
        return score()
    from aftersale.cluster import dask_client

    with dask_client(settings.dask_address) as client:
        return score(client)


@task(cache_policy=NO_CACHE)
def publish_queue(result, inputs: dict, models: dict, settings: Settings) -> Path:
    """Draw the day's holdout, write the queue atomically and record its actions (sent and
    held out) for the frequency cap and the next training."""
    from models.policies.outreach import hold_out
    from serving.queue import EFFECTS_FILE, record_queued, write_queue

    as_of = inputs["as_of"]
    queue = result.queue
    # One seed per business and day: rerunning a day draws the same holdout.
    held, propensity = hold_out(
        queue, settings.outreach_holdout_share, (settings.seed, int(as_of.strftime("%Y%m%d")))
    )
    queue = queue.assign(holdout=held, propensity=propensity)
    meta = {
        "as_of": as_of.isoformat(),
        "queue_date": as_of.strftime("%Y-%m-%d"),
        "regions": inputs["regions"],
        "models": {name: m.version for name, m in models.items()},
        "customers_scored": result.customers_scored,
        "shipments_scored": result.shipments_scored,
        "holdout_share": settings.outreach_holdout_share,
        "held_out": int(held.sum()),
    }
    if result.effects is not None:
        write_queue(result.effects, settings.serving_dir, meta, EFFECTS_FILE)
    else:
        # No uplift champion: yesterday's effects would outlive the model that made them.
        (settings.serving_dir / EFFECTS_FILE).unlink(missing_ok=True)
    path = write_queue(queue, settings.serving_dir, meta)
    record_queued(queue, settings.serving_dir, as_of)
    return path


@flow(name="score_batch")
def score_batch(as_of: datetime | None = None) -> Path:
    """Score every active customer and open shipment and publish the day's outreach queue."""
    settings = get_settings()
    with report_stage("score") as stage:
        inputs = load_inputs(settings, as_of)
        models = load_models(settings)
        result = build_queue(models, inputs, settings)
        path = publish_queue(result, inputs, models, settings)
        stage.rows, stage.unit = result.customers_scored + result.shipments_scored, "scored"
    log.info(
        "queued %d actions from %d customers and %d open shipments",
        len(result.queue),
        result.customers_scored,
        result.shipments_scored,
    )
    return path
