"""Rejected requests are logged as one line naming the fields, never their values.

BentoML logs a request whose body fails its schema as an error with the validation error's
traceback, and pydantic's message repeats every offending input: the body's values (order
ids, regions, whatever a client sent) would reach the log. Logs hold ids only, so a filter
on BentoML's logger turns each such record into one warning with the route, the status and
the locations of the fields at fault. Server errors keep their tracebacks.
"""

from __future__ import annotations

import logging

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError

# The logger BentoML's HTTP app writes failed requests to.
BENTOML_HTTP_LOGGER = "bentoml._internal.server.http_app"


def _client_status(error: BaseException | None) -> int | None:
    """The 4xx status a request error is answered with, or None for anything else."""
    if isinstance(error, ValidationError):
        return 400
    if isinstance(error, BentoMLException):
        status = int(error.error_code)
        return status if 400 <= status < 500 else None
    return None


def _fields(error: BaseException) -> str:
    if not isinstance(error, ValidationError):
        return type(error).__name__
    problems = [
        f"{'.'.join(str(part) for part in e['loc']) or 'body'} ({e['type']})"
        for e in error.errors(include_input=False, include_context=False, include_url=False)
    ]
    return ", ".join(problems)


class ClientErrorFilter(logging.Filter):
    """Rewrites a record of a rejected request: one warning line, no traceback, no input."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        status = _client_status(error)
        if status is None:
            return True
        where = record.getMessage().removeprefix("Exception on ").strip()
        record.msg = "rejected %s with %d: %s"
        record.args = (where, status, _fields(error))
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install() -> None:
    """Put the filter on BentoML's HTTP logger once per process."""
    logger = logging.getLogger(BENTOML_HTTP_LOGGER)
    if not any(isinstance(f, ClientErrorFilter) for f in logger.filters):
        logger.addFilter(ClientErrorFilter())
