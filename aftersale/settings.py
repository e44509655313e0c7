"""Runtime settings, read from the environment (prefix `AFTERSALE_`) on demand.

Nothing happens on import: callers build the settings with `get_settings()` when they need
them, so tests can point every path at a temporary folder through the environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    feature_store: str = Field(
        "local", description="Feast environment: local (SQLite online) or redis."
    )
    redis_connection: str = Field(
        "localhost:6379,db=0", description="Feast Redis connection string (redis environment)."
    )

    @property
    def raw_root(self) -> Path:
        """Published raw contract tables (versions and the `current` link)."""
        return self.data_dir / "raw"

    @property
    def features_dir(self) -> Path:
        """Published offline feature tables (versions and the `current` link)."""
        return self.data_dir / "features"

    @property
    def feast_dir(self) -> Path:
        """Feast registry and SQLite online store."""
        return self.data_dir / "feast"


def get_settings() -> Settings:
    """Build the settings from the current environment."""
    return Settings()
