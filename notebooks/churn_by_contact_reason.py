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

from aftersale.settings import get_settings
from features.build.parallel import watermark_of
from features.contract.io import read_validated
from features.ingest import latest_raw
from features.report.outcomes import CHURN_DAYS
from features.report.page import REPORT_TABLES, build_report
from models import churn
from training.model_cards import model_drivers
from training.reason_drivers import churn_drivers_by_reason

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
# form a group of their own); within each group, the features with the largest mean |SHAP|
# contribution (log-odds) are its drivers (`training.reason_drivers`, the table of
# `aftersale report`). The model's overall drivers, logged by the training run on its test
# window, come first.

# %%
model_drivers(settings.tracking_uri, [churn.NAME])

# %%
drivers_by_reason = churn_drivers_by_reason(settings.tracking_uri, settings.features_dir, data_end)
if not drivers_by_reason.empty:
    scored = drivers_by_reason.drop_duplicates("reason")
    print(
        f"{churn.NAME} version {drivers_by_reason['version'].iloc[0]}: "
        f"{scored['customers'].sum():,} customers scored"
    )
drivers_by_reason
