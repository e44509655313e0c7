"""Feast's own command line on the repository: `feast feature-services list` run in
`features/repo` opens the project's data folder by default and any configured one through
the file `python -m features.store.config` writes; the project fills in the same files for
every data folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aftersale.settings import Settings
from features.build.tables import build_feature_tables, publish_tables
from features.repo import feast_objects
from features.store import config
from features.store.config import CONFIG_FILES, REPO_DIR, config_values, feature_store
from features.store.sync import apply_definitions

ROOT = Path(__file__).resolve().parents[3]
FEAST = str(Path(sys.executable).with_name("feast"))
# Only in the registry built here: a listing that shows it read this folder's registry.
MARKER_SERVICE = "built_here_v1"


def _clean_env(**values: str) -> dict[str, str]:
    """The environment without any variable that points the project or Feast somewhere."""
    feast_vars = {"FEATURE_REPO_DIR_ENV_VAR", "FEATURE_STORE_YAML_BASE64"}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AFTERSALE_", "FEAST_")) and k not in feast_vars
    }
    return env | values


def _listed(cwd: Path, env: dict[str, str], *args: str) -> str:
    """The output of `feast [args] feature-services list` run in `cwd`."""
    done = subprocess.run(
        [FEAST, *args, "feature-services", "list"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _placeholder_folders(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if "${" in p.name]


@pytest.fixture(scope="module")
def layout(sim_tables, tmp_path_factory):
    """A copy of the project's layout: `features/repo` with the two files, and a data folder
    beside it holding a small registry (the project's definitions and one more service)."""
    from feast import FeatureService

    root = tmp_path_factory.mktemp("layout")
    repo = root / "features" / "repo"
    repo.mkdir(parents=True)
    for name in CONFIG_FILES.values():
        shutil.copy(REPO_DIR / name, repo / name)
    settings = Settings(data_dir=root / "data")
    publish_tables(build_feature_tables(sim_tables), settings.features_dir)
    store = feature_store(settings)
    apply_definitions(store)
    views = {v.name: v for v in store.list_feature_views()}
    store.apply([FeatureService(name=MARKER_SERVICE, features=[views["shipment_events"]])])
    return root, settings


def _project_services() -> set[str]:
    from feast import FeatureService

    return {o.name for o in feast_objects() if isinstance(o, FeatureService)}


def _service_names(listing: str) -> set[str]:
    return {line.split()[0] for line in listing.splitlines()[1:] if line.strip()}


@pytest.mark.slow
def test_feast_opens_a_configured_data_folder(layout, tmp_path) -> None:
    _, settings = layout
    written = subprocess.run(
        [sys.executable, "-m", "features.store.config"],
        cwd=ROOT,
        env=_clean_env(AFTERSALE_DATA_DIR=str(settings.data_dir)),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    file = tmp_path / "feature_store.yaml"
    file.write_text(written.stdout)
    listing = _listed(REPO_DIR, _clean_env(FEAST_FS_YAML_FILE_PATH=str(file)))
    assert _service_names(listing) == _project_services() | {MARKER_SERVICE}
    assert _placeholder_folders(REPO_DIR) == []


@pytest.mark.slow
@pytest.mark.parametrize("file_name", sorted(CONFIG_FILES.values()))
def test_feast_reads_the_project_data_folder_without_any_variable(layout, file_name) -> None:
    root, _ = layout
    repo = root / "features" / "repo"
    listing = _listed(repo, _clean_env(), "--feature-store-yaml", file_name)
    assert _service_names(listing) == _project_services() | {MARKER_SERVICE}
    assert _placeholder_folders(root) == []


@pytest.mark.parametrize("store", sorted(CONFIG_FILES))
def test_the_project_fills_in_the_configured_data_folder(store, tmp_path) -> None:
    settings = Settings(
        data_dir=tmp_path / "elsewhere", feature_store=store, redis_connection="cache:6380,db=2"
    )
    values = config_values(settings)
    assert values["registry"]["path"] == str(settings.feast_dir.resolve() / "registry.db")
    online = values["online_store"]
    if store == "local":
        assert online["path"] == str(settings.feast_dir.resolve() / "online.db")
    else:
        assert online["connection_string"] == "cache:6380,db=2"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("  password: ${AFTERSALE_TEST_UNSET_SECRET}", "AFTERSALE_TEST_UNSET_SECRET"),
        ("  path: ../../elsewhere/registry.db", "is not inside"),
    ],
    ids=["unset variable", "path outside the data folder"],
)
def test_a_file_that_cannot_be_filled_in_is_an_error_naming_why(
    line, message, tmp_path, monkeypatch
) -> None:
    repo = tmp_path / "features" / "repo"
    repo.mkdir(parents=True)
    text = (REPO_DIR / CONFIG_FILES["local"]).read_text()
    text = text.replace("  cache_ttl_seconds: 60", f"  cache_ttl_seconds: 60\n{line}")
    if "path:" in line:
        text = text.replace("  path: ../../data/feast/registry.db\n", "")
    (repo / CONFIG_FILES["local"]).write_text(text)
    monkeypatch.setattr(config, "REPO_DIR", repo)
    monkeypatch.setattr(config, "DEFAULT_DATA_DIR", tmp_path / "data")
    monkeypatch.delenv("AFTERSALE_TEST_UNSET_SECRET", raising=False)
    with pytest.raises(ValueError, match=message):
        config_values(Settings(data_dir=tmp_path / "data"))
