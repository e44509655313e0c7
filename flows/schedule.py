"""The deployments `aftersale schedule` puts on a Prefect server: `nightly/nightly` at
`Settings.nightly_at` every day and `retrain/weekly-retrain` at `Settings.retrain_at`, both in
`Settings.schedule_timezone`.

Either this process serves them (`prefect.serve`: it polls the server and runs each due run
in a subprocess), or they are registered with a work pool and a `prefect worker` runs them
from this project's folder. Schedules need a server that stays up, so both ask for
`PREFECT_API_URL`; a temporary API would vanish with the process and its schedules with it.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from prefect.schedules import Cron

from aftersale.settings import Settings
from flows.nightly import nightly, retrain

WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
NIGHTLY = "nightly"
WEEKLY_RETRAIN = "weekly-retrain"
# The project's root: a work pool's worker runs the flows from here.
PROJECT = Path(__file__).resolve().parents[1]


class NoServerError(RuntimeError):
    """No Prefect server is configured for the schedules."""


def cron_of(at: str) -> str:
    """A cron expression for a local time, "HH:MM" (daily) or "ddd HH:MM" (weekly)."""
    day, _, clock = at.rpartition(" ")
    hour, minute = (int(part) for part in clock.split(":"))
    weekday = "*" if not day else str(WEEKDAYS.index(day))
    return f"{minute} {hour} * * {weekday}"


def schedules(settings: Settings) -> dict[str, Cron]:
    """Each deployment's schedule in the configured time zone."""
    zone = settings.schedule_timezone
    return {
        NIGHTLY: Cron(cron_of(settings.nightly_at), timezone=zone),
        WEEKLY_RETRAIN: Cron(cron_of(settings.retrain_at), timezone=zone),
    }


def api_url() -> str:
    """The configured Prefect server.

    Raises:
        NoServerError: `PREFECT_API_URL` is not set.
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise NoServerError(
            "schedules need a Prefect server that stays up: start one (`prefect server "
            "start`) and set PREFECT_API_URL, e.g. http://127.0.0.1:4200/api"
        )
    return url


def serve(settings: Settings) -> None:
    """Serve both deployments from this process until it is stopped (SIGINT or SIGTERM).

    Raises:
        NoServerError: `PREFECT_API_URL` is not set.
    """
    from prefect import serve as prefect_serve

    api_url()
    when = schedules(settings)
    prefect_serve(
        nightly.to_deployment(
            name=NIGHTLY,
            schedule=when[NIGHTLY],
            description="Ingest every day batch waiting in the inbox, one night per day.",
        ),
        retrain.to_deployment(
            name=WEEKLY_RETRAIN,
            schedule=when[WEEKLY_RETRAIN],
            description="Train every model through the champion gate and score again.",
        ),
        print_starting_message=False,
    )


def register(settings: Settings, work_pool: str) -> dict[str, UUID]:
    """Register both deployments with a work pool, whose workers run them from the project's
    folder on this data folder; returns each deployment's id.

    Raises:
        NoServerError: `PREFECT_API_URL` is not set.
    """
    api_url()
    when = schedules(settings)
    ids = {}
    for job, name in ((nightly, NIGHTLY), (retrain, WEEKLY_RETRAIN)):
        entrypoint = (
            f"{Path(__file__).with_name('nightly.py').relative_to(PROJECT)}:{job.fn.__name__}"
        )
        stored = job.from_source(source=str(PROJECT), entrypoint=entrypoint)
        ids[name] = stored.deploy(
            name=name,
            work_pool_name=work_pool,
            schedule=when[name],
            build=False,
            push=False,
            print_next_steps=False,
            ignore_warnings=True,
            # The worker runs in its own folder: the data folder is named absolutely.
            job_variables={"env": {"AFTERSALE_DATA_DIR": str(settings.data_dir.resolve())}},
        )
    return ids
