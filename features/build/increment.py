"""A night's customer snapshots added to the previous version's, instead of rebuilt.

The customer snapshot table is the largest feature table, and a day changes few of its rows.
When the raw data are the previous build's with one day appended (`features.ingest.append_day`
records which version it appended to), the previous version's snapshot parts are kept (hard
links) and one part is added: every row after `since`, the newest instant that had happened
in the previous data, of each customer who has one.

Why the kept rows stay true. A row stamped at second s holds what happened strictly before
s, and everything a day batch brings happened after `since` (its new rows, and its updates:
a delivery, a refund, a payment, an acceptance, each stamped with the instant it happened).
So a row at or before `since` reads only what the previous data held, and is what a rebuild
would write. After `since` the previous version may hold rows a rebuild would not: rows at
instants still ahead (a promise or a due date, stamped later by construction) that the day
proved wrong, as when a parcel arrives before its promise. Those customers are rebuilt too,
and the added part restates each such row, at its instant, with a later `created_ts`: every
reader takes the restated row (Feast's point-in-time join and `features.store.latest` break
a tie on `event_ts` by the later `created_ts`). A restated row holds what the customer's
rebuilt newest row at or before it holds, so any lookup at any instant answers as a rebuild
would (`tests/features/build/test_increment.py` holds it to a rebuild of the same data).

Only what this module can vouch for is added: a previous version built by the same feature
code (`code_digest`), of the version the raw data were appended to, with fewer than
`MAX_PARTS` parts. Otherwise the night rebuilds everything, as a first night does; a rebuild
also folds the parts back into one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features import versioned
from features.build import customers as customer_build
from features.build import snapshots as snapshot_build
from features.build.common import US_PER_S, codes_in, spans, us
from features.build.customers import Prepared
from features.build.snapshots import Events

log = logging.getLogger(__name__)

VIEW = "customer_snapshots"
# Beyond this many parts a night rebuilds the table whole (one part again).
MAX_PARTS = 64
# What a feature version records of how it was built (`versioned.write_metadata`).
RAW_VERSION = "raw_version"
SINCE = "happened_through"
CREATED = "created"
CODE = "feature_code"


def code_digest() -> str:
    """A digest of the code that builds feature tables: a version built by other code is
    never extended, however alike its schema."""
    folder = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    repo = folder.parent / "repo"
    for path in sorted(repo.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_record(raw: Path, since: pd.Timestamp, created: pd.Timestamp) -> dict:
    """What a feature version built from the raw version `raw` records (see `extendable`):
    the instant everything in it had happened by, and its rows' `created_ts`."""
    return {
        RAW_VERSION: raw.name,
        SINCE: since.isoformat(),
        CREATED: created.isoformat(),
        CODE: code_digest(),
    }


@dataclass(frozen=True)
class Extension:
    """A previous feature version the new raw data may extend, from when, and its newest
    rows' `created_ts` (the added rows' must be later, so that they win a tie)."""

    previous: Path
    since: pd.Timestamp
    created: pd.Timestamp

    def created_after(self, watermark: pd.Timestamp) -> pd.Timestamp:
        """The added rows' `created_ts`: the data's watermark (as a rebuild stamps), or just
        after the previous rows' where that is not later (a promise far ahead is the
        watermark of both)."""
        return max(watermark, self.created + pd.Timedelta(seconds=1))


def extendable(raw: Path, previous: Path | None) -> Extension | None:
    """The previous feature version, when the raw version `raw` is the one it was built from
    with a day appended, it was built by this code, and its snapshot table is not yet cut
    into `MAX_PARTS` parts; None otherwise (then everything is rebuilt)."""
    if previous is None:
        return None
    built = versioned.metadata(previous)
    appended_to = versioned.metadata(raw).get("appended_to")
    if not built or appended_to is None or built.get(RAW_VERSION) != appended_to:
        return None
    if built.get(CODE) != code_digest():
        log.info("features: the feature code changed since %s; rebuilding", previous.name)
        return None
    if len(list((previous / VIEW).glob("*.parquet"))) >= MAX_PARTS:
        log.info("features: %s holds %d parts or more; rebuilding", previous.name, MAX_PARTS)
        return None
    return Extension(previous, pd.Timestamp(built[SINCE]), pd.Timestamp(built[CREATED]))


def restrict(prepared: Prepared, codes: np.ndarray, consume: bool = False) -> Prepared:
    """The prepared events of the customers at positions `codes` (sorted, unique) only,
    renumbered 0..len(codes)-1 in that order. With `consume`, each kind of events is taken
    out of `prepared` as it is cut, so that the whole and the cut are held together one kind
    at a time (a night's increment at a million customers cuts most of them)."""
    codes = np.asarray(codes, dtype=np.int64)

    def kept(events: Events | None) -> Events | None:
        if events is None:
            return None
        inside = np.isin(events.entity, codes)
        # Both orders agree: events stay sorted by their new numbers.
        entity = np.searchsorted(codes, events.entity[inside])
        return Events(entity, events.ts[inside], {k: v[inside] for k, v in events.values.items()})

    kinds = {}
    for name in list(prepared.kinds):
        events, windows = prepared.kinds.pop(name) if consume else prepared.kinds[name]
        kinds[name] = (kept(events), windows)
    return Prepared(prepared.customers.take(pa.array(codes)), kinds, prepared.end_s)


def rows_after(prepared: Prepared, since_s: int) -> np.ndarray:
    """Positions of the customers with a snapshot row stamped after second `since_s` (up to
    the end), sorted: a sign-up, an event, or an event leaving a trailing window then."""
    signup = us(prepared.customers.column("signup_ts").to_pandas())
    found = [np.flatnonzero(snapshot_build.seen_from_s(signup) > since_s)]
    for events, windows in prepared.kinds.values():
        if events is None:
            continue
        for window in (0, *windows):
            second = events.row_s(window)
            found.append(events.entity[(second > since_s) & (second <= prepared.end_s)])
    return np.unique(np.concatenate(found).astype(np.int64))


def previous_rows_after(previous: Path, since: pd.Timestamp) -> pa.Table:
    """(customer_id, event_ts) of the previous version's snapshot rows stamped after `since`."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(previous / VIEW, format="parquet")
    return dataset.to_table(
        columns=["customer_id", "event_ts"],
        filter=ds.field("event_ts") > pa.scalar(since.to_pydatetime(), pa.timestamp("us", "UTC")),
    )


def snapshot_increment(
    tables: dict[str, pa.Table],
    since: pd.Timestamp,
    restated: pa.Table,
    chunk_customers: int = customer_build.CHUNK_CUSTOMERS,
    range_customers: int = customer_build.RANGE_CUSTOMERS,
) -> Iterator[pa.Table]:
    """The snapshot rows stamped after `since` of every customer who has one in the raw
    `tables` or in `restated` (the previous version's rows after `since`: each is restated at
    its instant), a chunk of customers at a time.

    The customers' events are prepared `range_customers` at a time
    (`customer_build.prepare_range`): the rows are those of one preparation of everyone, in
    the same order, at a peak memory that grows with the range instead of the business.
    """
    started = time.perf_counter()
    end = customer_build.data_end(tables)
    since_s = int(since.value // 1000 // US_PER_S)
    restated_s = us(restated.column("event_ts").to_pandas()) // US_PER_S
    total = rows = 0
    for lo, hi in spans(tables["customers"].num_rows, range_customers):
        prepared = customer_build.prepare_range(tables, lo, hi, end)
        lookup = prepared.customers.column("customer_id").combine_chunks()
        stale_code = codes_in(restated.column("customer_id"), lookup)
        known = stale_code >= 0
        stale_code, stale_s = stale_code[known], restated_s[known]
        codes = np.union1d(rows_after(prepared, since_s), stale_code)
        chosen = restrict(prepared, codes, consume=True)
        del prepared
        extra = (np.searchsorted(codes, stale_code), stale_s)
        n = len(codes)
        total += n
        for first in range(0, n, chunk_customers):
            built = customer_build.snapshots(chosen, first, min(first + chunk_customers, n), extra)
            seconds = pc.divide(pc.cast(built.column("event_ts"), pa.int64()), US_PER_S)
            after = built.filter(pc.greater(seconds, since_s))
            rows += after.num_rows
            yield after
        del chosen
    log.info(
        "%s: %d rows of %d customers after %s in %.1f s",
        VIEW,
        rows,
        total,
        since.isoformat(),
        time.perf_counter() - started,
    )
