# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Explaining one customer's and one shipment's score
#
# The churn and delay-risk champions score every customer and every parcel in transit at
# the data's end, as batch scoring does; this notebook takes the customer and the parcel
# with the highest risk and shows, feature by feature, how each score was reached: a SHAP
# waterfall from the model's base value to the row's score, on the log-odds scale of the
# model before calibration (calibration is monotone, so it never changes which features
# push a score up), and the same contributions as `POST /v1/explain` words them.
#
# Set `CUSTOMER_ID` or `SHIPMENT_ID` below to explain another one. The notebook reads the
# data folder the project's settings name (`AFTERSALE_DATA_DIR`, default `data/`) and the
# registry of `AFTERSALE_MLFLOW_TRACKING_URI` (default the folder's SQLite store);
# `aftersale demo` prepares such a folder.

# %%
CUSTOMER_ID = None
SHIPMENT_ID = None

# %%
import matplotlib.pyplot as plt
import pandas as pd
import shap

from aftersale.settings import get_settings
from features.build.derived import add_time_features
from features.build.parallel import watermark_of
from features.contract.io import read_validated
from features.ingest import latest_raw
from features.repo.customer_views import customer_snapshots
from features.repo.shipment_views import shipment_events
from features.store.latest import latest_rows
from models import churn, delay_risk
from models.delay_risk import IN_TRANSIT, parcel_states
from models.policies.outreach import OutreachRules
from models.served.reasons import reason_codes
from models.served.registry import load_champion
from serving.batch import open_shipments
from training.explain import shap_explanation

# Features the waterfall shows one by one; the rest are summed into one bar.
WATERFALL_FEATURES = 12

settings = get_settings()
raw = latest_raw(settings.raw_root)
data_end = watermark_of(raw, happened=True)
current = settings.features_dir / "current"
print(f"data's end: {data_end:%Y-%m-%d %H:%M} UTC")


# %%
def explained(model, rows: pd.DataFrame, key: str, chosen) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The chosen row (default: the highest score) with its score, and its contributions."""
    rows = rows.assign(score=model.predict_proba(rows))
    if chosen is None:
        chosen = rows.sort_values("score", ascending=False, kind="stable")[key].iloc[0]
    row = rows[rows[key] == chosen]
    if row.empty:
        raise KeyError(f"{key} {chosen!r} has no feature row at the data's end")
    contrib = model.contributions(row)
    return row, contrib


def reasons_table(model, row: pd.DataFrame, contrib: pd.DataFrame) -> pd.DataFrame:
    """Every feature that moved the score, in words, largest effect first."""
    [reasons] = reason_codes(contrib, row, model.words, k=len(model.features), direction="abs")
    return pd.DataFrame([r.__dict__ for r in reasons if r.contribution != 0])


# %% [markdown]
# ## One customer's churn risk
#
# Customers who have ordered, with their features as of the data's end; the churn label is
# no order in the next 90 days.

# %%
churn_version, churn_model = load_champion(churn.NAME, settings.tracking_uri)
snapshots = latest_rows(current / customer_snapshots.name, "customer_id", data_end)
customers = add_time_features(
    snapshots[snapshots["orders_total"].fillna(0) > 0].reset_index(drop=True), data_end
)
customer, customer_contrib = explained(churn_model, customers, "customer_id", CUSTOMER_ID)
customer_explanation = shap_explanation(customer_contrib, churn_model.layout, customer)[0]
print(
    f"{churn.NAME} version {churn_version.version}: customer {customer['customer_id'].iloc[0]}, "
    f"churn risk {customer['score'].iloc[0]:.1%} (calibrated), "
    f"log-odds {customer_explanation.base_values + customer_explanation.values.sum():+.3f}"
)

# %%
shap.plots.waterfall(customer_explanation, max_display=WATERFALL_FEATURES)

# %%
reasons_table(churn_model, customer, customer_contrib)

# %% [markdown]
# ## One shipment's delay risk
#
# Parcels dispatched and not delivered by the data's end, nor taken for lost (past their
# promise and silent for the outreach rules' `lost_after_days`): the parcels the delay-risk
# model answers for. The label is delivery after the promised instant.

# %%
delay_version, delay_model = load_champion(delay_risk.NAME, settings.tracking_uri)
tables = read_validated(raw, tables=["shipments", "orders"])
in_flight = open_shipments(tables, data_end)
rows = latest_rows(current / shipment_events.name, "shipment_id", data_end)
rows = rows[rows["shipment_id"].isin(in_flight["shipment_id"])].reset_index(drop=True)
states = parcel_states(rows, data_end.timestamp(), OutreachRules().lost_after_days)
parcels = add_time_features(rows[states == IN_TRANSIT].reset_index(drop=True), data_end)
print(f"{len(parcels):,} parcels in transit")
shipment, shipment_contrib = explained(delay_model, parcels, "shipment_id", SHIPMENT_ID)
shipment_explanation = shap_explanation(shipment_contrib, delay_model.layout, shipment)[0]
print(
    f"{delay_risk.NAME} version {delay_version.version}: "
    f"shipment {shipment['shipment_id'].iloc[0]}, "
    f"delay risk {shipment['score'].iloc[0]:.1%} (calibrated), "
    f"log-odds {shipment_explanation.base_values + shipment_explanation.values.sum():+.3f}"
)

# %%
shap.plots.waterfall(shipment_explanation, max_display=WATERFALL_FEATURES)

# %%
reasons_table(delay_model, shipment, shipment_contrib)

# %% [markdown]
# ## The two explanations side by side
#
# The base value is the model's mean log-odds; the contributions add up to the row's
# log-odds before calibration, and the calibrated score is what the service answers.

# %%
plt.close("all")
summary = pd.DataFrame(
    [
        {
            "model": name,
            "version": version.version,
            "id": row[key].iloc[0],
            "score": row["score"].iloc[0],
            "base_value": float(explanation.base_values),
            "contributions": float(explanation.values.sum()),
            "log_odds": float(explanation.base_values + explanation.values.sum()),
            "top_feature": explanation.feature_names[abs(explanation.values).argmax()],
        }
        for name, version, row, key, explanation in (
            (churn.NAME, churn_version, customer, "customer_id", customer_explanation),
            (delay_risk.NAME, delay_version, shipment, "shipment_id", shipment_explanation),
        )
    ]
)
summary
