"""Per-client rate limits on the public routes, with `limits`' moving windows.

The tracking page is public: a client (its address as the server sees it) may call its
routes (`/v1/recommend`, `/v1/tracking` and the demo page, together) at most
`AFTERSALE_TRACKING_RATE_LIMIT` times (default 120 per minute, in
`limits`' notation, e.g. "120/minute" or "10/second;300/hour"). Over the limit it gets 429
with `Retry-After`, before the handler runs. Counts live in the process's memory: behind a
load balancer each replica counts its own share, which is what one replica can afford to
serve; a shared limit would count in Redis.

The limits are written in `limits`' notation and parsed by it, but counted here: `limits`'
in-memory storage starts a thread to expire entries 10 ms after a hit whenever none is
waiting (measured: a thread for every third hit at 250 hits/s), and in a one-worker service
those threads take the GIL from the requests in flight (the tracking page answered in 5 to 6
ms at the median with one worker, 1.7 ms with two, in the same benchmark run). A moving
window here is a queue of hit instants per client and limit, trimmed when the client calls.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque

from limits import RateLimitItem, parse_many

# The public tracking page's routes, limited together: a page view calls the page, its
# parcels and its offers. (The widget's script is a static file, left to caches.)
LIMITED = frozenset({"/v1/recommend", "/v1/tracking"})
LIMITED_PREFIXES = ("/demo/tracking/",)
# Clients silent for longer than every window are forgotten once this many hits have passed.
SWEEP_EVERY = 10_000


def limited(path: str) -> bool:
    """Whether the per-client limit counts calls of the path."""
    return path in LIMITED or path.startswith(LIMITED_PREFIXES)


class MovingWindows:
    """Moving-window counts per client for a set of limits, in the process's memory."""

    def __init__(self, items: list[RateLimitItem]) -> None:
        self.items = [(item.amount, float(item.get_expiry())) for item in items]
        self.longest_s = max((expiry for _, expiry in self.items), default=0.0)
        self.hits: dict[str, list[deque[float]]] = {}
        self.since_sweep = 0
        self.lock = threading.Lock()

    def hit(self, client: str, now: float | None = None) -> float | None:
        """Count a hit by the client and return None, or, when a limit is full, the seconds
        until its oldest hit leaves the window (the hit is not counted)."""
        now = time.monotonic() if now is None else now
        with self.lock:
            windows = self.hits.get(client)
            if windows is None:
                windows = self.hits[client] = [deque() for _ in self.items]
            for (amount, expiry), window in zip(self.items, windows, strict=True):
                while window and window[0] <= now - expiry:
                    window.popleft()
                if len(window) >= amount:
                    return window[0] + expiry - now
            for window in windows:
                window.append(now)
            self.since_sweep += 1
            if self.since_sweep >= SWEEP_EVERY:
                self._sweep(now)
            return None

    def _sweep(self, now: float) -> None:
        self.since_sweep = 0
        silent = [
            client
            for client, windows in self.hits.items()
            if all(not w or w[-1] <= now - self.longest_s for w in windows)
        ]
        for client in silent:
            del self.hits[client]


class RateLimitMiddleware:
    """ASGI middleware: 429 with `Retry-After` for a client over the limit on a public route.

    The limit is read from the settings when the app is built (`limit` for tests).
    """

    def __init__(self, app, limit: str | None = None) -> None:
        from aftersale.settings import get_settings

        self.app = app
        self.items: list[RateLimitItem] = parse_many(
            limit if limit is not None else get_settings().tracking_rate_limit
        )
        self.windows = MovingWindows(self.items)

    def retry_after(self, client: str) -> int | None:
        """Seconds until the client may call again; None when it may now (and it is
        counted)."""
        wait_s = self.windows.hit(client)
        return None if wait_s is None else max(1, math.ceil(wait_s))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not limited(scope["path"]):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = self.retry_after(client)
        if wait is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": f"too many requests: retry after {wait} s"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"retry-after", b"%d" % wait),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
