"""Feast store configuration for an environment, filled in from the settings."""

from __future__ import annotations

import os
from pathlib import Path
from string import Template

import yaml
from feast import FeatureStore, RepoConfig

from aftersale.settings import Settings

REPO_DIR = Path(__file__).resolve().parent.parent / "repo"
CONFIG_FILES = {"local": "feature_store.yaml", "redis": "feature_store.redis.yaml"}


def repo_config(settings: Settings, offline_store: dict | None = None) -> RepoConfig:
    """The RepoConfig of `settings.feature_store`, with paths under the data folder.

    The repo path is the published feature tables' folder, so the relative paths of the
    file sources resolve to the current version of the offline tables.

    Args:
        settings: The settings.
        offline_store: Replaces the file's `offline_store:` section (e.g. `{"type": "file"}`
            for Feast's stock file store, to compare stores on the same tables).
    """
    name = settings.feature_store
    if name not in CONFIG_FILES:
        raise ValueError(f"AFTERSALE_FEATURE_STORE={name!r} is not one of {sorted(CONFIG_FILES)}")
    values = {
        **os.environ,
        "AFTERSALE_FEAST_DIR": str(settings.feast_dir.resolve()),
        "AFTERSALE_REDIS_CONNECTION": settings.redis_connection,
    }
    text = (REPO_DIR / CONFIG_FILES[name]).read_text()
    raw = yaml.safe_load(Template(text).substitute(values))
    if offline_store is not None:
        raw["offline_store"] = offline_store
    config = RepoConfig(**raw)
    config.repo_path = settings.features_dir.resolve() / "current"
    return config


def feature_store(settings: Settings, offline_store: dict | None = None) -> FeatureStore:
    """A FeatureStore for the configured environment (creates the Feast folder)."""
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=repo_config(settings, offline_store))
