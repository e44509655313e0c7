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


@pytest.mark.slow
@pytest.mark.skipif(not BITEXT.is_file(), reason=f"Bitext messages not found at {BITEXT}")
def test_the_commands_train_then_infer(
    sim_dir: Path, tmp_path: Path, monkeypatch, prefect_harness
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    import training.text_reason
    from aftersale.cli import app
    from aftersale.settings import get_settings
    from features import versioned
    from features.contract.io import read_validated

    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path / "data"))
    folder = tmp_path / "source"
    folder.mkdir()
    for path in sim_dir.glob("*.parquet"):
        table = pq.read_table(path)
        if path.stem == "contacts":
            reasons = table.column("reason").to_pylist()
            reasons[:2] = [None, None]
            texts = ["where is my parcel, it is a week late", "I was charged twice"]
            texts += [None] * (table.num_rows - 2)
            table = table.set_column(
                table.schema.get_field_index("reason"), "reason", pa.array(reasons, pa.string())
            ).append_column("text", pa.array(texts, pa.string()))
        pq.write_table(table, folder / path.name)
    runner = CliRunner()
    ingest = ["ingest", "--source", "folder", "--path", str(folder)]
    rejected = runner.invoke(app, ingest)
    assert rejected.exit_code == 1, rejected.output
    assert "train one with `aftersale train --model contact_reason`" in rejected.output
    assert "parcel" not in rejected.output
    assert versioned.current(get_settings().raw_root) is None

    train = training.text_reason.train_text_reason
    monkeypatch.setattr(
        training.text_reason, "train_text_reason", lambda settings: train(settings, sample=600)
    )
    trained = runner.invoke(app, ["train", "--model", "contact_reason"])
    assert trained.exit_code == 0, trained.output
    assert "contact_reason: test accuracy" in trained.output
    published = runner.invoke(app, ingest)
    assert published.exit_code == 0, published.output
    assert "parcel" not in published.output
    contacts = read_validated(versioned.current(get_settings().raw_root))["contacts"]
    inferred = contacts.filter(contacts.column("reason_inferred")).to_pandas()
    assert len(inferred) == 2
    assert inferred["reason"].notna().all()
