"""Flows `nightly` and `retrain`: what the schedules run (`aftersale schedule`).

`nightly` catches up. Day batches arrive in the inbox (`Settings.inbox`), one folder per day
with its `_batch.json`, as `aftersale simulate --day` or a shop's export writes them. Every
day waiting there after the current raw data's last day runs through `pipeline`, one night per
day, in day order. A day already ingested is never run again: a run for a day that succeeded
does nothing, and a run two days late runs both days in order. Days after a missing one wait,
and the run fails naming the missing day once the days before it are done.

`retrain` trains every model through the champion gate on the current data, then scores the
day's queue again with the champions that won. A failure puts back the champions and queue of
before, as a failed night does.

Both hold the data folder's lock (`flows.lock`) while they run, so a night, a retrain or two
triggered runs never write the same versions at once: the second waits for the first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from prefect import flow

from aftersale.console import report_stage
from aftersale.settings import get_settings
from features.ingest import BatchError, day_manifest, ingested_through
from flows.lock import data_lock
from flows.pipeline import Night, clear_retrained, pipeline, remember, standing
from flows.score_batch import score_batch
from flows.train import train

log = logging.getLogger(__name__)


class InboxError(BatchError):
    """The inbox cannot be caught up: a day is missing, or two folders hold the same day."""


@dataclass
class CatchUp:
    """What one nightly run did.

    Attributes:
        through_before: The current data's last day when the run started.
        nights: One pipeline result per day run, in day order.
        days: The days run.
    """

    through_before: date | None
    nights: list[Night] = field(default_factory=list)
    days: list[date] = field(default_factory=list)


def waiting_days(inbox: Path, after: date | None) -> dict[date, Path]:
    """The day batches in `inbox` for days after `after`, by day (folders that are not a
    day's batch are left alone).

    Raises:
        InboxError: Two folders hold the same day.
    """
    found: dict[date, Path] = {}
    if not inbox.is_dir():
        return found
    for folder in sorted(p for p in inbox.iterdir() if p.is_dir()):
        manifest = day_manifest(folder)
        if manifest is None or (after is not None and manifest.day <= after):
            continue
        if manifest.day in found:
            raise InboxError(
                f"{found[manifest.day].name} and {folder.name} in {inbox} both hold day "
                f"{manifest.day}: remove one"
            )
        found[manifest.day] = folder
    return dict(sorted(found.items()))


@flow(name="nightly")
def nightly(inbox: Path | None = None, through: date | None = None) -> CatchUp:
    """Run the pipeline on every day batch waiting in the inbox after the current data's
    last day, in day order (up to `through` when given).

    Raises:
        FileNotFoundError: Nothing was ingested yet: a history comes first.
        InboxError: A day is missing before later waiting days (those before it ran).
        PipelineError: A night failed; what was current before it serves on, and the days
            after it wait.
    """
    settings = get_settings()
    inbox = inbox if inbox is not None else settings.inbox
    with data_lock(settings.data_dir):
        last = ingested_through(settings.raw_root)
        if last is None:
            raise FileNotFoundError(
                f"no raw data under {settings.raw_root}: ingest a history first "
                "(`aftersale ingest --source folder --path HISTORY`)"
            )
        done = CatchUp(through_before=last)
        waiting = {
            day: folder
            for day, folder in waiting_days(inbox, last).items()
            if through is None or day <= through
        }
        if not waiting:
            log.info("nothing to run: the data end on %s and no later day waits in %s", last, inbox)
            with report_stage("nightly") as shown:
                shown.note = f"nothing to run: the data end on {last}"
            return done
        expected = last + timedelta(days=1)
        for day, folder in waiting.items():
            if day != expected:
                raise InboxError(
                    f"day {expected} is missing from {inbox}; "
                    f"{', '.join(str(d) for d in waiting if d >= day)} wait for it"
                )
            log.info("night of %s from %s", day, folder)
            done.nights.append(pipeline(source="folder", path=folder))
            done.days.append(day)
            expected = day + timedelta(days=1)
        return done


@flow(name="retrain")
def retrain() -> Night | None:
    """Train every model through the champion gate on the current data and score the queue
    again with the champions that won.

    Raises:
        PipelineError: Training or scoring failed; the champions and queue of before serve.
    """
    from features import versioned
    from features.ingest import latest_raw
    from models import MODELS

    settings = get_settings()
    with data_lock(settings.data_dir):
        raw = latest_raw(settings.raw_root)
        night = Night(
            raw=raw,
            features=versioned.current(settings.features_dir),
            due=dict.fromkeys(MODELS, "weekly retrain"),
        )
        with standing(settings, remember(settings), "train") as stage:
            night.models = train(models=list(MODELS), skip_untrainable=True)
            stage.name = "score"
            night.queue = score_batch()
        clear_retrained([summary.name for summary in night.models])
        return night
