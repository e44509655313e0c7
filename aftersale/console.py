"""The console of the `aftersale` command: where log records go, and one line per stage.

The console carries our own messages, tables and warnings. What the libraries log (MLflow,
Prefect, Feast, LightGBM, SQLAlchemy …) and the warnings raised inside them go to a log file
under the data folder, which a long job names once; `--verbose` streams every record to the
console as well.

A long job opens a `StageDisplay`; the flows report their stages with `report_stage`, which
does nothing when no display is open (a flow run by a deployment, a test). On a terminal each
stage is a live line (spinner, name, rows where known, seconds so far); elsewhere (CI, a pipe)
each finished stage prints one plain line.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn
from rich.table import Column
from rich.text import Text

from aftersale.settings import Settings

log = logging.getLogger(__name__)

# Top-level packages of this project: their records and warnings are ours.
OWN_PACKAGES = frozenset(
    {"aftersale", "benchmarks", "features", "flows", "models", "serving", "training"}
)
# Libraries whose INFO records are worth keeping in the log file (MLflow: database set-up,
# what each logged model holds); every other library is filed from WARNING (Feast's INFO is
# mostly registry cache refreshes; Prefect sets its own levels from PREFECT_LOGGING_LEVEL).
INFO_LIBRARIES = ("mlflow",)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOG_FILE_NAME = "aftersale.log"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Environment read by the libraries when they are imported or used. Defaults only: a value
# the user has set is kept.
LIBRARY_ENVIRONMENT = {
    # MLflow would give its loggers their own stderr handler; let them reach the log file.
    "MLFLOW_CONFIGURE_LOGGING": "false",
    # Downloading a logged model's artifacts (loading it, validating its input example)
    # draws a progress bar per model.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # Flow and task runs log at INFO: the log file keeps them; the console filters.
    "PREFECT_LOGGING_LEVEL": "INFO",
}
_WARNING_PATH = re.compile(r"^(?P<path>.+?\.py):\d+: ")
# Handlers this module installed on the root logger, replaced on the next call.
_installed: list[logging.Handler] = []
# The display `report_stage` reports to.
_open_display: StageDisplay | None = None


def quiet_prefect() -> None:
    """Environment defaults for Prefect before it is imported: the temporary API would
    otherwise try to send usage telemetry (an error on a machine with no way out) and
    Prefect's client announce its own; the temporary server starts in about 20 s on an idle
    machine, and a busy one needs more. Values already set are kept."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def log_path(settings: Settings) -> Path:
    """The log file of every command: `<data_dir>/logs/aftersale.log`."""
    return settings.data_dir / "logs" / LOG_FILE_NAME


class LogFile(logging.handlers.RotatingFileHandler):
    """A rotating log file created with its folder at the first record, so that a command
    nothing logs for leaves no file behind."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, maxBytes=20 * 1024 * 1024, backupCount=3, delay=True)

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:
            Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        super().emit(record)


def is_own(record: logging.LogRecord) -> bool:
    """Whether a record comes from this project: its logger, or a warning raised (as its
    stack level names it) in this project's code rather than inside a library."""
    if record.name == "py.warnings":
        found = _WARNING_PATH.match(record.getMessage())
        if found is None:
            return False
        try:
            relative = Path(found["path"]).resolve().relative_to(PROJECT_ROOT)
        except ValueError:
            return False
        return relative.parts[0] in OWN_PACKAGES
    return record.name.partition(".")[0] in OWN_PACKAGES


def route_logs(path: Path, *, verbose: bool, console: Console) -> None:
    """Send every log record and warning to `path`, and ours (all, when verbose) to `console`.

    Call it before MLflow and Prefect are imported: they read `LIBRARY_ENVIRONMENT` then, and
    Prefect leaves the root logger's handlers alone when it finds ours there. Calling it again
    replaces the handlers of the previous call.

    Args:
        path: The log file (created at its first record).
        verbose: Also stream every library's records to the console.
        console: Where records for the console go (it follows `sys.stderr`, so records print
            above a live display).
    """
    for name, value in LIBRARY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    root = logging.getLogger()
    for handler in _installed:
        root.removeHandler(handler)
        handler.close()
    log_file = LogFile(path)
    log_file.setFormatter(logging.Formatter(LOG_FORMAT))
    shown = RichHandler(
        console=console,
        level=logging.INFO if verbose else logging.WARNING,
        show_time=verbose,
        show_path=False,
        markup=False,
    )
    shown.setFormatter(logging.Formatter("%(name)s: %(message)s" if verbose else "%(message)s"))
    if not verbose:
        shown.addFilter(is_own)
    _installed[:] = [log_file, shown]
    for handler in _installed:
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in (*sorted(OWN_PACKAGES), *INFO_LIBRARIES):
        logging.getLogger(name).setLevel(logging.INFO)
    logging.captureWarnings(True)


@dataclass
class Stage:
    """A stage of a long job, as its display line shows it.

    Attributes:
        name: What the stage does ("ingest", "train churn").
        rows: How many rows it handled, where known.
        unit: What `rows` counts.
        note: What is shown instead where no rows are counted ("skipped: …").
    """

    name: str
    rows: int | None = None
    unit: str = "rows"
    note: str = ""

    @property
    def count(self) -> str:
        """The rows with their unit, else the note (nothing when neither is known)."""
        return self.note if self.rows is None else f"{self.rows:,} {self.unit}"


class StatusColumn(SpinnerColumn):
    """A spinner while the stage runs, then a tick, or a cross when it failed."""

    def render(self, task: Task) -> Text:
        if task.fields.get("failed"):
            return Text("✗", style="red")
        if task.finished:
            return Text("✓", style="green")
        return super().render(task)


class SecondsColumn(ProgressColumn):
    """Seconds since the stage started (its duration once finished)."""

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        return Text(f"{elapsed or 0.0:.1f} s", style="progress.elapsed")


@dataclass
class _Running:
    """A stage on the display: its record, its live line (on a terminal) and start time."""

    stage: Stage
    task: TaskID | None
    started: float


class StageDisplay:
    """One line per stage of a long job: name, rows where known, elapsed seconds.

    On a terminal the lines are live; elsewhere each finished stage prints one plain line,
    so that a log of the output reads top to bottom.

    Args:
        console: The console the lines go to.
        log_file: The log file, named once when the display opens.
        opening: A stage that runs from the display's opening until the first reported stage
            starts (the wait for libraries and Prefect's temporary API before a flow's first
            step); None for none. A job that stops before its first stage drops this line:
            its error says what happened.
    """

    NAME_WIDTH = 28
    COUNT_WIDTH = 24

    def __init__(
        self, console: Console, log_file: Path | None = None, opening: str | None = None
    ) -> None:
        self.console = console
        self.log_file = log_file
        self.opening = opening
        self.progress: Progress | None = None
        self._opening: _Running | None = None
        self._previous: StageDisplay | None = None
        # Every finished stage, in order: (name, seconds, failed).
        self.finished: list[tuple[str, float, bool]] = []

    def __enter__(self) -> StageDisplay:
        global _open_display
        if self.log_file is not None:
            self.console.print(f"[dim]log file: {self.log_file}[/dim]", highlight=False)
        if self.console.is_terminal:
            # Fixed widths: the columns do not shift as stages are added.
            self.progress = Progress(
                StatusColumn(),
                TextColumn("{task.description}", table_column=Column(min_width=self.NAME_WIDTH)),
                TextColumn(
                    "{task.fields[count]}",
                    justify="right",
                    table_column=Column(justify="right", min_width=self.COUNT_WIDTH),
                ),
                SecondsColumn(table_column=Column(justify="right", min_width=8)),
                console=self.console,
            )
            self.progress.start()
        if self.opening is not None:
            self._opening = self._begin(self.opening)
        self._previous, _open_display = _open_display, self
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        global _open_display
        _open_display = self._previous
        self._end_opening(stopped=error is not None)
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    @contextmanager
    def stage(self, name: str) -> Iterator[Stage]:
        """Show a stage while the block runs; the block may set its `rows`."""
        self._end_opening(stopped=False)
        running = self._begin(name)
        try:
            yield running.stage
        except BaseException:
            self._end(running, failed=True)
            raise
        self._end(running, failed=False)

    def _begin(self, name: str) -> _Running:
        task = None
        if self.progress is not None:
            task = self.progress.add_task(name, total=None, count="", failed=False)
        log.info("%s: started", name)
        return _Running(Stage(name), task, time.perf_counter())

    def _end_opening(self, *, stopped: bool) -> None:
        if self._opening is None:
            return
        opening, self._opening = self._opening, None
        if not stopped:
            self._end(opening, failed=False)
            return
        log.info(
            "%s: stopped after %.1f s", opening.stage.name, time.perf_counter() - opening.started
        )
        if self.progress is not None and opening.task is not None:
            self.progress.remove_task(opening.task)

    def _end(self, running: _Running, *, failed: bool) -> None:
        stage, seconds = running.stage, time.perf_counter() - running.started
        outcome = "failed" if failed else "done"
        self.finished.append((stage.name, seconds, failed))
        count = f" ({stage.count})" if stage.count else ""
        log.info("%s: %s in %.1f s%s", stage.name, outcome, seconds, count)
        if self.progress is not None:
            self.progress.update(
                running.task, total=1, completed=1, count=stage.count, failed=failed
            )
        else:
            mark = "[red]✗[/red]" if failed else "[green]✓[/green]"
            self.console.print(
                f"{mark} {stage.name:<{self.NAME_WIDTH}} {stage.count:>{self.COUNT_WIDTH}} "
                f"{seconds:8.1f} s",
                highlight=False,
            )
        if failed and self.log_file is not None:
            self.console.print(f"[red]{stage.name} failed[/red]: see also {self.log_file}")


@contextmanager
def report_stage(name: str) -> Iterator[Stage]:
    """A stage of a long job, shown on the open `StageDisplay`; without one, only a record
    whose `rows` the block may still set."""
    if _open_display is None:
        yield Stage(name)
        return
    with _open_display.stage(name) as current:
        yield current
