"""`aftersale`: the one entry point for every job.

Heavy libraries are imported inside the commands so `aftersale --help` stays instant.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="aftersale",
    help="Post-purchase risk scores, reasons and actions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


class FileFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


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
) -> None:
    """Simulate a post-purchase business into a folder of contract tables."""
    from features.sources.simulator import simulate as run_simulation

    result = run_simulation(
        out, customers=customers, seed=seed, fmt=file_format.value, months=months, workers=workers
    )
    table = Table(title=f"Simulated {customers:,} customers into {out}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in result.rows.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)
    console.print(f"{sum(result.rows.values()):,} rows in {result.seconds:.1f} s")


@app.command()
def validate(
    folder: Annotated[Path, typer.Argument(help="Folder of <table>.parquet or <table>.csv files.")],
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
def demo(
    customers: Annotated[
        int | None, typer.Option(min=1, help="Customers (default: AFTERSALE_CUSTOMERS).")
    ] = None,
) -> None:
    """Run the main job end to end on the embedded default: simulate, validate, summarise."""
    from features.sources.simulator import simulate as run_simulation

    from aftersale.settings import get_settings
    from features.contract.validate import load_folder
    from features.summary import summarize

    settings = get_settings()
    n = customers or settings.customers
    console.print(f"Simulating {n:,} customers (seed {settings.seed}) into {settings.raw_dir} …")
    result = run_simulation(settings.raw_dir, customers=n, seed=settings.seed)
    console.print(f"  {sum(result.rows.values()):,} rows in {result.seconds:.1f} s")
    tables, report = load_folder(settings.raw_dir)
    if not report.ok:
        for problem in report.violations:
            err_console.print(f"[red]error[/red] {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1)
    console.print(f"  valid: {report.total_rows:,} rows against the contract")
    console.print(render_summary(summarize(tables)))


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
