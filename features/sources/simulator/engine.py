"""Run the simulation: chunks of customers, computed (optionally in parallel) and written in
chunk order into an atomically swapped folder.

Determinism: the catalogue is drawn from `SeedSequence([seed, STREAM_PRODUCTS])` and chunk c
from `SeedSequence([seed, STREAM_CHUNK, c])`; chunks have a fixed size and are written in
order, and ids are numbered by running totals over the chunks written, so the files depend on
(customers, seed, start, months) only, never on `workers`.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa

from features.sources.simulator.journeys import simulate_journeys
from features.sources.simulator.memberships import membership_contacts
from features.sources.simulator.offers import simulate_offers
from features.sources.simulator.output import (
    ENTITY_TABLE,
    ID_PREFIX,
    Format,
    TableWriters,
    all_schemas,
    atomic_directory,
    chunk_ids,
    globalise,
    string_ids,
)
from features.sources.simulator.outreach import Outreach
from features.sources.simulator.params import (
    DEFAULT_PARAMS,
    STREAM_CHUNK,
    STREAM_MEMBERSHIP,
    STREAM_OUTREACH,
    STREAM_SHOCKS,
    SimulatorParams,
)
from features.sources.simulator.population import draw_population, open_regions
from features.sources.simulator.tables import assemble, products_table
from features.sources.simulator.truth import repurchase_truth
from features.sources.simulator.world import World, build_world

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulationResult:
    """What a simulation wrote.

    Attributes:
        out_dir: The folder holding `<table>.parquet|csv` and `_truth/`.
        rows: Rows written per table (contract tables and `_truth/<name>`).
        seconds: Wall-clock seconds the simulation took.
    """

    out_dir: Path
    rows: dict[str, int]
    seconds: float


def simulate(
    out_dir: Path,
    customers: int,
    seed: int = 7,
    fmt: Format = "parquet",
    start: date = date(2024, 1, 1),
    months: int = 24,
    workers: int = 1,
    shocks: tuple = (),
) -> SimulationResult:
    """Simulate the business and write the eleven contract tables plus `_truth/`.

    Args:
        out_dir: Destination folder; replaced atomically if it exists.
        customers: Number of customers (all sign up within the period).
        seed: Random seed; same arguments give byte-identical files.
        fmt: "parquet" or "csv" for the contract tables (truth is always Parquet).
        start: First simulated day; must be the first day of a month.
        months: Number of months simulated.
        workers: Processes computing chunks in parallel; does not change the output.
        shocks: Regime changes from a date (`params.CarrierSlowdown`,
            `params.RegionOpening`, `params.PriceChange`): the default business with them.

    Returns:
        Where the files are, rows per table and the seconds it took.

    Raises:
        ValueError: On a non-positive customer count or worker count, an unknown format, a
            start that is not the first day of a month, or a shock that cannot apply.
    """
    params = replace(DEFAULT_PARAMS, shocks=tuple(shocks)) if shocks else DEFAULT_PARAMS
    return run_simulation(Path(out_dir), customers, seed, fmt, start, months, workers, params)


def run_simulation(
    out_dir: Path,
    customers: int,
    seed: int,
    fmt: Format,
    start: date,
    months: int,
    workers: int,
    params: SimulatorParams,
) -> SimulationResult:
    """`simulate` with an explicit parameter set (tests use a small chunk size)."""
    if customers < 1:
        raise ValueError(f"customers must be at least 1, got {customers}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    started = time.perf_counter()
    world = build_world(seed, start, months, params)
    size = params.chunk_customers
    tasks = [
        (seed, index, min(size, customers - index * size))
        for index in range(math.ceil(customers / size))
    ]
    schemas = all_schemas(params.category_names)
    offsets = {entity: 0 for entity in ENTITY_TABLE}
    with atomic_directory(out_dir) as tmp:
        writers = TableWriters(tmp, fmt, schemas)
        try:
            writers.open_all()
            products = products_table(world)
            product_ids = string_ids(products.num_rows, ID_PREFIX["product"], 0)
            ids = {"product": product_ids}
            writers.write("products", globalise("products", products, ids, schemas["products"]))

            def write_chunk(index: int, tables: dict[str, pa.Table]) -> None:
                ids = chunk_ids(tables, offsets, product_ids)
                for name, table in tables.items():
                    writers.write(name, globalise(name, table, ids, schemas[name]))
                for entity, table_name in ENTITY_TABLE.items():
                    offsets[entity] += tables[table_name].num_rows
                logger.info("chunk %d/%d written", index + 1, len(tasks))

            _consume_in_order(_chunk_tables(world, tasks, workers), write_chunk)
        finally:
            writers.close()
    seconds = time.perf_counter() - started
    logger.info("simulated %d customers into %s in %.1f s", customers, out_dir, seconds)
    return SimulationResult(out_dir=out_dir, rows=dict(writers.rows), seconds=seconds)


def simulate_chunk(world: World, seed: int, index: int, size: int) -> dict[str, pa.Table]:
    """Simulate chunk `index` of `size` customers; tables carry chunk-local ids."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_CHUNK, index]))
    pop = draw_population(rng, size, world.timeline, world.params)
    shock_rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_SHOCKS, index]))
    pop = open_regions(shock_rng, pop, world.timeline, world.params)
    outreach = None
    if world.params.outreach.enabled:
        outreach_rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_OUTREACH, index]))
        outreach = Outreach(outreach_rng, world, pop)
    membership_rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_MEMBERSHIP, index]))
    journeys = simulate_journeys(rng, world, pop, membership_rng, outreach)
    orders = journeys.orders
    member_invoices = journeys.memberships
    member_contacts = membership_contacts(rng, world, pop, member_invoices)
    offers = simulate_offers(
        rng, world, pop, orders, journeys.lines, journeys.shipments, journeys.returns
    )
    snapshots = repurchase_truth(
        world.timeline,
        pop.size,
        orders["customer"],
        orders["t"],
        orders["r"],
        orders["q"],
        pop.order_rate,
        journeys.resets,
    )
    delay_sensitivity = outreach.delay_sensitivity if outreach is not None else None
    return assemble(
        world, pop, journeys, member_invoices, member_contacts, offers, snapshots, delay_sensitivity
    )


def _consume_in_order(
    chunks: Iterator[dict[str, pa.Table]], consume: Callable[[int, dict[str, pa.Table]], None]
) -> None:
    """Hand chunks, in order, to `consume` on a background thread.

    Writing (Arrow, GIL released) overlaps with simulating the next chunk; waiting for the
    previous write before queueing the next keeps at most two chunks in memory and the files
    in chunk order. A failure on either side propagates.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: Future | None = None
        for index, tables in enumerate(chunks):
            if pending is not None:
                pending.result()
            pending = pool.submit(consume, index, tables)
        if pending is not None:
            pending.result()


_WORKER_WORLD: World | None = None


def _init_worker(world: World) -> None:
    global _WORKER_WORLD
    _WORKER_WORLD = world


def _worker_chunk(seed: int, index: int, size: int) -> dict[str, pa.Table]:
    assert _WORKER_WORLD is not None, "worker not initialised"
    return simulate_chunk(_WORKER_WORLD, seed, index, size)


def _chunk_tables(
    world: World, tasks: list[tuple[int, int, int]], workers: int
) -> Iterator[dict[str, pa.Table]]:
    """Chunk results in chunk order, computed in-process or by a bounded process pool."""
    if workers == 1 or len(tasks) == 1:
        for seed, index, size in tasks:
            yield simulate_chunk(world, seed, index, size)
        return
    # forkserver: forking a process that already runs Arrow's thread pools is unsafe.
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(world,)
    ) as pool:
        pending: deque[Future] = deque()
        queue = iter(tasks)
        # At most `workers + 1` chunks in flight bounds the memory held by finished chunks.
        for task in queue:
            pending.append(pool.submit(_worker_chunk, *task))
            if len(pending) > workers:
                break
        while pending:
            result = pending.popleft().result()
            task = next(queue, None)
            if task is not None:
                pending.append(pool.submit(_worker_chunk, *task))
            yield result
