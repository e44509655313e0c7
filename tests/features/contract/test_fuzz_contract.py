"""Bad input, generated: a valid simulated folder with one random malformation must end in
named contract errors and exit code 1 through `aftersale validate`, never in a traceback;
and ingest of such a folder leaves the published raw data as it was.

Some malformations are still valid data (numbers written as numeric text, a table emptied
that nothing references); those may pass, but never crash.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from aftersale.cli import app
from features import ingest, versioned
from features.contract.schema import CONTRACT
from features.sources.base import FolderSource

# Bounded and derandomized: the same examples on every run, in a few seconds.
FUZZ = settings(max_examples=30, deadline=None, derandomize=True)
TABLES = sorted(CONTRACT)
# What must appear in the output, or nothing when the malformed folder may still be valid.
Expected = list[str]
Malformation = Callable[[Path, st.DataObject], Expected]


@pytest.fixture(scope="module")
def valid_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small valid business for the whole module; each example copies it."""
    from features.sources.simulator import simulate

    out = tmp_path_factory.mktemp("valid") / "raw"
    simulate(out, customers=200, seed=1)
    shutil.rmtree(out / "_truth", ignore_errors=True)
    return out


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliRunner]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        yield CliRunner()


def read(folder: Path, name: str) -> pa.Table:
    return pq.read_table(folder / f"{name}.parquet")


def write(folder: Path, name: str, table: pa.Table) -> None:
    pq.write_table(table, folder / f"{name}.parquet")


def as_csv(folder: Path, name: str) -> Path:
    """Rewrite a table as CSV, as another system would deliver it."""
    path = folder / f"{name}.csv"
    pacsv.write_csv(read(folder, name), path)
    (folder / f"{name}.parquet").unlink()
    return path


def pick_column(data: st.DataObject, name: str) -> str:
    return data.draw(st.sampled_from(CONTRACT[name].column_names), label="column")


def drop_column(folder: Path, data: st.DataObject) -> Expected:
    name = data.draw(st.sampled_from(TABLES), label="table")
    column = pick_column(data, name)
    write(folder, name, read(folder, name).drop_columns([column]))
    return [f"{name}: missing columns: {column}"]


def rename_column(folder: Path, data: st.DataObject) -> Expected:
    name = data.draw(st.sampled_from(TABLES), label="table")
    table = read(folder, name)
    column = pick_column(data, name)
    # Another declared name makes two columns of one name.
    new = data.draw(st.sampled_from(["renamed", f" {column}x", *table.column_names]))
    if new == column:
        return []
    names = [new if c == column else c for c in table.column_names]
    table = table.rename_columns(names)
    if data.draw(st.booleans(), label="csv"):
        pacsv.write_csv(table, folder / f"{name}.csv")
        (folder / f"{name}.parquet").unlink()
    else:
        write(folder, name, table)
    return [name]


RETYPES: dict[str, Callable[[int], pa.Array]] = {
    "words": lambda n: pa.array(["not a value"] * n),
    "numeric text": lambda n: pa.array(["12"] * n),
    "huge digits": lambda n: pa.array(["99999999999999999999"] * n),
    "epoch seconds": lambda n: pa.array([1_700_000_000] * n, pa.int64()),
    "big unsigned": lambda n: pa.array([2**63 + 5] * n, pa.uint64()),
    "huge floats": lambda n: pa.array([1e300] * n),
    "lists": lambda n: pa.array([[1, 2]] * n),
    "binary not utf-8": lambda n: pa.array([b"\xff\xfe"] * n, pa.binary()),
    "nanoseconds": lambda n: pa.array([1_700_000_000_123_456_789] * n, pa.timestamp("ns")),
    "far milliseconds": lambda n: pa.array([2**62] * n, pa.timestamp("ms", tz="UTC")),
    "all null": lambda n: pa.nulls(n),
}


def retype_column(folder: Path, data: st.DataObject) -> Expected:
    name = data.draw(st.sampled_from(TABLES), label="table")
    table = read(folder, name)
    column = pick_column(data, name)
    how = data.draw(st.sampled_from(sorted(RETYPES)), label="retype")
    at = table.column_names.index(column)
    table = table.set_column(at, column, RETYPES[how](table.num_rows))
    if how == "far milliseconds":
        pq.write_table(table, folder / f"{name}.parquet", version="2.6", coerce_timestamps=None)
    elif how == "nanoseconds":
        pq.write_table(table, folder / f"{name}.parquet", version="2.6")
    else:
        write(folder, name, table)
    kind = CONTRACT[name].column(column).kind
    # Values no contract type can take; words only where the column is not text.
    unreadable = how in ("lists", "binary not utf-8") or (how == "words" and kind != "string")
    return [f"{name}.{column}"] if unreadable and table.num_rows else []


def empty_table(folder: Path, data: st.DataObject) -> Expected:
    name = data.draw(st.sampled_from(TABLES), label="table")
    how = data.draw(st.sampled_from(["no rows", "empty file", "header only"]), label="how")
    if how == "no rows":
        write(folder, name, read(folder, name).slice(0, 0))
        return []
    path = as_csv(folder, name)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"" if how == "empty file" else lines[0])
    return [f"{name}: {name}.csv is empty"] if how == "empty file" else []


def bad_csv(folder: Path, data: st.DataObject) -> Expected:
    name = data.draw(st.sampled_from(TABLES), label="table")
    path = as_csv(folder, name)
    text = path.read_text()
    how = data.draw(st.sampled_from([";", "\t", "|", ":", "utf-16", "cp1252"]), label="how")
    if how == "utf-16":
        path.write_bytes(text.encode("utf-16"))
        return [f"{name}: {name}.csv is not UTF-8 text"]
    if how == "cp1252":
        # A character outside ASCII in the first data row's first field.
        header, _, rest = text.partition("\n")
        if not rest:
            return []
        path.write_bytes(f"{header}\n{rest[:1]}Zürich-{rest[1:]}".encode("cp1252"))
        return [f"{name}: {name}.csv is not UTF-8 text"]
    path.write_text(text.replace(",", how))
    return [name]


def bad_keys(folder: Path, data: st.DataObject) -> Expected:
    name = data.draw(st.sampled_from(TABLES), label="table")
    table = read(folder, name)
    if not table.num_rows:
        return []
    row = data.draw(st.integers(0, table.num_rows - 1), label="row")
    if data.draw(st.booleans(), label="duplicate"):
        write(folder, name, pa.concat_tables([table, table.slice(row, 1)]))
        return [f"{name}.{'/'.join(CONTRACT[name].key)}: 2 rows have a duplicated key"]
    column = data.draw(st.sampled_from(CONTRACT[name].key), label="key")
    values = table.column(column).to_pylist()
    values[row] = None
    write(folder, name, table.set_column(table.column_names.index(column), column, [values]))
    return [f"{name}.{column}: 1 row is missing a value"]


def unknown_reference(folder: Path, data: st.DataObject) -> Expected:
    name = data.draw(st.sampled_from([n for n in TABLES if CONTRACT[n].references]), label="table")
    ref = data.draw(st.sampled_from(CONTRACT[name].references), label="reference")
    table = read(folder, name)
    valid = pc.is_valid(table.column(ref.column))
    if not pc.any(valid).as_py():
        return []
    row = pc.index(valid, True).as_py()
    values = table.column(ref.column).to_pylist()
    values[row] = "no-such-row"
    write(
        folder, name, table.set_column(table.column_names.index(ref.column), ref.column, [values])
    )
    return [f"{name}.{ref.column}: 1 row references unknown {ref.table}"]


def naive_timestamps(folder: Path, data: st.DataObject) -> Expected:
    timed = [(n, c.name) for n in TABLES for c in CONTRACT[n].columns if c.kind == "timestamp"]
    name, column = data.draw(st.sampled_from(timed), label="column")
    table = read(folder, name)
    text = pc.strftime(table.column(column), format="%Y-%m-%dT%H:%M:%S").to_pylist()
    aware = pc.strftime(table.column(column), format="%Y-%m-%dT%H:%M:%SZ").to_pylist()
    present = [i for i, value in enumerate(text) if value is not None]
    if len(present) < 3:
        return []
    # One naive value among aware ones: the instants of the column are ambiguous.
    values = [aware[i] if i != present[0] else text[i] for i in range(len(text))]
    write(folder, name, table.set_column(table.column_names.index(column), column, [values]))
    return [f"{name}.{column}: 1 row is timezone-naive"]


MALFORMATIONS: list[Malformation] = [
    drop_column,
    rename_column,
    retype_column,
    empty_table,
    bad_csv,
    bad_keys,
    unknown_reference,
    naive_timestamps,
]


def malformed_copy(valid_dir: Path, folder: Path, data: st.DataObject) -> Expected:
    shutil.copytree(valid_dir, folder)
    malform = data.draw(st.sampled_from(MALFORMATIONS), label="malformation")
    return malform(folder, data)


def assert_named(result, expected: Expected) -> None:
    """No traceback, only our exits; and when the folder must fail, code 1 naming it."""
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code in (0, 1), result.output
    if expected:
        assert result.exit_code == 1, result.output
        for fragment in expected:
            assert fragment in result.output, result.output


@FUZZ
@given(data=st.data())
def test_validate_names_every_malformation(
    valid_dir: Path, runner: CliRunner, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "raw"
        expected = malformed_copy(valid_dir, folder, data)
        result = runner.invoke(app, ["validate", str(folder)])
        assert_named(result, expected)


@pytest.fixture(scope="module")
def published(valid_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw root whose current version is the valid folder."""
    raw_root = tmp_path_factory.mktemp("data") / "raw"
    staging = ingest.stage(FolderSource(valid_dir), raw_root)
    ingest.check(staging)
    versioned.publish(staging)
    return raw_root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@FUZZ
@given(data=st.data())
def test_rejected_ingest_keeps_the_current_raw_data(
    valid_dir: Path, published: Path, data: st.DataObject
) -> None:
    current = versioned.current(published)
    before = snapshot(current)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "raw"
        expected = malformed_copy(valid_dir, folder, data)
        staging = ingest.stage(FolderSource(folder), published)
        rejection = ""
        try:
            ingest.check(staging)
        except ingest.ContractError as exc:
            rejection = str(exc)
        if rejection:
            assert all(fragment in rejection for fragment in expected), rejection
            assert not staging.exists()
        else:
            assert not expected, "a malformed folder passed the contract"
            versioned.discard(staging)
    assert versioned.current(published) == current
    assert snapshot(current) == before


@pytest.fixture(scope="module")
def ingested(valid_dir: Path, tmp_path_factory: pytest.TempPathFactory, prefect_harness):
    """A data folder whose current raw data the `aftersale ingest` command published from
    the valid folder; the command's runner is pointed at it."""
    folder = tmp_path_factory.mktemp("ingested")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AFTERSALE_DATA_DIR", str(folder))
        runner = CliRunner()
        result = runner.invoke(app, ["ingest", "--source", "folder", "--path", str(valid_dir)])
        assert result.exit_code == 0, result.output
        yield folder / "raw", runner


@settings(max_examples=8, deadline=None, derandomize=True)
@given(data=st.data())
def test_the_ingest_command_names_a_malformed_folder_and_keeps_the_current_data(
    valid_dir: Path, ingested, data: st.DataObject
) -> None:
    """The same malformations through `aftersale ingest` itself (its flow, its exit):
    a named rejection with exit 1, never a traceback, and the published data untouched."""
    raw_root, runner = ingested
    current = versioned.current(raw_root)
    before = snapshot(current)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "raw"
        expected = malformed_copy(valid_dir, folder, data)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AFTERSALE_DATA_DIR", str(raw_root.parent))
            result = runner.invoke(app, ["ingest", "--source", "folder", "--path", str(folder)])
    assert_named(result, expected)
    if result.exit_code == 1:
        assert "rejected" in result.output, result.output
        assert versioned.current(raw_root) == current
        assert snapshot(current) == before
