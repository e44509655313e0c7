"""Feast store configuration for an environment, filled in from the settings.

The files in `features/repo` are what Feast's own commands read there: relative paths are
taken from that folder and point into the project's data folder (`data/` at its root), and
the Redis online store connects to the default address. Feast expands environment variables
in the files but has no defaults for unset ones, so the defaults are written out, and this
module moves the paths into the configured data folder and connects Redis where the
settings say.

`python -m features.store.config` prints the configuration of the current settings as a
`feature_store.yaml`, for Feast's commands on another data folder (`FEAST_FS_YAML_FILE_PATH`).
"""

from __future__ import annotations

import os
from pathlib import Path
from string import Template

import yaml
from feast import FeatureStore, RepoConfig

from aftersale.settings import Settings, get_settings
from features.store.duckdb_offline import STORE_TYPE as DUCKDB_STORE

REPO_DIR = Path(__file__).resolve().parent.parent / "repo"
CONFIG_FILES = {"local": "feature_store.yaml", "redis": "feature_store.redis.yaml"}
# The data folder the files' relative paths point into.
DEFAULT_DATA_DIR = REPO_DIR.parent.parent / "data"


def _expanded(file_name: str) -> str:
    """The file's text with environment variables expanded, as Feast expands them.

    Raises:
        ValueError: The file names a variable that is not set.
    """
    text = (REPO_DIR / file_name).read_text()
    try:
        return Template(text).substitute(os.environ)
    except KeyError as error:
        raise ValueError(f"{file_name} needs the environment variable {error.args[0]}") from None


def _in_data_folder(path: str, settings: Settings) -> str:
    """A path of the files, moved from the project's data folder into the configured one.

    Raises:
        ValueError: A relative path points outside the project's data folder.
    """
    if Path(path).is_absolute():
        return path
    target = Path(os.path.normpath(REPO_DIR / path))
    if not target.is_relative_to(DEFAULT_DATA_DIR):
        raise ValueError(f"{path} (from {REPO_DIR}) is not inside {DEFAULT_DATA_DIR}")
    return str(settings.data_dir.resolve() / target.relative_to(DEFAULT_DATA_DIR))


def config_values(settings: Settings, offline_store: dict | None = None) -> dict:
    """The `feature_store.yaml` of `settings.feature_store`, filled in for the settings.

    Args:
        settings: The settings.
        offline_store: Replaces the file's `offline_store:` section (e.g. `{"type": "file"}`
            for Feast's stock file store, to compare stores on the same tables).
    """
    name = settings.feature_store
    if name not in CONFIG_FILES:
        raise ValueError(f"AFTERSALE_FEATURE_STORE={name!r} is not one of {sorted(CONFIG_FILES)}")
    raw = yaml.safe_load(_expanded(CONFIG_FILES[name]))
    raw["registry"]["path"] = _in_data_folder(raw["registry"]["path"], settings)
    online = raw["online_store"]
    if "path" in online:
        online["path"] = _in_data_folder(online["path"], settings)
    if "connection_string" in online:
        online["connection_string"] = settings.redis_connection
    if offline_store is not None:
        raw["offline_store"] = offline_store
    if raw["offline_store"].get("type") == DUCKDB_STORE:
        raw["offline_store"].setdefault("memory_limit", settings.duckdb_memory_limit)
    return raw


def repo_config(settings: Settings, offline_store: dict | None = None) -> RepoConfig:
    """The RepoConfig of `settings.feature_store`, with paths under the data folder.

    The repo path is the published feature tables' folder, so the relative paths of the
    file sources resolve to the current version of the offline tables.

    Args:
        settings: The settings.
        offline_store: Replaces the file's `offline_store:` section (see `config_values`).
    """
    config = RepoConfig(**config_values(settings, offline_store))
    config.repo_path = settings.features_dir.resolve() / "current"
    return config


def feature_store(settings: Settings, offline_store: dict | None = None) -> FeatureStore:
    """A FeatureStore for the configured environment (creates the Feast folder)."""
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=repo_config(settings, offline_store))


def feature_store_yaml(settings: Settings) -> str:
    """The configuration of `settings` as a `feature_store.yaml` for Feast's own commands."""
    return yaml.safe_dump(config_values(settings), sort_keys=False)


if __name__ == "__main__":
    print(feature_store_yaml(get_settings()), end="")
