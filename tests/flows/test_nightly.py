"""The nightly catch-up's rules without a night: which inbox folders wait, a missing day, two
folders of one day, the schedules' cron expressions, and the data folder's lock."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from features import versioned
from features.contract.batches import Manifest
from flows.lock import LOCK_FILE, data_lock
from flows.nightly import InboxError, nightly, waiting_days
from flows.schedule import cron_of, schedules

END = date(2025, 3, 31)


def day_folder(inbox: Path, name: str, day: date, kind: str = "day") -> Path:
    folder = inbox / name
    folder.mkdir(parents=True)
    Manifest(kind, day).write(folder)
    return folder


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """A data folder whose current raw version ends on END (its metadata only)."""
    folder = tmp_path / "data"
    staging = versioned.staging_dir(folder / "raw")
    versioned.write_metadata(staging, {"through": END.isoformat(), "days": {}})
    versioned.publish(staging)
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(folder))
    return folder


def test_the_days_after_the_data_end_wait_in_day_order(tmp_path) -> None:
    inbox = tmp_path / "inbox"
    later = day_folder(inbox, "a", END + timedelta(days=2))
    sooner = day_folder(inbox, "b", END + timedelta(days=1))
    day_folder(inbox, "c", END)
    day_folder(inbox, "d", END + timedelta(days=3), kind="history")
    (inbox / "notes").mkdir()
    found = waiting_days(inbox, END)
    assert found == {END + timedelta(days=1): sooner, END + timedelta(days=2): later}
    assert waiting_days(tmp_path / "nowhere", END) == {}


def test_two_folders_of_one_day_are_named(tmp_path) -> None:
    inbox = tmp_path / "inbox"
    day_folder(inbox, "first", END + timedelta(days=1))
    day_folder(inbox, "again", END + timedelta(days=1))
    with pytest.raises(InboxError, match=r"again and first .* both hold day 2025-04-01"):
        waiting_days(inbox, END)


def test_a_missing_day_stops_the_run_before_any_night(data_dir, tmp_path, prefect_harness) -> None:
    inbox = tmp_path / "inbox"
    day_folder(inbox, "later", END + timedelta(days=2))
    before = versioned.current(data_dir / "raw")
    with pytest.raises(InboxError, match=r"day 2025-04-01 is missing .* 2025-04-02 wait"):
        nightly(inbox=inbox)
    assert versioned.current(data_dir / "raw") == before


def test_nothing_waiting_runs_nothing(data_dir, tmp_path, prefect_harness) -> None:
    inbox = tmp_path / "inbox"
    day_folder(inbox, "done", END)
    done = nightly(inbox=inbox)
    assert done.through_before == END
    assert done.days == []
    assert done.nights == []


def test_no_history_is_named(tmp_path, monkeypatch, prefect_harness) -> None:
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="ingest a history first"):
        nightly(inbox=tmp_path)


def test_local_times_become_cron_expressions(monkeypatch) -> None:
    from aftersale.settings import get_settings

    assert cron_of("02:00") == "0 2 * * *"
    assert cron_of("23:45") == "45 23 * * *"
    assert cron_of("sun 04:00") == "0 4 * * 0"
    assert cron_of("sat 00:05") == "5 0 * * 6"
    monkeypatch.setenv("AFTERSALE_NIGHTLY_AT", "03:30")
    monkeypatch.setenv("AFTERSALE_RETRAIN_AT", "wed 05:15")
    monkeypatch.setenv("AFTERSALE_SCHEDULE_TIMEZONE", "Europe/Berlin")
    found = schedules(get_settings())
    assert [(c.cron, c.timezone) for c in found.values()] == [
        ("30 3 * * *", "Europe/Berlin"),
        ("15 5 * * 3", "Europe/Berlin"),
    ]


def test_the_lock_makes_a_second_process_wait_and_is_reentrant(tmp_path) -> None:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from flows.lock import data_lock\n"
        "with data_lock(Path(sys.argv[1])):\n"
        "    print(time.time(), flush=True)\n"
    )
    root = Path(__file__).resolve().parents[2]
    with data_lock(tmp_path):
        with data_lock(tmp_path):  # the same process takes it again
            pass
        started = time.time()
        waiting = subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            cwd=root,
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)
        assert waiting.poll() is None, "the second process did not wait for the lock"
        released = time.time()
    out, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 0
    assert float(out) >= released > started
    assert (tmp_path / LOCK_FILE).exists()
