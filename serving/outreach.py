"""Answers of `/v1/outreach/queue` from the queue `score_batch` wrote, held in memory."""

from __future__ import annotations

import threading
from datetime import datetime

import pandas as pd

from features.instants import utc_instant
from serving import schemas
from serving.queue import LoadedQueue


class QueueUnavailableError(RuntimeError):
    """No queue answers the request; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_built: dict[tuple[int, int], list[schemas.OutreachAction]] = {}
_lock = threading.Lock()


def actions_of(queue: LoadedQueue) -> list[schemas.OutreachAction]:
    """The queue's actions to send, validated, built once per queue file. Held-out actions
    (recorded so effects stay measurable) are not handed to schedulers; their ranks stay
    gaps."""
    found = _built.get(queue.stamp)
    if found is not None:
        return found
    with _lock:
        if queue.stamp not in _built:
            frame = queue.frame
            if "holdout" in frame:
                frame = frame[~frame["holdout"].astype(bool)]
            frame = frame.astype(object).where(frame.notna(), None)
            actions = [schemas.OutreachAction(**row) for row in frame.to_dict("records")]
            _built.clear()
            _built[queue.stamp] = actions
        return _built[queue.stamp]


def select_actions(
    queue: LoadedQueue | None,
    as_of: datetime | None,
    limit: int,
    channel: str | None,
    region: str | None,
) -> schemas.OutreachResponse:
    """The top `limit` actions of the queue that match the filters.

    Raises:
        QueueUnavailableError: No queue yet (503), none for `as_of`'s day (404), or a region
            no customer has (404: the request is well formed, the region is not found).
    """
    if queue is None:
        raise QueueUnavailableError(503, "no outreach queue yet: run `aftersale score` first")
    day = queue.meta["queue_date"]
    queue_as_of = pd.Timestamp(queue.meta["as_of"])
    if as_of is not None:
        asked = utc_instant(as_of)
        if asked.strftime("%Y-%m-%d") != day:
            raise QueueUnavailableError(
                404, f"as_of: no outreach queue for {asked:%Y-%m-%d}; the queue is for {day}"
            )
    known_regions = queue.meta.get("regions", [])
    if region is not None and region not in known_regions:
        raise QueueUnavailableError(
            404, f"region: unknown region {region!r}; known: {known_regions}"
        )
    chosen = [
        a
        for a in actions_of(queue)
        if (channel is None or a.channel == channel) and (region is None or a.region == region)
    ]
    return schemas.OutreachResponse.model_construct(
        queue_date=day,
        as_of=queue_as_of.to_pydatetime(),
        total=len(chosen),
        actions=chosen[:limit],
    )
