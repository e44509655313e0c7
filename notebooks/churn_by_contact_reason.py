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
# # Why customers churn, by contact reason
#
# Which contact reasons are followed by customers leaving, how the contact centre handled
# each reason, and what the churn model sees behind the risk of each reason's customers.
#
# The notebook reads the data folder the project's settings name: `AFTERSALE_DATA_DIR`
# (default `data/`), its current published raw data, its current feature tables, and the
# churn model's `champion` in the MLflow registry (`AFTERSALE_MLFLOW_TRACKING_URI`, default
# the folder's SQLite store). `aftersale demo` prepares such a folder.
#
# The outcomes are associations, not effects: customers who contact service differ from
# those who do not in more than the contact.

# %%
import matplotlib.pyplot as plt
import pandas as pd

from aftersale.settings import get_settings
from features.build.derived import add_time_features
from features.build.parallel import watermark_of
from features.contract.io import read_validated
from features.describe import describe
from features.ingest import latest_raw
from features.repo.customer_views import customer_snapshots
from features.report.outcomes import CHURN_DAYS, NOT_CONTACTED
from features.report.page import REPORT_TABLES, build_report
from features.store.latest import latest_rows
from models import churn
from models.served.registry import load_champion
from training.explain import global_importance
from training.model_cards import model_drivers

# Drivers shown per contact reason.
TOP_DRIVERS = 5

settings = get_settings()
raw = latest_raw(settings.raw_root)
tables = read_validated(raw, tables=list(REPORT_TABLES))
# The data's end: the latest instant of anything that happened, the instant decisions on
# the current data are made at.
data_end = watermark_of(raw, happened=True)
report = build_report(tables, data_end)
print(f"raw data: {raw}\ndata's end: {data_end:%Y-%m-%d %H:%M} UTC")

# %% [markdown]
# ## Churn rate by contact reason
#
# A contact counts once its 90 days have ended by the data's end; it is followed by churn
# when the customer placed no order within those 90 days
# (`features.report.outcomes.churn_by_reason`, the figures of `aftersale report`).

# %%
churn_rates = report.churn.sort_values("churn_rate", ascending=False, kind="stable")
print(f"window after each contact: {CHURN_DAYS} days")
churn_rates

# %%
by_reason = churn_rates[churn_rates["reason"] != "all"]
overall = churn_rates.loc[churn_rates["reason"] == "all", "churn_rate"]
figure, axes = plt.subplots(figsize=(7, 4), layout="constrained")
axes.barh(by_reason["reason"], by_reason["churn_rate"])
if len(overall):
    axes.axvline(overall.iloc[0], color="grey", linestyle="--", label="all contacts")
    axes.legend()
axes.invert_yaxis()
axes.set_xlabel(f"share of contacts followed by no order within {CHURN_DAYS} days")
axes.set_title("Churn after a contact, by its reason")
plt.show()

# %% [markdown]
# ## How the contact centre handled each reason
#
# Contacts, first-contact resolution, mean handle time and wait (seconds), transfers, and
# the survey answers (CSAT 1-5, CES 1-7, NPS in points), per reason and overall; then per
# reason for the AI agent and human agents.

# %%
report.by_reason

# %%
report.by_handler

# %% [markdown]
# ## What drives churn risk within each reason
#
# The churn champion scores every customer who has ordered, with their features as of the
# data's end (`features.store.latest.latest_rows`, the rows batch scoring reads). Customers
# are grouped by the reason of their latest contact (those who never contacted service
# form a group of their own); within each group, the features with
# the largest mean |SHAP| contribution (log-odds) are its drivers. The model's overall
# drivers, logged by the training run on its test window, come first.

# %%
model_drivers(settings.tracking_uri, [churn.NAME])

# %%
version, model = load_champion(churn.NAME, settings.tracking_uri)
snapshots = latest_rows(
    settings.features_dir / "current" / customer_snapshots.name, "customer_id", data_end
)
customers = add_time_features(
    snapshots[snapshots["orders_total"].fillna(0) > 0].reset_index(drop=True), data_end
)
contrib = model.contributions(customers)
customers["churn_score"] = model.predict_proba(customers)
print(f"{churn.NAME} version {version.version}: {len(customers):,} customers scored")

# %%
drivers = []
latest_reason = customers["last_contact_reason"].fillna(NOT_CONTACTED)
for reason, group in customers.groupby(latest_reason, sort=True):
    importance = global_importance(contrib.loc[group.index]).head(TOP_DRIVERS)
    for rank, (feature, mean_abs_shap) in enumerate(importance.items(), start=1):
        drivers.append(
            {
                "reason": reason,
                "customers": len(group),
                "mean_churn_score": group["churn_score"].mean(),
                "rank": rank,
                "feature": feature,
                "description": describe(feature, model.words),
                "mean_abs_shap": mean_abs_shap,
            }
        )
drivers_by_reason = pd.DataFrame(drivers)
drivers_by_reason
