"""Which champions are marked for retraining, and why.

The monitor marks a champion when its newest days cross a threshold (`training.monitor`);
the pipeline's train stage retrains the marked models and clears their marks; the service
shows them on `/v1/models` and as a gauge on `/metrics`. One small JSON file under the
monitoring folder holds them, `{"<model>": {"since": "<ISO instant>", "reason": "..."}}`,
written whole beside itself and renamed.
"""

from __future__ import annotations

import json
from pathlib import Path

from models.served.atomic import write_json_atomic

MARKS_FILE = "retrain_due.json"


def read_marks(folder: Path) -> dict[str, dict[str, str]]:
    """Model → its mark (`since`, `reason`); empty without a marks file.

    Raises:
        ValueError: The file is not a JSON object of marks (the message names it).
    """
    path = folder / MARKS_FILE
    if not path.is_file():
        return {}
    try:
        marks = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error})") from None
    if not isinstance(marks, dict) or not all(isinstance(m, dict) for m in marks.values()):
        raise ValueError(f'{path}: expected {{"<model>": {{"since": ..., "reason": ...}}}}')
    return marks


def _write(folder: Path, marks: dict[str, dict[str, str]]) -> Path:
    return write_json_atomic(folder / MARKS_FILE, marks, indent=2, sort_keys=True)


def mark(folder: Path, model: str, reason: str, since: str) -> Path:
    """Mark `model` for retraining; an existing mark keeps its `since`, takes the new reason."""
    marks = read_marks(folder)
    marks[model] = {"since": marks.get(model, {}).get("since", since), "reason": reason}
    return _write(folder, marks)


def clear(folder: Path, *models: str) -> Path | None:
    """Remove the marks of `models` (after they were retrained); None when none had one."""
    marks = read_marks(folder)
    left = {name: mark for name, mark in marks.items() if name not in models}
    if left == marks:
        return None
    return _write(folder, left)
