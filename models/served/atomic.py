"""Files written whole: a reader sees the old file or the new one, never a part.

Each writer writes beside its target, in the same folder (so the rename stays on one
filesystem), and renames over it; a failed write leaves no temporary file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write` on a temporary path beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(scratch))
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: Path, record: object, **dump_options) -> Path:
    """`record` as JSON (`json.dump` options passed on), written whole."""

    def write(scratch: Path) -> None:
        with open(scratch, "w") as out:
            json.dump(record, out, **dump_options)

    return write_atomic(path, write)
