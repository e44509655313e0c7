"""The newest feature row per entity at or before an instant, read from the offline tables.

Batch scoring reads every entity this way, and the service reads the few entities whose
online row is newer than its decision instant: the online store holds one row per entity,
the latest it was materialised with, while a decision must see the state as of its own
instant (the same rule as training's point-in-time join).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

EVENT_TIME = "event_ts"
CREATED_TIME = "created_ts"


def latest_rows(
    folder: Path,
    keys: str | Sequence[str],
    as_of: pd.Timestamp,
    wanted: pa.Table | None = None,
    *,
    with_time: bool = False,
) -> pd.DataFrame:
    """The newest row per entity at or before `as_of` from a folder of Parquet parts.

    Args:
        folder: The feature table's folder (`<features>/current/<view>`).
        keys: Entity column or columns.
        as_of: Decision instant (rows stamped after it are never read).
        wanted: Only these entities: a table of the key columns (None: all).
        with_time: Keep the row's `event_ts`.

    Returns:
        One row per entity found, in the order of the keys, without `created_ts` (and
        `event_ts`); a restated row (same `event_ts`, later `created_ts`) wins.
    """
    keys = [keys] if isinstance(keys, str) else list(keys)
    connection = duckdb.connect()
    try:
        connection.execute("SET TimeZone = 'UTC'")
        # Each row is named by its file and position in it: the newest row per entity is
        # chosen on the keys and times alone, then only those rows are read whole. A window
        # over every column of every stored row costs several times more, and a window even
        # over the narrow columns sorts them all: an aggregate per entity halves the time
        # and keeps a fraction of the memory (a million customers: 5 s and 2 GiB against
        # 11 s and 5 GiB). Created times are never null in a feature table.
        parts = f"read_parquet('{folder}/*.parquet', filename = true, file_row_number = true)"
        where = f"{EVENT_TIME} <= $as_of"
        if wanted is not None:
            connection.register("wanted", wanted.select(keys))
            columns = ", ".join(keys)
            where += f" AND ({columns}) IN (SELECT ({columns}) FROM wanted)"
        partition = ", ".join(keys)
        dropped = CREATED_TIME if with_time else f"{EVENT_TIME}, {CREATED_TIME}"
        sql = (
            "WITH newest AS (SELECT newest.f AS newest_file, newest.r AS newest_row FROM ("
            "SELECT max_by(struct_pack(f := filename, r := file_row_number), "
            f"struct_pack(e := {EVENT_TIME}, c := {CREATED_TIME})) AS newest FROM {parts} "
            f"WHERE {where} GROUP BY {partition})) "
            f"SELECT * EXCLUDE ({dropped}, filename, file_row_number) FROM {parts} "
            "SEMI JOIN newest ON filename = newest_file AND file_row_number = newest_row "
            # In the same order on every run: ties further on (equal priorities in the
            # queue) then fall alike.
            f"ORDER BY {partition}"
        )
        table = connection.sql(sql, params={"as_of": as_of.to_pydatetime()}).to_arrow_table()
    finally:
        connection.close()
    return table.to_pandas()
