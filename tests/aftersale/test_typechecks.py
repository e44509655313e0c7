"""Typeguard's `@typechecked` leaves what it decorates unchanged once the switch is set,
whether typeguard loads after the switch or before it; without it the checks stay on; and
Feast, imported through this project's packages, loads without its checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# A module that uses typeguard as Feast does: the decorator imported by name, on a function
# and on a class's method.
CHECKED = """
from typeguard import typechecked


@typechecked
def double(x: int) -> int:
    return x * 2


@typechecked
class Box:
    def __init__(self, size: int) -> None:
        self.size = size
"""

# In a fresh interpreter: the switch (or not), then the module, then a wrong call.
SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[2])
if sys.argv[1] == "typeguard first":
    import typeguard
if sys.argv[1] != "checks on":
    from aftersale.typechecks import library_typechecks_off
    library_typechecks_off()
    library_typechecks_off()
import checked
result = {}
try:
    result["double"] = checked.double("ab")
    result["box"] = checked.Box("big").size
except Exception as error:
    result["error"] = type(error).__name__
import inspect, typeguard
result["source_readable"] = "typechecked" in inspect.getsource(typeguard)
print(json.dumps(result))
"""


def _run(mode: str, folder: Path) -> dict:
    (folder / "checked.py").write_text(CHECKED)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, str(folder)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["typeguard later", "typeguard first"])
def test_switched_off_the_decorated_code_runs_unchecked(mode, tmp_path) -> None:
    assert _run(mode, tmp_path) == {"double": "abab", "box": "big", "source_readable": True}


def test_without_the_switch_a_wrong_type_is_refused(tmp_path) -> None:
    assert _run("checks on", tmp_path) == {"error": "TypeCheckError", "source_readable": True}


def test_feast_through_the_project_loads_without_its_checks() -> None:
    script = (
        "import features.store.config\n"
        "from feast.feature_view import FeatureView\n"
        "print('typeguard' in FeatureView.__init__.__code__.co_names)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
