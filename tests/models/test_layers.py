"""What a deployment that only serves loads: the model declarations and the served models
bring in neither training nor Feast when imported (the static contracts are `make lint`'s)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["models", "models.served.classifier", "models.served.window", "models.policies"]
)
def test_importing_leaves_training_and_feast_unloaded(module: str) -> None:
    code = (
        "import json, sys\n"
        f"import {module}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "models" in loaded
    assert not loaded & {"training", "feast", "serving", "flows"}, loaded
