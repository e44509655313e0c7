"""Per-client rate limits on the public routes, with `limits`' moving windows.

The tracking page is public: a client (its address as the server sees it) may call
`/v1/recommend` at most `AFTERSALE_TRACKING_RATE_LIMIT` times (default 120 per minute, in
`limits`' notation, e.g. "120/minute" or "10/second;300/hour"). Over the limit it gets 429
with `Retry-After`, before the handler runs. Counts live in the process's memory: behind a
load balancer each replica counts its own share, which is what one replica can afford to
serve; a shared limit would point `limits` at Redis.
"""

from __future__ import annotations

import json
import math
import time

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

# Public routes and what they are limited by.
LIMITED = frozenset({"/v1/recommend"})


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
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def retry_after(self, client: str) -> int | None:
        """Seconds until the client may call again; None when it may now (and it is
        counted)."""
        for item in self.items:
            if not self.limiter.hit(item, client):
                reset, _ = self.limiter.get_window_stats(item, client)
                return max(1, math.ceil(reset - time.time()))
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] not in LIMITED:
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
