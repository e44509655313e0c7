"""Offline sources: folders of Parquet parts written by `features.build` into the data
folder.

Paths are relative: the store's repo path is the current published version of the feature
tables (see `features.store.config`), so one definition serves every environment.
"""

from feast import FileSource

# Every feature table carries `created_ts`: when rows share an entity and `event_ts`, Feast
# keeps the one created last.
customer_snapshots_source = FileSource(
    name="customer_snapshots_source",
    path="customer_snapshots",
    timestamp_field="event_ts",
    created_timestamp_column="created_ts",
    description="Customer snapshots from data strictly before each row: the second after "
    "each event and the midnights at which an event leaves a trailing window.",
)

shipment_events_source = FileSource(
    name="shipment_events_source",
    path="shipment_events",
    timestamp_field="event_ts",
    created_timestamp_column="created_ts",
    description="Shipment features at dispatch, after each tracking scan and at delivery.",
)

customer_category_source = FileSource(
    name="customer_category_source",
    path="customer_category",
    timestamp_field="event_ts",
    created_timestamp_column="created_ts",
    description="Purchases and returns per (customer, category), from the second after each.",
)

order_source = FileSource(
    name="order_source",
    path="orders",
    timestamp_field="event_ts",
    created_timestamp_column="created_ts",
    description="What each order holds; rows at the order, its dispatch and its delivery.",
)
