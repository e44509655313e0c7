"""`aftersale`: the one entry point for every job.

Heavy libraries are imported inside the commands so `aftersale --help` stays instant.
"""

from __future__ import annotations

import os
import sys
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from features.sources.simulator.params import Shock

app = typer.Typer(
    name="aftersale",
    help="Post-purchase risk scores, reasons and actions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Piped or logged output gets room for the tables instead of an 80-column default.
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


class FileFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"


class Source(StrEnum):
    simulator = "simulator"
    folder = "folder"
    olist = "olist"


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant from the command line (naive: UTC), or a usage error naming it.

    Raises:
        typer.BadParameter: The text is not an ISO 8601 date or instant (exit code 2).
    """
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 instant, e.g. 2025-12-31T23:00:00+00:00 or 2025-12-31"
        ) from None


def parse_day(text: str, option: str) -> date:
    """A calendar day from the command line, or a usage error naming the option.

    Raises:
        typer.BadParameter: The text is not an ISO 8601 date (exit code 2).
    """
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a day, e.g. 2025-06-30", param_hint=option
        ) from None


# Commands whose jobs run units of work on the Dask cluster of `AFTERSALE_DASK_ADDRESS`.
ON_CLUSTER = {"features", "score", "train", "demo", "nightly"}


@app.callback()
def main(
    context: typer.Context,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also show the libraries' logs.")
    ] = False,
) -> None:
    from aftersale.console import log_path, quiet_prefect, route_logs
    from aftersale.settings import SettingsError, get_settings

    try:
        settings = get_settings()
    except SettingsError as exc:
        fail(exc)
    # Before any command imports MLflow or Prefect, which read their logging set-up then.
    route_logs(log_path(settings), verbose=verbose, console=err_console)
    quiet_prefect()
    if settings.dask_address and context.invoked_subcommand in ON_CLUSTER:
        from aftersale.cluster import ClusterError, dask_client

        # Before the job starts, not as a task's failure deep inside it.
        try:
            with dask_client(settings.dask_address):
                pass
        except ClusterError as exc:
            fail(exc)


# The opening line of a job that runs flows: importing the libraries and starting Prefect's
# temporary API take seconds before the first stage.
STARTING = "start (libraries, Prefect)"


def parse_shock(text: str) -> Shock:
    """A simulator shock from its `--shock` form, or a usage error naming the option.

    Forms: `CARRIER:YYYY-MM-DD[:FACTOR]` (a carrier slowdown), `region:CODE:YYYY-MM-DD[:SHARE]`
    (a region opening) and `price:YYYY-MM-DD:FACTOR` (a price change).

    Raises:
        typer.BadParameter: A malformed form, day or number (exit code 2).
    """
    from features.sources.simulator.params import (
        OPENABLE_REGIONS,
        CarrierSlowdown,
        PriceChange,
        RegionOpening,
    )

    forms = "CARRIER:YYYY-MM-DD[:FACTOR], region:CODE:YYYY-MM-DD[:SHARE] or price:YYYY-MM-DD:FACTOR"

    def bad(why: str) -> typer.BadParameter:
        return typer.BadParameter(f"{text!r}: {why}; write {forms}", param_hint="--shock")

    def number(value: str, what: str, default: float | None) -> float:
        if not value and default is not None:
            return default
        try:
            return float(value)
        except ValueError:
            raise bad(f"the {what} {value!r} is not a number") from None

    parts = text.split(":")
    kind = parts[0].lower()
    if kind == "region":
        if len(parts) not in (3, 4) or not parts[1]:
            raise bad("a region opening names its region and day")
        region = parts[1].upper()
        openable = [r.code for r in OPENABLE_REGIONS]
        if region not in openable:
            raise bad(f"unknown region {parts[1]!r}, regions that can open: {', '.join(openable)}")
        share = number(parts[3] if len(parts) == 4 else "", "share", 0.15)
        if not 0 < share <= 1:
            raise bad(f"the share {share} is not in (0, 1]")
        return RegionOpening(region, parse_day(parts[2], "--shock"), share)
    if kind == "price":
        if len(parts) != 3:
            raise bad("a price change names its day and factor")
        factor = number(parts[2], "factor", None)
        if not factor > 0:
            raise bad(f"the factor {factor} is not positive")
        return PriceChange(parse_day(parts[1], "--shock"), factor)
    if len(parts) not in (2, 3) or not parts[0]:
        raise bad("a carrier slowdown names its carrier and day")
    factor = number(parts[2] if len(parts) == 3 else "", "factor", 1.6)
    if not factor > 0:
        raise bad(f"the factor {factor} is not positive")
    return CarrierSlowdown(parts[0], parse_day(parts[1], "--shock"), factor)


def fail(message: object, code: int = 2) -> NoReturn:
    """End the command with a named error on standard error, never a traceback."""
    err_console.print(f"[red]error[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# What a command may need, and the step that makes it.
RAW, FEATURES = "raw", "features"


def require(*needs: str, champions: tuple[str, ...] = ()) -> None:
    """End the command, before anything starts, where a step it needs has not run yet: one
    line that says which step to run first, exit code 1, never a traceback from deep inside
    a flow.

    Args:
        needs: `RAW` (ingested raw tables), `FEATURES` (published feature tables and the
            Feast definitions applied).
        champions: Models that must have a champion to serve (in the registry, or a local
            copy standing in while the registry is unreachable).
    """
    from aftersale.settings import get_settings

    settings = get_settings()
    if RAW in needs:
        from features.ingest import latest_raw

        try:
            latest_raw(settings.raw_root)
        except FileNotFoundError as error:
            fail(error, code=1)
    if FEATURES in needs:
        from features.store.config import config_values

        registry = config_values(settings)["registry"]
        unregistered = (
            registry.get("registry_type", "file") == "file" and not Path(registry["path"]).is_file()
        )
        if not (settings.features_dir / "current").exists() or unregistered:
            fail(
                f"no published features under {settings.features_dir}: run "
                "`aftersale features build` first",
                code=1,
            )
    if champions:
        from models.served.registry import unservable
        from serving.runtime import CHAMPION_COPIES

        copies = settings.serving_dir / CHAMPION_COPIES
        for name in champions:
            why = unservable(name, settings.tracking_uri, copies)
            if why is not None:
                fail(f"{why}: run `aftersale train` first", code=1)


def stages(opening: str | None = None):
    """The stage display of a long job (`aftersale.console.StageDisplay`).

    Commands open it before importing the flows, so that its `opening` line covers the wait.
    """
    from aftersale.console import StageDisplay, log_path
    from aftersale.settings import get_settings

    return StageDisplay(console, log_path(get_settings()), opening)


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Folder to write the raw tables to.")],
    customers: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 7,
    months: Annotated[int, typer.Option(min=18, help="Months of history.")] = 24,
    file_format: Annotated[FileFormat, typer.Option("--format", help="Output format.")] = (
        FileFormat.parquet
    ),
    workers: Annotated[int, typer.Option(min=1, help="Processes generating chunks.")] = 1,
    until: Annotated[
        str | None,
        typer.Option(help="Write the history as known at the end of this day (YYYY-MM-DD)."),
    ] = None,
    day: Annotated[
        str | None,
        typer.Option(
            help="Write this day's batch (YYYY-MM-DD): its new rows and the updates of "
            "earlier rows, for `aftersale ingest --source folder` to append."
        ),
    ] = None,
    shock: Annotated[
        list[str] | None,
        typer.Option(
            help="A regime change from a day; repeatable. CARRIER:YYYY-MM-DD[:FACTOR]: the "
            "carrier's median transit times FACTOR (default 1.6). region:CODE:YYYY-MM-DD"
            "[:SHARE]: a new region (SE, FI, PT or GR) receives SHARE of the new customers "
            "(default 0.15) on new, slower lanes. price:YYYY-MM-DD:FACTOR: offered items cost "
            "FACTOR times their price."
        ),
    ] = None,
) -> None:
    """Simulate a post-purchase business into a folder of contract tables."""
    from dataclasses import replace

    from aftersale.console import report_stage
    from features.sources import simulator
    from features.sources.simulator.params import DEFAULT_PARAMS

    if until is not None and day is not None:
        fail("--until and --day exclude each other: a history or one day's batch")
    until_day = parse_day(until, "--until") if until is not None else None
    batch_day = parse_day(day, "--day") if day is not None else None
    shocks = [parse_shock(text) for text in shock or []]
    params = replace(DEFAULT_PARAMS, shocks=tuple(shocks))
    kwargs = {
        "customers": customers,
        "seed": seed,
        "fmt": file_format.value,
        "months": months,
        "workers": workers,
    }
    with stages(), report_stage("simulate") as stage:
        try:
            if until_day is not None:
                result = simulator.simulate_until(out, until_day, **kwargs, params=params)
            elif batch_day is not None:
                result = simulator.simulate_day(out, batch_day, **kwargs, params=params)
            else:
                result = simulator.simulate(out, **kwargs, shocks=tuple(shocks))
        except ValueError as exc:
            fail(exc)
        raw_rows = sum(n for name, n in result.rows.items() if not name.startswith("_truth/"))
        stage.rows = raw_rows
    what = "" if until_day is None else f" up to {until_day}"
    what = what if batch_day is None else f", the batch of {batch_day},"
    table = Table(title=f"Simulated {customers:,} customers{what} into {out}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in result.rows.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)
    rate = f"{raw_rows:,} contract rows in {result.seconds:.1f} s"
    if until is not None or day is not None:
        console.print(f"{rate}; _batch.json names the day")
        return
    console.print(
        f"{rate} ({raw_rows / result.seconds:,.0f} rows/s); _truth/ holds the true "
        "probabilities, which models never read"
    )


@app.command()
def validate(
    folder: Annotated[
        Path,
        typer.Argument(
            exists=True,
            file_okay=False,
            help="Folder of <table>.parquet or <table>.csv files.",
        ),
    ],
) -> None:
    """Check a folder of raw tables against the data contract; exit 1 on any violation."""
    import time

    from features.contract.validate import validate_folder

    started = time.perf_counter()
    report = validate_folder(folder)
    seconds = time.perf_counter() - started
    for note in report.notes:
        console.print(f"[dim]note: {note}[/dim]")
    for problem in report.violations:
        err_console.print(f"[red]error[/red] {problem}", highlight=False, soft_wrap=True)
    rate = report.total_rows / seconds if seconds else float("inf")
    summary = (
        f"{report.total_rows:,} rows in {len(report.rows)} tables, "
        f"{seconds:.1f} s ({rate:,.0f} rows/s)"
    )
    if report.ok:
        console.print(f"[green]valid[/green]: {summary}")
        return
    err_console.print(f"[red]{len(report.violations)} violations[/red]: {summary}")
    raise typer.Exit(code=1)


@app.command()
def ingest(
    source: Annotated[Source, typer.Option(help="Where the data come from.")] = Source.simulator,
    path: Annotated[
        Path | None,
        typer.Option(exists=True, help="Folder of contract tables, or the Olist CSV."),
    ] = None,
    customers: Annotated[int | None, typer.Option(min=1, help="Simulated customers.")] = None,
    seed: Annotated[int | None, typer.Option(help="Simulator seed.")] = None,
) -> None:
    """Validate a source and publish it as the current raw data (flow `ingest`).

    A folder whose `_batch.json` names a day (`aftersale simulate --day`) is that day's
    batch: it is appended to the current raw data, and ingesting it again changes nothing.
    """
    from aftersale.settings import get_settings
    from features import versioned
    from features.ingest import BatchError, ContractError, day_manifest

    raw_root = get_settings().raw_root
    before = versioned.current(raw_root)
    try:
        day = day_manifest(path) if source == Source.folder and path is not None else None
        with stages(STARTING):
            from flows.ingest import ingest as ingest_flow

            folder = ingest_flow(source=source.value, path=path, customers=customers, seed=seed)
    except (ContractError, BatchError) as exc:
        err_console.print(f"[red]rejected[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    if day is None:
        console.print(f"published raw data: {folder}")
    elif folder == before:
        console.print(f"unchanged: day {day.day} was already ingested; current raw data: {folder}")
    else:
        console.print(f"appended day {day.day}: {folder}")


features_app = typer.Typer(help="Feature tables and the Feast store.", no_args_is_help=True)
app.add_typer(features_app, name="features")


@features_app.command("build")
def features_build(
    materialize: Annotated[bool, typer.Option(help="Also materialise to the online store.")] = True,
) -> None:
    """Compute and publish feature tables, apply the Feast repo (flow `build_features`)."""
    require(RAW)
    with stages(STARTING):
        from flows.build_features import build_features

        version = build_features(materialize_to_online=materialize)
    console.print(f"published features: {version}")


@features_app.command("materialize")
def features_materialize() -> None:
    """Materialise new offline rows into the online store, up to the data's end."""
    from aftersale.console import report_stage
    from aftersale.settings import get_settings
    from features.build.parallel import watermark_of
    from features.ingest import latest_raw
    from features.store.config import feature_store
    from features.store.sync import materialize

    require(RAW, FEATURES)
    settings = get_settings()
    # From the Parquet statistics, as the flow does: reading the tables for their latest
    # instant held them all in memory (about 15 GiB at 3,000,000 customers).
    end = watermark_of(latest_raw(settings.raw_root), happened=True).to_pydatetime()
    with stages(), report_stage("materialise") as stage:
        runs = materialize(feature_store(settings), end)
        stage.rows, stage.unit = len(runs), "views"
    for run in runs:
        kind = "incremental" if run.incremental else "full"
        console.print(f"{run.view}: {kind} {run.start:%Y-%m-%d} … {run.end:%Y-%m-%d %H:%M}")


@app.command()
def train(
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Model to train (repeatable; default: all)."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            help="Train on this dataset instead, in <data_dir>/datasets/<name>: a folder of "
            "contract tables, or the Olist sample (its folder or CSV).",
        ),
    ] = None,
    test_fraction: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="Latest share of decisions to test on (Olist default 0.3)."
        ),
    ] = None,
) -> None:
    """Train, evaluate, log and register models on the current data (flow `train`).

    `--model contact_reason` trains the contact-reason text classifier instead, on Bitext's
    messages (`../shared/data`), and registers it; ingest infers missing contact reasons
    with its champion.
    """
    from models import contact_reason

    if model and contact_reason.NAME in model:
        if len(model) > 1 or data is not None:
            err_console.print(
                f"[red]--model[/red]: {contact_reason.NAME} trains alone, on Bitext's messages"
            )
            raise typer.Exit(code=2)
        train_contact_reason()
        return
    if data is None:
        require(RAW, FEATURES)
    with stages(STARTING):
        from models import MODELS

        unknown = [m for m in model or [] if m not in MODELS]
        if unknown:
            err_console.print(f"[red]--model[/red]: unknown {unknown}; known: {sorted(MODELS)}")
            raise typer.Exit(code=2)
        if data is None:
            from flows.train import train as train_flow
            from models.spec import SplitError

            try:
                summaries = train_flow(models=model or None, test_fraction=test_fraction)
            except SplitError as exc:
                err_console.print(f"[red]rejected[/red] {exc}", highlight=False, soft_wrap=True)
                raise typer.Exit(code=1) from None
        else:
            from flows.train_dataset import DatasetError, train_dataset

            try:
                run = train_dataset(data, models=model or None, test_fraction=test_fraction)
            except (DatasetError, FileNotFoundError, ValueError) as exc:
                err_console.print(f"[red]--data[/red]: {exc}", highlight=False, soft_wrap=True)
                raise typer.Exit(code=1) from None
    if data is None:
        console.print(render_models(summaries))
        return
    split = "each model's split" if run.test_fraction is None else f"latest {run.test_fraction:.0%}"
    console.print(f"dataset {run.dataset.name} ({run.dataset.source}) in {run.data_dir}")
    console.print(render_models(run.models, title=f"Models (test window: {split} by time)"))
    for name, reason in run.skipped.items():
        console.print(f"[yellow]skipped[/yellow] {name}: {reason}", highlight=False)
    for note in run.notes:
        console.print(f"note: {note}", highlight=False)


def train_contact_reason() -> None:
    """Train and register the contact-reason text classifier; print its test accuracy and
    whether it became the champion."""
    from aftersale.settings import get_settings

    with stages(STARTING):
        from training.text_reason import train_text_reason

        try:
            result = train_text_reason(get_settings())
        except FileNotFoundError as exc:
            err_console.print(f"[red]rejected[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None
    accuracy = result.metrics["accuracy"]
    console.print(
        f"{result.name}: test accuracy {accuracy:.3f} "
        f"(baseline {result.baseline_metrics['accuracy']:.3f}); version {result.version}: "
        f"{result.promotion.reason}",
        highlight=False,
    )


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address (default: AFTERSALE_SERVE_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: AFTERSALE_SERVE_PORT).")] = None,
) -> None:
    """Serve scores, reasons and the outreach queue over HTTP (`bentoml serve`).

    This process becomes `bentoml serve` (exec, same process id), so a supervisor's signals
    reach the server itself: SIGTERM stops it and frees the port, with no child left behind.
    """
    import sys

    from aftersale.settings import get_settings
    from serving.access import KeyConfigError, load_keys

    settings = get_settings()
    try:
        keys = load_keys(settings)
    except KeyConfigError as error:
        fail(error)
    from models.served.registry import answer_quickly
    from serving.runtime import SERVED

    # As the service does: a registry that is down must not hold the start for minutes.
    answer_quickly()
    # Without them the server's workers would fail their start-up and be restarted forever.
    require(champions=tuple(SERVED))
    if not keys:
        err_console.print(
            "warning: no API keys configured (AFTERSALE_API_KEYS, AFTERSALE_API_KEYS_FILE or "
            "`aftersale key NAME --scope …`): every route but the probes, the metrics and the "
            "tracking page answers 401"
        )
    root = Path(__file__).resolve().parent.parent
    command = [
        *[sys.executable, "-m", "bentoml", "serve", "serving.service:Aftersale"],
        *["--host", host or settings.serve_host, "--port", str(port or settings.serve_port)],
        *["--working-dir", str(root)],
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


@app.command()
def key(
    name: Annotated[str, typer.Argument(help="Who the key is for, e.g. scheduler or crm.")],
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope", help="A scope the key holds (repeat): score:read, outreach:read, admin."
        ),
    ],
) -> None:
    """Create an API key for the service (or replace the key of that name) and print it once.

    Only the key's digest is written, to AFTERSALE_API_KEYS_FILE or
    <data_dir>/secrets/api_keys; the service reads that file when it starts.
    """
    from aftersale.settings import get_settings
    from serving.access import KeyConfigError, add_key, default_keys_file

    path = default_keys_file(get_settings())
    try:
        secret = add_key(path, name, scope)
    except KeyConfigError as error:
        raise typer.BadParameter(str(error), param_hint="'NAME' / '--scope'") from None
    console.print(f"key {name} ({', '.join(dict.fromkeys(scope))}) written to {path}")
    typer.echo(secret)


@app.command()
def token(
    order_id: Annotated[str, typer.Argument(help="The order whose tracking page it opens.")],
    ttl: Annotated[
        int, typer.Option(min=1, help="Seconds the token stays valid (default: a day).")
    ] = 86_400,
) -> None:
    """Print a signed token for an order's tracking page (what the shop's backend mints)."""
    from aftersale.settings import get_settings
    from serving.tokens import TokenConfigError, load_secrets, mint, token_secrets_file

    settings = get_settings()
    try:
        keys = load_secrets(settings)
    except TokenConfigError as error:
        fail(error)
    if not keys:
        fail(
            "no tracking-token secret: set AFTERSALE_TOKEN_SECRET or write one "
            f"to {token_secrets_file(settings)} (`make demo` creates one)"
        )
    typer.echo(mint(order_id, keys[0], ttl))


@app.command()
def nightly(
    inbox: Annotated[
        Path | None,
        typer.Option(
            file_okay=False, help="Where day batches arrive (default: AFTERSALE_INBOX_DIR)."
        ),
    ] = None,
    through: Annotated[
        str | None, typer.Option(help="Run no day after this one (YYYY-MM-DD).")
    ] = None,
) -> None:
    """Run the night (flow `nightly`): the pipeline on every day batch waiting in the inbox
    after the current data's last day, one night per day in day order."""
    from aftersale.settings import get_settings

    last = parse_day(through, "--through") if through is not None else None
    folder = inbox if inbox is not None else get_settings().inbox
    with stages(STARTING):
        from features.ingest import BatchError, ContractError
        from flows.nightly import nightly as nightly_flow
        from flows.pipeline import PipelineError

        try:
            done = nightly_flow(inbox=folder, through=last)
        except (FileNotFoundError, BatchError, ContractError, PipelineError) as exc:
            err_console.print(f"[red]failed[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None
    if not done.days:
        console.print(
            f"nothing to run: the data end on {done.through_before} and no later day waits "
            f"in {folder}"
        )
        return
    for day, night in zip(done.days, done.nights, strict=True):
        trained = ", ".join(summary.name for summary in night.models) or "none"
        console.print(f"night of {day}: trained {trained}; queue {night.queue}")


@app.command()
def schedule(
    work_pool: Annotated[
        str | None,
        typer.Option(
            help="Register the deployments with this Prefect work pool, for its workers to "
            "run, instead of serving them from this process."
        ),
    ] = None,
) -> None:
    """Put the nightly run and the weekly retrain on the Prefect server of PREFECT_API_URL at
    AFTERSALE_NIGHTLY_AT and AFTERSALE_RETRAIN_AT (local times in
    AFTERSALE_SCHEDULE_TIMEZONE), and serve them until stopped, or register them with a work
    pool."""
    from aftersale.settings import get_settings

    settings = get_settings()
    from flows.schedule import NoServerError, api_url, register, schedules, serve

    try:
        url = api_url()
    except NoServerError as exc:
        fail(exc)
    for name, cron in schedules(settings).items():
        console.print(
            f"{name}: cron '{cron.cron}' in {cron.timezone}", highlight=False, soft_wrap=True
        )
    console.print(f"day batches are read from {settings.inbox}; server {url}", highlight=False)
    if work_pool is not None:
        for name, deployment in register(settings, work_pool).items():
            console.print(f"registered {name} ({deployment}) with work pool {work_pool}")
        console.print(f"start a worker: prefect worker start --pool {work_pool}")
        return
    console.print("serving; stop with Ctrl-C or SIGTERM")
    serve(settings)


@app.command()
def score(
    as_of: Annotated[
        datetime | None,
        typer.Option(
            parser=parse_instant,
            metavar="INSTANT",
            help="Decision instant, ISO 8601; naive is UTC (default: the data's end).",
        ),
    ] = None,
    top: Annotated[int, typer.Option(min=0, help="Queue rows to print.")] = 10,
) -> None:
    """Score every active customer and open shipment; write the day's outreach queue."""
    from serving.runtime import SERVED

    require(RAW, FEATURES, champions=tuple(SERVED))
    with stages(STARTING):
        from flows.score_batch import score_batch

        path = score_batch(as_of=as_of)
    console.print(render_queue(path, top))


@app.command()
def monitor(
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Model to monitor (repeatable; default: all)."),
    ] = None,
    days: Annotated[
        int, typer.Option(min=1, help="Newest days compared with the training window.")
    ] = 28,
) -> None:
    """Drift of each champion's newest days against its training window (flow `monitor`)."""
    from aftersale.collector import libraries_loading
    from aftersale.memory import arrow_allocations_from_jemalloc
    from models.served.registry import ModelUnavailableError

    require(RAW, FEATURES)
    try:
        with stages(STARTING):
            with libraries_loading():
                from flows.monitor import monitor as monitor_flow
                from flows.monitor import read_ahead

            arrow_allocations_from_jemalloc()
            # The raw tables are read while Prefect starts.
            read_ahead(model or None)
            results = monitor_flow(models=model or None, window_days=days)
    except (ModelUnavailableError, ValueError) as exc:
        err_console.print(f"[red]rejected[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    from flows.monitor import MonitorResult

    windows = [r for r in results if not isinstance(r, MonitorResult)]
    results = [r for r in results if isinstance(r, MonitorResult)]
    for result in results:
        console.print(render_drift(result))
    console.print(render_quality([r.quality for r in results if r.quality is not None]))
    for result in results:
        quality = result.quality or {}
        if "policy_value_dr" in quality:
            console.print(
                f"Offer policy of {result.model} on {quality['policy_window_start']:%Y-%m-%d}.."
                f"{quality['policy_window_end']:%Y-%m-%d} ({quality['policy_rows']:,} offer "
                f"decisions), value per decision (DR): {quality['policy_value_dr']:.3f} "
                f"[{quality['policy_value_dr_low']:.3f}, {quality['policy_value_dr_high']:.3f}] "
                f"(test {quality['test_policy_value_dr']:.3f}); popularity "
                f"{quality['policy_popularity_dr']:.3f}, random {quality['policy_random_dr']:.3f}, "
                f"what the logged offers earned {quality['policy_logging_mean']:.3f}",
                highlight=False,
            )
    for quality in windows:
        if quality is not None and quality["model"] == "outreach_uplift":
            console.print(
                f"Outreach uplift on {quality['window_start']:%Y-%m-%d}.."
                f"{quality['window_end']:%Y-%m-%d} ({quality['rows']:,} sends and holdouts, "
                f"{quality['held_out_rows']:,} held out): observed "
                f"{quality['observed_uplift']:+.3f} [{quality['observed_uplift_low']:+.3f}, "
                f"{quality['observed_uplift_high']:+.3f}], predicted "
                f"{quality['predicted_uplift']:+.3f}; Qini {quality['qini']:.4f} "
                f"(test {quality['test_qini']:.4f}), uplift among the top share "
                f"{quality['uplift_at_capacity']:+.3f}",
                highlight=False,
            )
        elif quality is not None:
            console.print(
                f"Delivery windows on {quality['window_start']:%Y-%m-%d}.."
                f"{quality['window_end']:%Y-%m-%d} ({quality['rows']:,} parcel decisions): "
                f"MAE {quality['mae_days']:.2f} days (test {quality['test_mae_days']:.2f}), "
                f"coverage {quality['coverage']:.1%} (test {quality['test_coverage']:.1%}), "
                f"median width {quality['median_width_days']:.0f} days",
                highlight=False,
            )
    for result in results:
        if result.retrain:
            console.print(
                f"[yellow]retrain due[/yellow] {result.model}: {'; '.join(result.retrain)}",
                highlight=False,
            )


def render_quality(rows: list[dict]) -> Table:
    """Each champion's AUC and ECE on its newest labelled window, beside its test window's."""
    table = Table(title="Realised quality on the newest labelled window")
    columns = ("model", "window", "rows", "AUC", "estimated", "test AUC", "ECE", "test ECE")
    for column in (*columns, "estimated AUC, newest days"):
        table.add_column(column, justify="left" if column in ("model", "window") else "right")
    keys = ("roc_auc", "estimated_roc_auc", "test_roc_auc", "ece", "test_ece")
    for row in rows:
        table.add_row(
            row["model"],
            f"{row['window_start']:%Y-%m-%d}..{row['window_end']:%Y-%m-%d}",
            f"{row['rows']:,}",
            *(f"{row[k]:.3f}" for k in keys),
            f"{row.get('estimated_current_roc_auc', float('nan')):.3f}",
        )
    table.caption = (
        "estimated: AUC from the calibrated scores alone (CBPE), as it would be read before "
        "the labels arrive"
    )
    return table


def _drift_verdict(row) -> str:
    """ "yes" (red), "yes, trending" (a column that drifts within the training window too),
    or "no"."""
    if not row.drifted:
        return "no"
    trending = getattr(row, "trending", False)
    # A segment's rows leave it missing (NaN).
    trending = bool(trending) and not isinstance(trending, float)
    return "[yellow]yes, trending[/yellow]" if trending else "[red]yes[/red]"


def render_drift(result) -> Table:
    """One model's drift: every column on the whole windows, then the segments that drifted."""
    table = Table(
        title=f"Drift of {result.model} v{result.version}: "
        f"{result.current_span[0]:%Y-%m-%d}..{result.current_span[1]:%Y-%m-%d} against its "
        f"training window {result.reference_span[0]:%Y-%m-%d}..{result.reference_span[1]:%Y-%m-%d}"
    )
    for column in ("segment", "column", "method", "value", "threshold", "drifted"):
        table.add_column(column, justify="right" if column in ("value", "threshold") else "left")
    frame = result.table
    whole = frame[frame["segment"] == "all"].sort_values(
        ["drifted", "kind", "column"], ascending=[False, True, True]
    )
    parts = frame[(frame["segment"] != "all") & frame["drifted"]]
    for row in [*whole.itertuples(), *parts.itertuples()]:
        table.add_row(
            row.segment,
            row.column,
            row.method,
            f"{row.value:.3g}",
            f"{row.threshold:.3g}",
            _drift_verdict(row),
        )
    crossed = int(whole[whole["kind"] == "feature"]["drifted"].sum())
    total = int((whole["kind"] == "feature").sum())
    table.caption = (
        f"{crossed} of {total} features drifted; {parts['segment'].nunique()} segments "
        f"drifted. Trending: the column drifts within the training window itself too, and "
        f"its drift marks nothing alone. Report: {result.report} (MLflow run {result.run_id})"
    )
    return table


@app.command()
def report(
    out: Annotated[
        Path | None,
        typer.Option(file_okay=False, help="Folder to write report.html to."),
    ] = None,
    png: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="Also draw the top of the page with headless Chromium into this PNG file.",
        ),
    ] = None,
) -> None:
    """Write the analysts' HTML report on the current raw data (default folder:
    <data_dir>/reports): contact-centre measures by reason, customer outcomes, and a card
    for each registered champion model with the drivers of delay risk and churn, and the
    churn drivers within each contact reason."""
    from aftersale.console import report_stage
    from aftersale.settings import get_settings
    from features.build.parallel import watermark_of
    from features.contract.io import read_validated
    from features.ingest import latest_raw
    from features.report.page import REPORT_TABLES, build_report, render_report
    from training.model_cards import decisions, model_cards, model_drivers
    from training.monitor import latest_status
    from training.reason_drivers import churn_drivers_by_reason

    settings = get_settings()
    try:
        raw = latest_raw(settings.raw_root)
    except FileNotFoundError as error:
        fail(error, code=1)
    with stages(), report_stage("report") as stage:
        tables = read_validated(raw, tables=list(REPORT_TABLES))
        data_end = watermark_of(raw, happened=True)
        figures = build_report(tables, data_end)
        cards = model_cards(settings.tracking_uri)
        drivers = model_drivers(settings.tracking_uri)
        worth = decisions(settings.tracking_uri)
        by_reason = churn_drivers_by_reason(settings.tracking_uri, settings.features_dir, data_end)
        status = latest_status(settings.monitoring_dir)
        page = render_report(figures, cards, drivers, worth, by_reason, status)
        stage.rows = sum(table.num_rows for table in tables.values())
    folder = out if out is not None else settings.data_dir / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "report.html"
    path.write_text(page, encoding="utf-8")
    console.print(f"report: {path}", highlight=False, soft_wrap=True)
    if png is not None:
        from features.report.picture import ChromiumError, screenshot

        try:
            screenshot(path, png)
        except ChromiumError as error:
            fail(error, code=1)
        console.print(f"picture: {png}", highlight=False, soft_wrap=True)


def render_queue(path: Path, top: int = 10) -> Table:
    """The head of an outreach queue file."""
    import pyarrow.parquet as pq

    queue = pq.read_table(path).to_pandas()
    table = Table(title=f"Outreach queue: top {min(top, len(queue))} of {len(queue):,} ({path})")
    for column in ("#", "customer", "action", "channel", "send from (local)", "priority"):
        right = column in ("#", "priority")
        table.add_column(
            column, justify="right" if right else "left", no_wrap=column != "send from (local)"
        )
    table.add_column("why (first reason)", overflow="fold")
    for row in queue.head(top).itertuples():
        table.add_row(
            str(row.rank),
            row.customer_id,
            row.action,
            row.channel,
            row.send_window_start[5:16].replace("T", " "),
            f"{row.priority:,.2f}",
            row.reason.split(";")[0],
        )
    return table


def demo_order(raw: Path) -> str:
    """The order of the latest parcel in transit at the data's end."""
    import pandas as pd

    from features.contract.io import read_validated
    from features.instants import watermark

    as_of = watermark(read_validated(raw), happened=True)
    tables = read_validated(raw, tables=["orders", "shipments"])
    ships = tables["shipments"].select(["order_id", "shipped_ts", "delivered_ts"]).to_pandas()
    shipped = pd.to_datetime(ships["shipped_ts"], utc=True)
    delivered = pd.to_datetime(ships["delivered_ts"], utc=True)
    moving = ships[(shipped <= as_of) & (delivered.isna() | (delivered > as_of))]
    return str(moving.sort_values("shipped_ts")["order_id"].iloc[-1])


def render_recommendation(settings, raw: Path) -> Table:
    """What a tracking page shows for the latest parcel in transit at the data's end."""
    from features.contract.io import read_validated
    from features.instants import watermark
    from features.store.config import feature_store
    from serving.recommend import load_recommender

    as_of = watermark(read_validated(raw), happened=True)
    order_id = demo_order(raw)
    uri = settings.tracking_uri
    recommender = load_recommender(feature_store(settings), uri, settings.features_dir / "current")
    answer = recommender.recommend(order_id, 3, as_of)
    late = " (parcel late)" if answer.parcel_late else ""
    table = Table(title=f"Tracking page of order {order_id}{late}, as of {as_of:%Y-%m-%d %H:%M}")
    for column in ("rank", "category", "offer", "p(accept)", "expected value", "uplift"):
        table.add_column(column, justify="left" if column in ("category", "offer") else "right")
    for offer in answer.offers:
        kind = f"{offer.discount:.0%} off" if offer.discount else offer.offer_type
        table.add_row(
            str(offer.rank),
            offer.category,
            kind,
            "—" if offer.acceptance_probability is None else f"{offer.acceptance_probability:.1%}",
            "—" if offer.expected_value is None else f"{offer.expected_value:.2f}",
            "—" if offer.uplift_over_no_offer is None else f"{offer.uplift_over_no_offer:+.2f}",
        )
    if answer.cold_start:
        table.caption = f"cold start: {answer.cold_start_reason}"
    return table


@app.command()
def demo(
    customers: Annotated[
        int | None, typer.Option(min=1, help="Customers (default: AFTERSALE_CUSTOMERS).")
    ] = None,
) -> None:
    """Run the main job (flow `pipeline`) end to end on the embedded default and summarise
    it: ingest, features, training of the due models, the day's queue, the monitor."""
    from aftersale.settings import get_settings

    settings = get_settings()
    n = customers or settings.customers
    console.print(f"Running the pipeline on {n:,} simulated customers (seed {settings.seed}) …")
    from models.spec import SplitError

    with stages(STARTING):
        from flows.pipeline import PipelineError, pipeline

        try:
            night = pipeline(source="simulator", customers=n, seed=settings.seed)
        except PipelineError as exc:
            if isinstance(exc.__cause__, SplitError):
                err_console.print(
                    f"[red]--customers[/red]: {exc.__cause__}", highlight=False, soft_wrap=True
                )
            else:
                err_console.print(f"[red]failed[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None
    from features.contract.io import read_validated
    from features.summary import summarize

    # Ingest validated the raw data before publishing it; read it back without a second check.
    console.print(render_summary(summarize(read_validated(night.raw))))
    console.print(render_features(night.features))
    console.print(render_models(night.models))
    if not night.due:
        console.print(
            f"no model due for training: every champion is younger than "
            f"{settings.retrain_days} days of data (AFTERSALE_RETRAIN_DAYS) and none is marked"
        )
    console.print(render_queue(night.queue))
    if night.monitor_error is not None:
        console.print(f"[yellow]monitor did not run[/yellow]: {night.monitor_error}")
    console.print(render_recommendation(settings, night.raw))
    from serving.access import SCOPES, add_key, default_keys_file
    from serving.tokens import ensure_secret, load_secrets, mint, token_secrets_file

    # The demo's own key, with every scope, replaced on each run; only its digest is stored.
    path = default_keys_file(settings)
    secret = add_key(path, "demo", SCOPES)
    # And a tracking-token secret, made once, so the tracking page can be tried.
    ensure_secret(settings)
    order = demo_order(night.raw)
    page_token = mint(order, load_secrets(settings)[0])
    console.print(
        f"API key 'demo' ({', '.join(SCOPES)}), shown once; its digest is in {path}:\n"
        f"  export AFTERSALE_KEY={secret}\n"
        "  curl -s -H \"Authorization: Bearer $AFTERSALE_KEY\" -H 'Content-Type: application/json' "
        "-d '{\"limit\": 3}' http://127.0.0.1:3000/v1/outreach/queue\n"
        f"Tracking page of {order} (token signed with {token_secrets_file(settings)}, valid a day; "
        "`aftersale token ORDER_ID` mints others):\n"
        "  curl -s -H 'Content-Type: application/json' "
        f'-d \'{{"order_id": "{order}", "token": "{page_token}"}}\' '
        "http://127.0.0.1:3000/v1/recommend\n"
        "The example tracking page in a browser (it shows any order to whoever names it: "
        "for a private listener only):\n"
        "  AFTERSALE_DEMO_PAGES=true uv run aftersale serve\n"
        f"  open http://127.0.0.1:3000/demo/tracking/{order}",
        soft_wrap=True,
        highlight=False,
    )


def render_features(version: Path) -> Table:
    """Row counts of the published feature tables."""
    import pyarrow.parquet as pq

    table = Table(title=f"Feature tables ({version.name})")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("features", justify="right")
    for folder in sorted(p for p in version.iterdir() if p.is_dir()):
        parts = [pq.ParquetFile(path).metadata for path in sorted(folder.glob("*.parquet"))]
        rows = sum(meta.num_rows for meta in parts)
        table.add_row(folder.name, f"{rows:,}", str(parts[0].num_columns if parts else 0))
    return table


def render_models(summaries, title: str = "Models (test window)") -> Table:
    """Trained models: test metric, baseline and oracle, and the serving champion; with a
    window model among them, its window's coverage and median width on the same test rows."""

    def fmt(x: float | None, digits: int = 3) -> str:
        return "—" if x is None or x != x else f"{x:.{digits}f}"

    windows = any(s.coverage is not None for s in summaries)
    table = Table(title=title)
    columns = ("model", "metric", "model score", "baseline", "test rows", "oracle")
    shown = ("coverage", "width (d)") if windows else ()
    for column in (*columns, *shown, "version", "champion"):
        table.add_column(column, justify="left" if column in ("model", "metric") else "right")
    for s in summaries:
        window = (fmt(s.coverage), fmt(s.median_width_days, 1)) if windows else ()
        table.add_row(
            s.name,
            s.metric,
            fmt(s.value),
            fmt(s.baseline),
            "—" if s.test_rows is None else f"{s.test_rows:,}",
            fmt(s.oracle),
            *window,
            s.version or "—",
            s.champion or "—",
        )
    notes = []
    if windows:
        notes.append(
            "coverage: share of test outcomes inside the model's window; width (d): the "
            "window's median width in days"
        )
    notes += [
        f"{s.name}: on the {s.oracle_rows:,} rows the oracle scores, model "
        f"{fmt(s.oracle_model)}, baseline {fmt(s.oracle_baseline)}, oracle {fmt(s.oracle)}"
        for s in summaries
        if s.oracle is not None
    ]
    if notes:
        table.caption = "\n".join(notes)
    return table


def render_summary(summary) -> Table:
    """The business summary as a table."""
    table = Table(title="Simulated business", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")

    def pct(x: float | None) -> str:
        return "—" if x is None else f"{x:.1%}"

    def num(x: int | None) -> str:
        return "—" if x is None else f"{x:,}"

    table.add_row("period", f"{summary.first_ts[:10]} … {summary.last_ts[:10]}")
    table.add_row("customers", num(summary.customers))
    table.add_row("orders", num(summary.orders))
    table.add_row("shipments", num(summary.shipments))
    table.add_row("late-delivery rate", pct(summary.late_rate))
    table.add_row("contacts", num(summary.contacts))
    for reason, count in summary.contacts_by_reason.items():
        table.add_row(f"  contacts: {reason}", f"{count:,}")
    table.add_row("offers", num(summary.offers))
    table.add_row("offer acceptance rate (offers shown)", pct(summary.acceptance_rate))
    return table


if __name__ == "__main__":
    app()
