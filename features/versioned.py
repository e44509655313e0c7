"""Versioned folders behind an atomically switched link.

Writers fill a private staging folder, then `publish` turns it into a new version and
repoints `<root>/current` with one rename. Readers that follow the link see the previous
complete version or the new one, never a half-written folder; an interrupted writer leaves
only a staging folder that the next publish removes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

CURRENT = "current"
KEEP_VERSIONS = 2
# A version's own record, written into it before it is published.
METADATA = "_version.json"


def staging_dir(root: Path) -> Path:
    """A new, empty private folder under `root` to write a version into."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f".v-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.partial"
    path.mkdir()
    return path


def publish(staging: Path) -> Path:
    """Make a staging folder the current version of its root.

    Returns:
        The version folder now pointed to by `<root>/current`.
    """
    root = staging.parent
    previous = current(root)
    version = root / staging.name.removeprefix(".").removesuffix(".partial")
    staging.rename(version)
    _point(root, version)
    # The version that was current stays, so that a failed night can return to it.
    prune(root, keep=[version] if previous is None else [version, previous])
    return version


def restore(root: Path, version: Path | None) -> None:
    """Make `version` (one published under `root`) current again, atomically; with None,
    leave `root` with no current version, as before its first publish.

    Raises:
        FileNotFoundError: The version folder no longer exists.
    """
    if version is None:
        (root / CURRENT).unlink(missing_ok=True)
        return
    if not version.is_dir():
        raise FileNotFoundError(f"{version}: no such version to restore")
    _point(root, version)


def _point(root: Path, version: Path) -> None:
    temporary = root / f".{CURRENT}-{uuid.uuid4().hex[:8]}"
    temporary.symlink_to(version.name)
    # Renaming over an existing link is atomic on POSIX file systems.
    os.replace(temporary, root / CURRENT)


def discard(staging: Path) -> None:
    """Remove a staging folder that must not be published."""
    shutil.rmtree(staging, ignore_errors=True)


def current(root: Path) -> Path | None:
    """The current version folder, or None before the first publish."""
    link = root / CURRENT
    return link.resolve() if link.exists() else None


def prune(root: Path, keep: Path | list[Path]) -> None:
    """Delete versions beyond the newest few, but those in `keep`, and leftovers of
    interrupted writers."""
    # By name: `current` gives resolved paths, the root may be relative.
    kept = {keep.name} if isinstance(keep, Path) else {path.name for path in keep}
    versions = sorted(p for p in root.glob("v-*") if p.is_dir())
    for old in versions[:-KEEP_VERSIONS]:
        if old.name not in kept:
            shutil.rmtree(old, ignore_errors=True)
    for partial in root.glob(".v-*.partial"):
        age_s = time.time() - partial.stat().st_mtime
        # A young staging folder may belong to a writer still running.
        if age_s > 3600:
            shutil.rmtree(partial, ignore_errors=True)


def write_metadata(staging: Path, record: dict) -> None:
    """Record facts about a version (JSON) in its staging folder, before `publish`."""
    (staging / METADATA).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def metadata(version: Path) -> dict:
    """What `write_metadata` recorded in a version; empty when nothing was."""
    path = version / METADATA
    return json.loads(path.read_text()) if path.is_file() else {}


def link_parts(source: Path, target: Path) -> int:
    """Hard-link the Parquet parts of a published version's view folder into a staging
    folder's (a part never changes once published, so both versions may share it); returns
    the next free part number (parts are named `part-NNNNN.parquet`)."""
    target.mkdir(parents=True, exist_ok=True)
    numbers = [-1]
    for part in sorted(source.glob("*.parquet")):
        os.link(part, target / part.name)
        numbers.append(int(part.stem.rsplit("-", 1)[-1]))
    return max(numbers) + 1
