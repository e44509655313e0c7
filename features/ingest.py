"""Ingest: write a source into staging, check it against the contract, publish it.

A whole source replaces the current raw data; a day's batch (a folder whose `_batch.json`
names a day) is appended to it: checked against the contract and against the current data,
upserted, and published as a new version whose metadata records the days ingested. A
rejected batch is discarded whole and the previously published raw data stays current.

Either way, a contact that came as text without a reason gets one from the contact-reason
classifier's champion (`infer_reasons`), marked `reason_inferred` with the classifier's
`reason_confidence`; where reasons are missing and no champion can be loaded, the batch is
rejected. The classifier is handed in as a loader (`ReasonLoader`), called only when a batch
has a reason to infer: this layer does not import the models.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features import versioned
from features.contract.batches import (
    BATCH_FILE,
    Manifest,
    batch_violations,
    check_upserted,
    fingerprint,
    read_manifest,
    upsert,
)
from features.contract.io import find_table_file, read_table, read_validated
from features.contract.schema import CONTRACT
from features.contract.validate import check_columns, load_folder
from features.contract.violations import ValidationReport, Violation, violation
from features.instants import watermark
from features.sources.base import Source

log = logging.getLogger(__name__)

# How to make a contact-reason champion, named where one is missing.
TRAIN_REASONS = "aftersale train --model contact_reason"


class ContractError(ValueError):
    """Raw data broke the contract; the message lists every violation."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        lines = "\n".join(f"  {v}" for v in report.violations)
        super().__init__(
            f"{len(report.violations)} contract violations in {report.folder}:\n{lines}"
        )


class ReasonReader(Protocol):
    """Reads why a customer got in touch from their message (the contact-reason classifier
    as served, `models.served.text_reason.ReasonClassifier`)."""

    def classify(self, texts: Sequence[str]) -> pd.DataFrame:
        """Per text, in order: `reason` (a contract reason; `other` below the confidence
        threshold), its probability `confidence`, and `low_confidence`."""
        ...


ReasonLoader = Callable[[], ReasonReader]
"""Loads the classifier when a batch has reasons to infer; raises LookupError saying why
there is none."""


def infer_reasons(contacts: pa.Table, load_reasons: ReasonLoader | None, folder: Path) -> pa.Table:
    """Fill the reason of every contact that has text and no reason from the classifier's
    answer, marked `reason_inferred` with its `reason_confidence`; given reasons stay as
    they are (not inferred, no confidence). Contacts with neither are left for the contract
    check to name.

    Args:
        contacts: The typed contacts table, with every column of the contract.
        load_reasons: Loads the classifier; None when there is none.
        folder: The batch's folder, named in a rejection.

    Raises:
        ContractError: Reasons are missing and no classifier can be loaded, or its answers
            break the contract.
    """
    schema = CONTRACT["contacts"]
    missing = pc.and_(pc.is_null(contacts.column("reason")), pc.is_valid(contacts.column("text")))
    inferred = np.asarray(pc.fill_null(missing, False).to_numpy(zero_copy_only=False), dtype=bool)
    if not inferred.any():
        return contacts
    try:
        if load_reasons is None:
            raise LookupError("none was given")
        reader = load_reasons()
    except LookupError as error:
        rule = (
            f"have no reason, and no contact-reason classifier can infer it from their text "
            f"({error}): train one with `{TRAIN_REASONS}`"
        )
        found = violation(schema.name, contacts, schema.key, "reason", rule, pa.array(inferred))
        raise ContractError(ValidationReport(folder=str(folder), violations=[found])) from None
    texts = contacts.column("text").filter(pa.array(inferred)).to_pylist()
    answers = reader.classify(texts)
    reasons = np.asarray(contacts.column("reason").to_pylist(), dtype=object)
    reasons[inferred] = answers["reason"].to_numpy(dtype=object)
    confidence = np.full(contacts.num_rows, np.nan)
    confidence[inferred] = answers["confidence"].to_numpy(dtype=np.float64)
    flags = np.asarray(contacts.column("reason_inferred").to_numpy(zero_copy_only=False))
    low = np.asarray(contacts.column("reason_low_confidence").to_numpy(zero_copy_only=False))
    low = low.astype(bool)
    low[inferred] = answers["low_confidence"].to_numpy(dtype=bool)
    columns = {
        "reason": pa.array(reasons, pa.string()),
        "reason_inferred": pa.array(flags.astype(bool) | inferred),
        "reason_confidence": pa.array(confidence, pa.float64(), mask=np.isnan(confidence)),
        "reason_low_confidence": pa.array(low),
    }
    for name, values in columns.items():
        index = contacts.schema.get_field_index(name)
        contacts = contacts.set_column(index, contacts.schema.field(index), values)
    found = [v for v in check_columns(schema, contacts) if v.column in columns]
    if found:
        raise ContractError(ValidationReport(folder=str(folder), violations=found))
    unsure = int(answers["low_confidence"].sum())
    log.info("inferred %d contact reasons from text (%d low-confidence)", len(texts), unsure)
    return contacts


INFERRED_COLUMNS = ("reason", "reason_inferred", "reason_confidence", "reason_low_confidence")


def keep_inferred(current: pa.Table | None, contacts: pa.Table) -> pa.Table:
    """Re-sent contacts (an update of a contact the current data hold) whose reason was
    inferred keep that reason, confidence and flag: the answer belongs to the classifier
    version that gave it, and a newer champion must not rewrite what earlier features
    read. Only the contacts that come without a reason are filled."""
    if current is None or current.num_rows == 0 or contacts.num_rows == 0:
        return contacts
    key = CONTRACT["contacts"].key
    keys = contacts.select(list(key)).to_pandas()
    stored = current.select([*key, *INFERRED_COLUMNS]).to_pandas()
    stored = stored[stored["reason_inferred"].astype(bool)]
    if stored.empty:
        return contacts
    found = keys.merge(stored, on=list(key), how="left")
    reason = pd.Series(contacts.column("reason").to_pylist(), dtype=object)
    take = (reason.isna() & found["reason_inferred"].eq(True)).to_numpy()
    if not take.any():
        return contacts
    for name in INFERRED_COLUMNS:
        index = contacts.schema.get_field_index(name)
        field = contacts.schema.field(index)
        values = contacts.column(name).to_pandas().astype(object).to_numpy()
        values[take] = found[name].astype(object).to_numpy()[take]
        contacts = contacts.set_column(index, field, pa.array(values, field.type, from_pandas=True))
    return contacts


def stage(source: Source, raw_root: Path) -> Path:
    """Write a source into a new staging folder under `raw_root`."""
    staging = versioned.staging_dir(raw_root)
    try:
        source.write(staging)
    except BaseException:
        versioned.discard(staging)
        raise
    return staging


def check(staging: Path, load_reasons: ReasonLoader | None = None) -> dict[str, pa.Table]:
    """Validate a staged folder, infer the contacts' missing reasons (`infer_reasons`) and
    rewrite as typed Parquet every table that came as CSV or without all its columns.
    Raises ContractError (after discarding the staging folder) on any violation."""
    try:
        tables, report = load_folder(staging)
        if report.ok and "contacts" in tables:
            tables["contacts"] = infer_reasons(tables["contacts"], load_reasons, staging)
    except BaseException:
        # Validation reports bad content as violations; anything else it raises must still
        # not leave a staging folder behind.
        versioned.discard(staging)
        raise
    if not report.ok:
        versioned.discard(staging)
        raise ContractError(report)
    for name, table in tables.items():
        csv = staging / f"{name}.csv"
        parquet = staging / f"{name}.parquet"
        if (
            csv.exists()
            or name == "contacts"
            or pq.read_schema(parquet).names != table.column_names
        ):
            pq.write_table(table, parquet)
            csv.unlink(missing_ok=True)
    return tables


def latest_raw(raw_root: Path) -> Path:
    """The current published raw folder; raises when nothing was ingested yet."""
    folder = versioned.current(raw_root)
    if folder is None:
        raise FileNotFoundError(f"no raw data under {raw_root}: run `aftersale ingest` first")
    return folder


class BatchError(ValueError):
    """A day's batch does not follow from the current raw data; nothing was published."""


@dataclass(frozen=True)
class Appended:
    """The outcome of appending a day's batch.

    Attributes:
        version: The current raw folder afterwards.
        day: The batch's day.
        rows: Rows in the batch.
        changed: False when the batch replayed a day already ingested (nothing published).
    """

    version: Path
    day: date
    rows: int
    changed: bool


def day_manifest(folder: Path) -> Manifest | None:
    """The manifest of a folder holding one day's batch, or None for any other folder.

    Raises:
        BatchError: The folder's `_batch.json` cannot be read.
    """
    try:
        manifest = read_manifest(folder)
    except ValueError as exc:
        raise BatchError(str(exc)) from None
    return manifest if manifest is not None and manifest.kind == "day" else None


def record_history(staging: Path) -> None:
    """Turn a staged history's manifest into the version's metadata: the last day it holds,
    from which day batches continue."""
    path = staging / BATCH_FILE
    manifest = read_manifest(staging) if path.is_file() else None
    path.unlink(missing_ok=True)
    if manifest is not None and manifest.kind == "history":
        versioned.write_metadata(staging, {"through": manifest.day.isoformat(), "days": {}})


def append_day(
    batch_dir: Path, raw_root: Path, load_reasons: ReasonLoader | None = None
) -> Appended:
    """Validate one day's batch against the contract and the current raw data, infer its
    contacts' missing reasons (`infer_reasons`), then publish the current data with the
    batch upserted as a new version.

    Replaying a day already ingested, with the same content, changes nothing.

    Raises:
        ContractError: The batch, or the data with it applied, breaks the contract
            (unreadable values, unknown references, duplicate keys, time orders, reasons
            missing with no text or no classifier to infer them).
        BatchError: The batch does not follow from the current data: no current data, a
            day not after the current end (unless an exact replay) or one that skips days,
            re-sent rows that change more than their updates, rows not of its day.
    """
    manifest = day_manifest(batch_dir)
    if manifest is None:
        raise BatchError(f"{batch_dir} is not a day's batch: its {BATCH_FILE} names no day")
    day = manifest.day
    current = versioned.current(raw_root)
    if current is None:
        raise BatchError(f"no raw data under {raw_root} to append {day} to: ingest a history")
    batch = _read_batch(batch_dir)
    record = versioned.metadata(current)
    days: dict[str, str] = record.get("days", {})
    digest = fingerprint(batch)
    current_tables = read_validated(current)
    through = _through(record, current_tables)
    if day <= through:
        if days.get(day.isoformat()) == digest:
            return Appended(current, day, _rows(batch), changed=False)
        again = " and differs from the batch ingested for it" if day.isoformat() in days else ""
        raise BatchError(f"day {day} is not after the current end {through}{again}")
    if "through" in record and day > through + timedelta(days=1):
        missing = through + timedelta(days=1)
        raise BatchError(f"day {day} skips {missing}: the current data end on {through}")
    if "contacts" in batch:
        kept = keep_inferred(current_tables.get("contacts"), batch["contacts"])
        batch["contacts"] = infer_reasons(kept, load_reasons, batch_dir)
    combined = upsert(current_tables, batch)
    found = batch_violations(current_tables, batch, day, combined)
    if found:
        raise BatchError(_listed(f"day {day} does not follow from the current data", found))
    # The current data passed every rule when published: only what the day touches can break.
    found, _ = check_upserted(combined, batch)
    if found:
        raise ContractError(ValidationReport(folder=str(batch_dir), violations=found))
    staging = versioned.staging_dir(raw_root)
    try:
        for name, table in combined.items():
            pq.write_table(table.cast(CONTRACT[name].arrow_schema), staging / f"{name}.parquet")
        days = {**days, day.isoformat(): digest}
        record = {"through": day.isoformat(), "days": days, "appended_to": current.name}
        versioned.write_metadata(staging, record)
        version = versioned.publish(staging)
    except BaseException:
        versioned.discard(staging)
        raise
    return Appended(version, day, _rows(batch), changed=True)


def ingested_through(raw_root: Path) -> date | None:
    """The last day the current raw data hold (a day batch after it appends); None before
    anything was ingested."""
    current = versioned.current(raw_root)
    if current is None:
        return None
    record = versioned.metadata(current)
    return _through(record, None if "through" in record else read_validated(current))


def _through(record: dict, tables: dict[str, pa.Table] | None) -> date:
    """The day a version's metadata says its data end on, else the day of the latest thing
    that happened in its tables (a whole source ingested without a manifest)."""
    if "through" in record:
        return date.fromisoformat(record["through"])
    return watermark(tables, happened=True).date()


def _read_batch(folder: Path) -> dict[str, pa.Table]:
    """The batch's typed tables; a table absent from the folder has no rows that day.

    Raises:
        ContractError: A table cannot be read in the contract's shape.
    """
    tables, found = {}, []
    for name, schema in CONTRACT.items():
        path, problem = find_table_file(folder, name)
        if problem is not None:
            found.append(problem)
            continue
        if path is None:
            continue
        result = read_table(path, schema)
        found.extend(result.violations)
        if result.table is not None:
            tables[name] = result.table
    if found:
        raise ContractError(ValidationReport(folder=str(folder), violations=found))
    return tables


def _rows(tables: dict[str, pa.Table]) -> int:
    return sum(table.num_rows for table in tables.values())


def _listed(headline: str, found: list[Violation]) -> str:
    lines = "\n".join(f"  {v}" for v in found)
    return f"{headline}:\n{lines}"
