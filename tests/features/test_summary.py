"""The business summary counts only what the data has decided by its end."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from features.summary import late_rate, summarize


def _shipments(rows: list[tuple[str, str, str | None]]) -> pa.Table:
    frame = pd.DataFrame(rows, columns=["shipped_ts", "promised_ts", "delivered_ts"])
    for column in frame:
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return pa.Table.from_pandas(frame, preserve_index=False)


def test_late_rate_leaves_out_parcels_whose_promise_lies_ahead() -> None:
    shipments = _shipments(
        [
            ("2025-01-01", "2025-01-04", "2025-01-03"),  # on time
            ("2025-01-01", "2025-01-04", "2025-01-06"),  # late
            ("2025-01-02", "2025-01-05", None),  # promise passed, undelivered: late
            ("2025-01-09", "2025-01-20", None),  # promise ahead of the data: no outcome yet
            ("2025-01-10", "2025-01-21", None),  # the same
        ]
    )
    assert late_rate(shipments) == 2 / 3
    orders = pa.table(
        {"order_ts": pa.array(pd.to_datetime(["2025-01-10"], utc=True)), "amount": [1.0]}
    )
    customers = pa.table({"customer_id": ["c1"]})
    # A future promise does not move the data's end: the summary agrees.
    tables = {"customers": customers, "orders": orders, "shipments": shipments}
    assert summarize(tables).late_rate == 2 / 3
