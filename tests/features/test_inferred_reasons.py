"""Contacts that come as text without a reason: ingest fills the reason with the contact-
reason classifier's answer and marks it inferred, for a whole source and for a day's batch;
a contact with neither text nor reason, or a batch with reasons to infer and no classifier,
is rejected by key and leaves the current data as they were; the text never reaches a log
or a message. The classifier is fitted on a Bitext sample (those tests skip when
../shared/data is absent)."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from features import ingest, versioned
from features.contract.batches import Manifest, as_known_at, day_batch
from features.contract.io import read_validated
from features.contract.schema import CONTRACT
from features.contract.validate import validate_folder
from features.sources.base import FolderSource
from models.contact_reason import NAME, TEXT
from models.served.text_reason import ReasonClassifier
from training.text_reason import default_bitext_path, load_messages, logistic

BITEXT = default_bitext_path()
HAND_WRITTEN = Path(__file__).resolve().parents[1] / "models" / "contact_messages.csv"
# Personal text nothing else holds: it may be read by the classifier, never logged.
CANARY = "zqcanarytext"
TEXTS = 3


@pytest.fixture(scope="module")
def classifier() -> ReasonClassifier:
    """The classifier fitted on 800 Bitext messages."""
    if not BITEXT.is_file():
        pytest.skip(f"Bitext messages not found at {BITEXT}")
    messages = load_messages(BITEXT).sample(800, random_state=0)
    return ReasonClassifier(NAME, logistic(0).fit(messages[TEXT], messages["reason"]))


@pytest.fixture(scope="module")
def days(sim_tables: dict[str, pa.Table]) -> tuple[date, date]:
    """A day of the simulated business with contacts, and the day before it."""
    ts = sim_tables["contacts"].column("ts").to_pandas()
    counts = ts.dt.date.value_counts().sort_index()
    busy = counts[counts >= TEXTS].index
    day = busy[len(busy) // 2]
    return day - timedelta(days=1), day


def messages(count: int) -> list[str]:
    """Messages written for this shop, each carrying the canary."""
    texts = pd.read_csv(HAND_WRITTEN)["text"].tolist()
    return [f"{texts[i % len(texts)]} (ref {CANARY}{i})" for i in range(count)]


def with_texts(contacts: pa.Table, count: int) -> pa.Table:
    """The contacts with the first `count` given as text, without a reason."""
    reasons = contacts.column("reason").to_pylist()
    texts = [None] * contacts.num_rows
    for i, message in enumerate(messages(count)):
        reasons[i], texts[i] = None, message
    for name, values in (("reason", reasons), ("text", texts)):
        index = contacts.schema.get_field_index(name)
        contacts = contacts.set_column(index, name, pa.array(values, pa.string()))
    return contacts


def write(folder: Path, tables: dict[str, pa.Table], manifest: Manifest | None = None) -> Path:
    """A source's folder: the columns a source sends (ingest fills the rest)."""
    folder.mkdir(parents=True)
    for name, table in tables.items():
        sent = [c.name for c in CONTRACT[name].columns if not c.by_ingest]
        pq.write_table(table.select(sent), folder / f"{name}.parquet")
    if manifest is not None:
        manifest.write(folder)
    return folder


def ingest_whole(folder: Path, raw_root: Path, load_reasons=None) -> Path:
    """Ingest a whole source, as `aftersale ingest` does."""
    staging = ingest.stage(FolderSource(folder), raw_root)
    ingest.check(staging, load_reasons)
    ingest.record_history(staging)
    return versioned.publish(staging)


def assert_inferred(contacts: pd.DataFrame, classifier: ReasonClassifier) -> None:
    texted = contacts[contacts["text"].notna()]
    assert len(texted) == TEXTS
    answers = classifier.classify(texted["text"].tolist())
    assert texted["reason"].tolist() == answers["reason"].tolist()
    assert texted["reason_confidence"].tolist() == pytest.approx(answers["confidence"].tolist())
    assert texted["reason_inferred"].all()
    assert texted["reason_low_confidence"].tolist() == answers["low_confidence"].tolist()
    given = contacts[contacts["text"].isna()]
    assert not given["reason_inferred"].any()
    assert not given["reason_low_confidence"].any()
    assert given["reason_confidence"].isna().all()
    assert given["reason"].notna().all()


def test_a_folder_of_texts_is_ingested_with_reasons_inferred(
    sim_tables, classifier, tmp_path, caplog
) -> None:
    tables = {**sim_tables, "contacts": with_texts(sim_tables["contacts"], TEXTS)}
    folder = write(tmp_path / "source", tables)
    with caplog.at_level(logging.DEBUG):
        version = ingest_whole(folder, tmp_path / "raw", lambda: classifier)
    contacts = read_validated(version)["contacts"].to_pandas()
    assert_inferred(contacts, classifier)
    assert f"inferred {TEXTS} contact reasons from text" in caplog.text
    assert CANARY not in caplog.text


def test_a_day_of_texts_is_appended_with_reasons_inferred(
    sim_tables, days, classifier, tmp_path, caplog
) -> None:
    before, day = days
    history = write(
        tmp_path / "history", as_known_at(sim_tables, before), Manifest("history", before)
    )
    batch = day_batch(sim_tables, day)
    batch["contacts"] = with_texts(batch["contacts"], TEXTS)
    folder = write(tmp_path / "day", batch, Manifest("day", day))
    raw_root = tmp_path / "raw"
    ingest_whole(history, raw_root)
    loads = []

    def load() -> ReasonClassifier:
        loads.append(1)
        return classifier

    with caplog.at_level(logging.DEBUG):
        appended = ingest.append_day(folder, raw_root, load)
    assert appended.changed
    assert loads == [1]
    contacts = read_validated(appended.version)["contacts"].to_pandas()
    assert_inferred(contacts, classifier)
    assert CANARY not in caplog.text
    # The same day again is a replay: nothing changes, and the classifier is not asked.
    again = ingest.append_day(folder, raw_root, load)
    assert not again.changed
    assert again.version == appended.version


def test_a_contact_sent_again_keeps_the_reason_an_earlier_champion_inferred(
    sim_tables, days, classifier, tmp_path
) -> None:
    """A source that sends a day's contacts again the next day (an overlapping export):
    a newer classifier, here one that answers every message as low-confidence, does not
    rewrite the reasons the earlier one inferred, and the re-sent rows are accepted."""
    before, day = days
    next_day = day + timedelta(days=1)
    history = write(
        tmp_path / "history", as_known_at(sim_tables, before), Manifest("history", before)
    )
    first = day_batch(sim_tables, day)
    first["contacts"] = with_texts(first["contacts"], TEXTS)
    raw_root = tmp_path / "raw"
    ingest_whole(history, raw_root)
    ingest.append_day(
        write(tmp_path / "day", first, Manifest("day", day)), raw_root, lambda: classifier
    )
    second = day_batch(sim_tables, next_day)
    again = first["contacts"].slice(0, TEXTS)
    second["contacts"] = pa.concat_tables(
        [second["contacts"], again.select(second["contacts"].column_names)]
    )
    unsure = ReasonClassifier(NAME, classifier.pipeline, threshold=1.0)
    assert unsure.classify(messages(TEXTS))["low_confidence"].all()
    appended = ingest.append_day(
        write(tmp_path / "next", second, Manifest("day", next_day)), raw_root, lambda: unsure
    )
    contacts = read_validated(appended.version)["contacts"].to_pandas()
    assert_inferred(contacts, classifier)


def test_a_contact_with_neither_text_nor_reason_is_named_by_key(sim_tables, tmp_path) -> None:
    contacts = with_texts(sim_tables["contacts"], TEXTS)
    index = contacts.schema.get_field_index("text")
    texts = contacts.column("text").to_pylist()
    texts[1] = None
    contacts = contacts.set_column(index, "text", pa.array(texts, pa.string()))
    folder = write(tmp_path / "source", {**sim_tables, "contacts": contacts})
    bare = contacts.column("contact_id")[1].as_py()
    expected = (
        "contacts.reason: 1 row is missing a value, with no text to infer it from "
        f"(contact_id {bare})"
    )
    assert [str(v) for v in validate_folder(folder).violations] == [expected]
    with pytest.raises(ingest.ContractError) as rejected:
        ingest_whole(folder, tmp_path / "raw", lambda: pytest.fail("nothing to infer yet"))
    assert expected in str(rejected.value)
    assert CANARY not in str(rejected.value)
    assert versioned.current(tmp_path / "raw") is None


def test_without_a_classifier_a_batch_is_rejected_and_the_current_data_stay(
    sim_tables, days, tmp_path, caplog
) -> None:
    before, day = days
    raw_root = tmp_path / "raw"
    history = as_known_at(sim_tables, before)
    current = ingest_whole(
        write(tmp_path / "history", history, Manifest("history", before)), raw_root
    )
    published = {path.name: path.read_bytes() for path in current.iterdir()}
    batch = day_batch(sim_tables, day)
    batch["contacts"] = with_texts(batch["contacts"], TEXTS)
    folder = write(tmp_path / "day", batch, Manifest("day", day))

    def no_champion():
        raise LookupError("no champion version of 'contact_reason'")

    with caplog.at_level(logging.DEBUG), pytest.raises(ingest.ContractError) as rejected:
        ingest.append_day(folder, raw_root, no_champion)
    message = str(rejected.value)
    assert f"contacts.reason: {TEXTS} rows have no reason" in message
    assert "no champion version of 'contact_reason'" in message
    assert f"train one with `{ingest.TRAIN_REASONS}`" in message
    first = batch["contacts"].column("contact_id")[0].as_py()
    assert f"contact_id {first}" in message
    assert CANARY not in message
    assert CANARY not in caplog.text
    assert versioned.current(raw_root) == current
    assert {path.name: path.read_bytes() for path in current.iterdir()} == published
    # A whole source with texts and no classifier is rejected too, leaving no staging.
    whole = {**history, "contacts": with_texts(history["contacts"], TEXTS)}
    with pytest.raises(ingest.ContractError, match="rows have no reason"):
        ingest_whole(write(tmp_path / "whole", whole), raw_root, None)
    assert versioned.current(raw_root) == current
    assert not list(raw_root.glob(".v-*.partial"))


def test_an_answer_outside_the_contract_is_rejected(sim_tables, tmp_path) -> None:
    class Unknown:
        def classify(self, texts):
            return pd.DataFrame(
                {"reason": ["haunted"] * len(texts), "confidence": 0.9, "low_confidence": False}
            )

    contacts = with_texts(sim_tables["contacts"], 2)
    with pytest.raises(
        ingest.ContractError, match=r"contacts\.reason: 2 rows have a value outside"
    ):
        ingest.infer_reasons(contacts, Unknown, tmp_path)


def test_given_reasons_need_no_classifier(sim_tables) -> None:
    contacts = sim_tables["contacts"]
    assert ingest.infer_reasons(contacts, None, Path("unused")) is contacts
    assert not pc.any(contacts.column("reason_inferred")).as_py()
