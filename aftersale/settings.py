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

    @property
    def raw_dir(self) -> Path:
        """Raw contract tables of the embedded default (simulator output)."""
        return self.data_dir / "raw"


def get_settings() -> Settings:
    """Build the settings from the current environment."""
    return Settings()
