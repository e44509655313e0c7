"""Cross-origin calls of the tracking widget, from the shops' pages named in the settings.

A shop's tracking page lives on the shop's origin, the service on its own: before the
widget's `POST /v1/tracking` and `POST /v1/recommend` (JSON bodies, so not "simple"
requests) a browser sends a preflight `OPTIONS`, and it lets the widget read an answer only
when the answer names the page's origin in `Access-Control-Allow-Origin`. The origins come
from `AFTERSALE_CORS_ORIGINS`; empty (the default), the service sends no CORS headers and
the widget works only on a page of the service's own origin.

Only the widget's routes answer cross-origin (`WIDGET_ROUTES`): every other route needs an
API key, which no browser page should hold. The widget sends no cookies and no
`Authorization` (its token is in the body), so credentials are never allowed and a
preflight may ask for `Content-Type` alone.

Starlette's `CORSMiddleware` does the work; this wrapper limits it to those routes and is
the service's outermost middleware: a preflight is answered before the rate limit counts it,
and the limit's 429 and the body bounds' 413 and 415 carry the allow header, so the widget
can show why it failed. (BentoML's `http.cors` configuration applies to every route, is fixed
where the service class is declared, and places its middleware inside the service's own.)
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.tracking import WIDGET_PATH

WIDGET_ROUTES = frozenset({"/v1/tracking", "/v1/recommend", WIDGET_PATH})
ALLOWED_METHODS = ("GET", "POST")
ALLOWED_HEADERS = ("content-type",)
# How long a browser may reuse a preflight's answer; Chromium caps it at 2 hours.
PREFLIGHT_MAX_AGE_S = 3_600


class WidgetCorsMiddleware:
    """ASGI middleware: CORS for the allowed origins on the widget's routes, nothing else.

    The origins are read from the settings when the app is built (`origins` for tests).
    """

    def __init__(self, app: ASGIApp, origins: tuple[str, ...] | None = None) -> None:
        from aftersale.settings import get_settings

        self.app = app
        if origins is None:
            origins = get_settings().cors_origins
        self.cors = (
            CORSMiddleware(
                app,
                allow_origins=origins,
                allow_methods=ALLOWED_METHODS,
                allow_headers=ALLOWED_HEADERS,
                max_age=PREFLIGHT_MAX_AGE_S,
            )
            if origins
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.cors is not None and scope["type"] == "http" and scope["path"] in WIDGET_ROUTES:
            await self.cors(scope, receive, send)
            return
        await self.app(scope, receive, send)
