"""The yardstick: BentoML endpoints that return a constant, served like the real service.

`/v1/constant` is a coroutine like the service's handlers (the stricter yardstick);
`/v1/constant_sync` a plain method, which BentoML runs in its thread pool.
"""

from __future__ import annotations

import bentoml


@bentoml.service(name="bare")
class Bare:
    """Does nothing but answer."""

    @bentoml.api(route="/v1/constant")
    async def constant(self, ids: list[str]) -> dict:
        """A constant answer."""
        return {"ok": True}

    @bentoml.api(route="/v1/constant_sync")
    def constant_sync(self, ids: list[str]) -> dict:
        """A constant answer, from the thread pool."""
        return {"ok": True}
