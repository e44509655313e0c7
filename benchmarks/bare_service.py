"""The yardstick: a BentoML endpoint that returns a constant, served like the real one."""

from __future__ import annotations

import bentoml


@bentoml.service(name="bare")
class Bare:
    """Does nothing but answer."""

    @bentoml.api(route="/v1/constant")
    def constant(self, ids: list[str]) -> dict:
        """A constant answer."""
        return {"ok": True}
