"""Runtime settings, read from the environment (prefix `AFTERSALE_`) on demand.

Nothing happens on import: callers build the settings with `get_settings()` when they need
them, so tests can point every path at a temporary folder through the environment.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Every origin: the tracking routes' data is guarded by each order's token, not by the page's
# origin, and the widget sends no cookies.
ANY_ORIGIN = "*"
# DuckDB's memory limit: a share of the machine's memory, or a size in its units.
MEMORY_SIZE = re.compile(r"(\d+(\.\d+)?%|\d+(\.\d+)?\s*([KMGT]i?)?B)", re.IGNORECASE)
DEFAULT_DUCKDB_MEMORY = "10%"
DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_origin(text: str) -> str:
    """An origin as a browser writes it in its `Origin` header: `scheme://host[:port]`,
    lower case, without the scheme's default port.

    Raises:
        ValueError: The text is not an http(s) origin: it has a path, query, user or no host.
    """
    problem = f"{text!r} is not an origin scheme://host[:port] (e.g. https://shop.example)"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(problem) from None
    host = parts.hostname
    if (
        parts.scheme not in DEFAULT_PORTS
        or not host
        or not host.isascii()
        or any(character.isspace() for character in text)
        or parts.username is not None
        or parts.password is not None
        or parts.path
        or parts.query
        or parts.fragment
        or "?" in text
        or "#" in text
    ):
        raise ValueError(problem)
    if ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
    if port is None or port == DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


class Settings(BaseSettings):
    """Where data lives and how big the embedded default business is."""

    model_config = SettingsConfigDict(env_prefix="AFTERSALE_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Root of every local store and output.")
    customers: int = Field(20_000, gt=0, description="Customers in the default simulation.")
    seed: int = Field(7, description="Seed of the default simulation.")
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking and registry URI; default SQLite under data_dir/mlflow."
    )
    feature_workers: int | None = Field(
        None, ge=1, description="Processes building feature tables (default: by data size)."
    )
    dask_address: str | None = Field(
        None,
        description="Address of a `dask.distributed` scheduler (e.g. tcp://10.0.0.5:8786) "
        "that runs feature building's and batch scoring's units of work; unset or empty: "
        "one machine's processes. Its workers import this project and see the data folder "
        "at the same path.",
    )
    feature_store: str = Field(
        "local", description="Feast environment: local (SQLite online) or redis."
    )
    redis_connection: str = Field(
        "localhost:6379,db=0", description="Feast Redis connection string (redis environment)."
    )
    as_of: datetime | None = Field(
        None,
        description="Decision instant of the service and batch scoring (default: the wall "
        "clock for the service, the raw data's end for batch scoring).",
    )
    api_keys: SecretStr | None = Field(
        None,
        description="API keys of the service, comma-separated entries "
        "`name:scope+scope:secret` (scopes: score:read, outreach:read, admin).",
    )
    api_keys_file: Path | None = Field(
        None,
        description="A secrets file of API key entries, one a line (the secret or its "
        "`sha256=<hex>` digest); default `<data_dir>/secrets/api_keys` where it exists.",
    )
    token_secret: SecretStr | None = Field(
        None,
        description="Secrets signing tracking-page tokens, comma-separated: the first signs, "
        "every one verifies (rotation).",
    )
    token_secret_file: Path | None = Field(
        None,
        description="A secrets file of tracking-token secrets, one a line; default "
        "`<data_dir>/secrets/token_secret`.",
    )
    tracking_rate_limit: str = Field(
        "120/minute",
        description="Calls of the public tracking-page route one client may make, in the "
        "`limits` notation (e.g. '120/minute' or '10/second;600/hour').",
    )
    demo_pages: bool = Field(
        False,
        description="Serve the demo tracking page `/demo/tracking/{order_id}`, which mints "
        "the order's token itself and so shows any order to whoever names it: demos only.",
    )
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Origins of the shops' pages (`scheme://host[:port]`, comma-separated, "
        "e.g. 'https://shop.example,https://www.shop.example') from which a browser may "
        "call the tracking widget's routes, or '*' for any; empty: none, and the service "
        "sends no CORS headers (the page and the service share one origin).",
    )
    serve_host: str = Field("127.0.0.1", description="Address `aftersale serve` binds.")
    serve_port: int = Field(3000, ge=1, le=65535, description="Port of `aftersale serve`.")
    outreach_capacity: int = Field(
        1_000, ge=0, description="Actions the schedulers can take per day (queue length)."
    )
    quiet_hours_start: int = Field(
        21, ge=0, le=23, description="Local hour from which no customer is contacted."
    )
    quiet_hours_end: int = Field(8, ge=0, le=23, description="Local hour contacts may resume.")
    frequency_cap: int = Field(
        1, ge=1, description="Most actions queued for one customer within the cap window."
    )
    frequency_cap_days: int = Field(7, ge=1, description="Length of the frequency-cap window.")
    outreach_channel_capacity: dict[str, int] = Field(
        default_factory=lambda: {"email": 1_000, "sms": 400, "voice": 60},
        description="Most actions per channel in one day's queue (JSON, e.g. "
        "'{\"voice\": 60}'): voice is bounded by agents' hours, about 60 calls a day for "
        "two agents at 6 minutes a call and time between.",
    )
    outreach_channel_cost: dict[str, float] = Field(
        default_factory=lambda: {"email": 0.01, "sms": 0.06, "voice": 3.0},
        description="Cost of one action per channel in the shop's currency (JSON): a message "
        "costs its sending fee, a call about 6 agent minutes at 30 an hour.",
    )
    retrain_drift_share: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Share of a champion's features drifting (on the monitor's whole "
        "window) at which it is marked for retraining.",
    )
    monitor_reference_rows: int = Field(
        20_000,
        ge=1,
        description="Decisions of a champion's training window the monitor compares its "
        "newest days with at most (and customers scored at the data's end, for churn): a "
        "seeded random sample beyond it, so a run's cost does not grow with the model's "
        "history or the number of customers.",
    )
    monitor_customers: int = Field(
        50_000,
        ge=1,
        description="Customers whose rows the monitor reads at most: beyond it, a seeded "
        "draw of that many customers (by id alone) and every row that belongs to them, so "
        "its labels, windows and values are computed on a sub-business whose size does not "
        "grow with the business; at or below it, the whole business.",
    )
    retrain_auc_drop: float = Field(
        0.05,
        gt=0.0,
        description="Fall of a champion's realised AUC below its test AUC at which it is "
        "marked for retraining.",
    )
    retrain_ece_rise: float = Field(
        0.03,
        gt=0.0,
        description="Rise of a champion's realised calibration error (ECE) above its test "
        "ECE at which it is marked for retraining.",
    )
    outreach_holdout_share: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="Share of each day's queued actions held out at random (recorded, not "
        "sent), so the effect of every action stays measurable.",
    )
    retrain_days: int = Field(
        7,
        ge=1,
        description="Days of data after which a champion is retrained: the pipeline trains a "
        "model when its champion was trained on data ending this many days or more before "
        "the current data's end (or when it has no champion, or the monitor marked it).",
    )
    refit_marked: bool = Field(
        True,
        description="Serve a classifier (delay risk, churn) that the monitor marked for "
        "retraining fitted through the newest labels: its trees learn through the time "
        "split's validation window and stop and calibrate on the test window, so a changed "
        "regime shapes what is served. Its test figures and the champion gate stay those of "
        "the time split's model, and the monitor measures it only on decisions after its "
        "data. Routine retrains serve the time split's model, whose quality is measurable at "
        "once.",
    )
    marked_gate_margin: float = Field(
        0.005,
        ge=0,
        description="How far below the champion's test AUC a retrain of a classifier the "
        "monitor marked may fall and still be promoted. The monitor found the champion failing "
        "on the newest decisions; the test window, which mostly precedes them, cannot show what "
        "the retrain learned of them, so it only has to be as good there, within this margin. "
        "Routine retrains must beat the champion.",
    )
    train_isolated: bool = Field(
        True,
        description="Train each model in a child process of its own, which gives all its "
        "memory back when it ends; in one process, what a model's training left in the heap "
        "added to the next one's peak (300,000 customers: 9.30 GiB for every model against "
        "5.74 GiB for the largest alone). false: in the calling process.",
    )
    train_processes: int = Field(
        2,
        ge=1,
        description="Models the train flow trains at once, each in its own process (with "
        "`train_isolated`; one at a time without): each fit runs on one thread, so on two "
        "cores two models take about the time of the longer. Each process needs its model's "
        "memory (up to 8 GiB at 1,000,000 customers).",
    )
    train_max_events: int | None = Field(
        None,
        ge=1,
        description="Label events each model keeps at most, in place of the model's own "
        "(`ModelSpec.max_events`, 3,000,000 by default): beyond it a seeded sample of whole "
        "entities. Time and memory of a training grow with it; unset: each model's own.",
    )
    answer_ahead: bool = Field(
        True,
        description="As the service loads its champions, answer into its memos, on a "
        "low-priority thread, the delay risk and window of each parcel in transit and churn of "
        "each customer the outreach queue names (at most `answer_memo_rows` each): their "
        "first ask then finds its answer there, the same to the last bit, if no feature has "
        "crossed a split since.",
    )
    answer_ahead_minutes: float = Field(
        5.0,
        ge=0,
        description="Answer ahead again every this many minutes, at the instant of each pass: "
        "parcels shipped since, rows materialised since and rows whose clock features (hours "
        "since the latest scan, say) crossed a split are answered before their next ask; "
        "rows whose answer is in the memo cost their key only. 0: only as the champions load.",
    )
    answer_memo_rows: int = Field(
        20_000,
        ge=0,
        description="Rows per served model whose SHAP contributions (delay risk, churn) or "
        "booster outputs (the delivery window) the service keeps, by the side each row takes "
        "at every split of the model (the same side everywhere: the same values, to the last "
        "bit). A tracking page refreshed, or a customer scored again before a feature crosses "
        "a split, is answered without TreeSHAP. About 1 KB a row; 0 keeps none.",
    )
    online_cache_rows: int = Field(
        10_000,
        ge=0,
        description="Online feature rows per feature view the service keeps after reading "
        "them from the SQLite online store, the latest asked (a tracking page refreshed, a "
        "customer's offers by category, a parcel answered ahead and then asked). All are let "
        "go of whenever the store changes (a materialisation from any process), so a kept row "
        "is always the one the store holds. A customer's or parcel's row is about 2.5 KB, a "
        "customer's row of one category 0.3 KB; 0 keeps none.",
    )
    lost_after_days: float = Field(
        14.0,
        gt=0,
        description="Days without a tracking scan, past the promise, after which a parcel is "
        "answered as likely lost (no arrival window) and outreach calls instead of notifying.",
    )

    inbox_dir: Path | None = Field(
        None,
        description="Where day batches arrive, one folder per day with its `_batch.json` "
        "(default `<data_dir>/inbox`): the nightly run ingests every day waiting there "
        "after the current data's last day.",
    )
    nightly_at: str = Field(
        "02:00",
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="Local time (HH:MM, in `schedule_timezone`) of the scheduled night.",
    )
    retrain_at: str = Field(
        "sun 04:00",
        pattern=r"^(mon|tue|wed|thu|fri|sat|sun) ([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="Weekday and local time of the scheduled weekly retrain, e.g. 'sun 04:00'.",
    )
    schedule_timezone: str = Field(
        "UTC", description="IANA time zone of the schedules' local times, e.g. Europe/Berlin."
    )
    duckdb_memory_limit: str = Field(
        DEFAULT_DUCKDB_MEMORY,
        description="Memory DuckDB may hold for the offline store's point-in-time joins and "
        "the reads of the newest feature rows: a share of the machine's memory (`10%`) or a "
        "size (`2GiB`, `512MB`). DuckDB's own default is 80%, kept until the process ends; "
        "past the limit it spills to disk.",
    )

    @field_validator("dask_address")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> tuple[str, ...]:
        entries = value.split(",") if isinstance(value, str) else value
        if not isinstance(entries, list | tuple):
            raise ValueError("expected origins separated by commas")
        entries = [str(entry).strip() for entry in entries if str(entry).strip()]
        if ANY_ORIGIN in entries:
            if len(entries) > 1:
                raise ValueError(f"{ANY_ORIGIN!r} allows every origin: name it alone")
            return (ANY_ORIGIN,)
        return tuple(dict.fromkeys(parse_origin(entry) for entry in entries))

    @field_validator("duckdb_memory_limit")
    @classmethod
    def _memory_size(cls, value: str) -> str:
        if not MEMORY_SIZE.fullmatch(value.strip()):
            raise ValueError(f"{value!r} is neither a share (10%) nor a size (2GiB, 512MB)")
        return value.strip()

    @field_validator("schedule_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone, e.g. Europe/Berlin") from None
        return value

    @property
    def inbox(self) -> Path:
        """Where day batches arrive (`inbox_dir`, default `<data_dir>/inbox`)."""
        return self.inbox_dir if self.inbox_dir is not None else self.data_dir / "inbox"

    @property
    def raw_root(self) -> Path:
        """Published raw contract tables (versions and the `current` link)."""
        return self.data_dir / "raw"

    @property
    def features_dir(self) -> Path:
        """Published offline feature tables (versions and the `current` link)."""
        return self.data_dir / "features"

    @property
    def serving_dir(self) -> Path:
        """The outreach queue the service serves, and the record of queued actions."""
        return self.data_dir / "serving"

    @property
    def monitoring_dir(self) -> Path:
        """The monitor's tables (drift by model, segment and column) and its HTML reports."""
        return self.data_dir / "monitoring"

    @property
    def feast_dir(self) -> Path:
        """Feast registry and SQLite online store."""
        return self.data_dir / "feast"

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking and registry URI: `mlflow_tracking_uri`, else SQLite under the data
        folder (`<data_dir>/mlflow/mlflow.db`)."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.data_dir / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path | None:
        """Local artifact folder of new experiments: under the data folder with the default
        SQLite store (a tracking server keeps its own: None)."""
        if not self.tracking_uri.startswith("sqlite:"):
            return None
        return (self.data_dir / "mlflow" / "artifacts").resolve()


class SettingsError(ValueError):
    """A setting in the environment is not valid; the message names each variable."""


def get_settings() -> Settings:
    """Build the settings from the current environment.

    Raises:
        SettingsError: A variable's value is not valid, named with the problem.
    """
    try:
        return Settings()
    except ValidationError as error:
        prefix = Settings.model_config["env_prefix"]
        problems = "; ".join(
            f"{prefix}{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in error.errors()
        )
        raise SettingsError(problems) from None
