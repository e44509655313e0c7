"""The ingest flow's contact-reason classifier: the champion `training.text_reason`
registered, loaded only when a batch has reasons to infer, and a plain LookupError when
there is none (the Bitext test skips when ../shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from aftersale.settings import Settings
from flows.ingest import reason_loader
from training.text_reason import default_bitext_path, train_text_reason

BITEXT = default_bitext_path()
HAND_WRITTEN = Path(__file__).resolve().parents[1] / "models" / "contact_messages.csv"


def test_without_a_champion_loading_says_why(tmp_path: Path) -> None:
    load = reason_loader(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(LookupError, match="no champion version of 'contact_reason'"):
        load()


@pytest.mark.slow
@pytest.mark.skipif(not BITEXT.is_file(), reason=f"Bitext messages not found at {BITEXT}")
def test_ingest_loads_the_registered_champion(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    result = train_text_reason(settings, sample=600)
    assert result.promotion.promoted
    texts = pd.read_csv(HAND_WRITTEN)["text"].tolist()
    loaded = reason_loader(settings.tracking_uri)()
    pd.testing.assert_frame_equal(loaded.classify(texts), result.model.classify(texts))
