"""The widget's CORS answers in front of the service's own middlewares, at the ASGI level: a
preflight is answered before the rate limit counts it, and the limit's and the body bound's
refusals carry the allow header. (Over real HTTP, with the service's routes:
`tests/serving/test_service.py`.)"""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.bodylimit import BodyLimitMiddleware
from serving.cors import WidgetCorsMiddleware
from serving.ratelimit import RateLimitMiddleware

SHOP_ORIGIN = "https://shop.example"
PREFLIGHT = {
    "Origin": SHOP_ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}


async def _answer(request) -> JSONResponse:
    return JSONResponse({"ok": True})


def _client(origins: tuple[str, ...], limit: str = "2/minute") -> TestClient:
    """The service's middlewares in its order, around a route answering every widget path."""
    app = Starlette(
        routes=[
            Route(path, _answer, methods=["GET", "POST"])
            for path in ("/v1/tracking", "/v1/recommend", "/v1/score/delay")
        ]
    )
    stack = WidgetCorsMiddleware(
        RateLimitMiddleware(BodyLimitMiddleware(app, max_bytes=100), limit=limit),
        origins=origins,
    )
    return TestClient(stack)


def test_preflights_are_not_counted_and_refusals_name_the_origin() -> None:
    client = _client((SHOP_ORIGIN,))
    for _ in range(5):
        preflight = client.options("/v1/tracking", headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == SHOP_ORIGIN
    origin = {"Origin": SHOP_ORIGIN}
    too_large = client.post("/v1/tracking", content=b"x" * 200, headers=origin)
    assert too_large.status_code == 413
    assert too_large.headers["access-control-allow-origin"] == SHOP_ORIGIN
    not_json = client.post(
        "/v1/recommend", content=b"x", headers={**origin, "content-type": "text/plain"}
    )
    assert not_json.status_code == 415
    assert not_json.headers["access-control-allow-origin"] == SHOP_ORIGIN
    limited = client.post("/v1/tracking", json={}, headers=origin)
    assert limited.status_code == 429
    assert limited.headers["access-control-allow-origin"] == SHOP_ORIGIN
    assert "too many requests" in limited.json()["error"]


@pytest.mark.parametrize(
    ("origins", "path", "origin"),
    [
        ((SHOP_ORIGIN,), "/v1/score/delay", SHOP_ORIGIN),
        ((SHOP_ORIGIN,), "/v1/tracking", "https://elsewhere.example"),
        ((), "/v1/tracking", SHOP_ORIGIN),
    ],
)
def test_no_allow_header_off_the_widgets_routes_or_origins(origins, path, origin) -> None:
    client = _client(origins, limit="100/minute")
    preflight = client.options(path, headers={**PREFLIGHT, "Origin": origin})
    assert "access-control-allow-origin" not in preflight.headers
    answer = client.post(path, json={}, headers={"Origin": origin})
    assert answer.status_code == 200
    assert not [name for name in answer.headers if name.startswith("access-control-")]


def test_any_origin_is_answered_without_credentials() -> None:
    client = _client(("*",), limit="100/minute")
    preflight = client.options("/v1/tracking", headers=PREFLIGHT)
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in preflight.headers
    answer = client.post("/v1/tracking", json={}, headers={"Origin": SHOP_ORIGIN})
    assert answer.headers["access-control-allow-origin"] == "*"
