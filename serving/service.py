"""The BentoML service: scores, reasons and outreach actions from ids alone.

Start it with `aftersale serve` (or `bentoml serve serving.service:Aftersale`). Routes:
`POST /v1/score/delay`, `POST /v1/score/churn`, `POST /v1/explain`, `POST /v1/recommend`,
`POST /v1/tracking`, `POST /v1/outreach/queue`, `GET /v1/models`, `POST /v1/admin/reload`,
the tracking widget `GET /widget/tracking.js` and its demo page `GET /demo/tracking/{order_id}`
(`serving.tracking`); BentoML adds `/livez`,
`/readyz` and `/metrics`, which also carries the service's own measures (`serving.metrics`).
Every route but the probes, the metrics, the OpenAPI document and the tracking page's routes
needs an API key with its scope (`serving.access`). The widget's routes answer browsers on the
shops' origins named in `AFTERSALE_CORS_ORIGINS` (`serving.cors`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import bentoml
from fastapi import FastAPI
from starlette.responses import HTMLResponse, JSONResponse, Response

from aftersale.settings import get_settings
from models.served.registry import ModelUnavailableError, answer_quickly
from serving import redact, schemas
from serving.access import ApiKeyMiddleware
from serving.apidoc import ApiDocumentMiddleware
from serving.bodylimit import BodyLimitMiddleware
from serving.cors import WidgetCorsMiddleware
from serving.metrics import domain_metrics
from serving.online import StoreUnavailableError
from serving.outreach import QueueUnavailableError, select_actions
from serving.ratelimit import RateLimitMiddleware
from serving.runtime import Runtime, answer_ahead_quietly
from serving.tokens import load_secrets, mint, verify
from serving.tracking import demo_page, message_page, valid_order_id, widget_script

log = logging.getLogger(__name__)

admin = FastAPI(title="aftersale admin")
# A demo page's token outlives a visit, not a day.
DEMO_TOKEN_TTL_S = 3_600


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@bentoml.asgi_app(admin, path="/")
@bentoml.service(name="aftersale", traffic={"timeout": 30})
class Aftersale:
    """Scores, reasons and outreach actions for schedulers, tracking pages and the CRM."""

    def __init__(self) -> None:
        redact.install()
        # A registry that is down costs seconds: the champions' local copies then serve.
        answer_quickly()
        self.settings = get_settings()
        self.runtime = Runtime.start(self.settings)
        self.token_keys = load_secrets(self.settings)
        if not self.token_keys:
            log.warning("no tracking-token secret configured: /v1/recommend answers 401")
        domain_metrics().load(self.runtime.versions())
        self._ahead_stop = threading.Event()
        self._answer_ahead(self.runtime)
        # The retrain-due gauge follows the monitor's marks, written while the service runs.
        threading.Thread(target=self._watch_marks, daemon=True).start()
        self._reloading = threading.Lock()
        # Why the latest reload failed (None once one succeeds), for /v1/models.
        self.reload_error: str | None = None
        try:
            signal.signal(signal.SIGHUP, lambda *_: self.reload_in_background())
        except ValueError:  # not the main thread (e.g. under a test client): admin call only
            log.info("SIGHUP reload not installed outside the main thread")

    def _watch_marks(self, every_s: float = 30.0) -> None:
        while True:
            try:
                self.runtime.retrain_due()
            except Exception:
                log.exception("could not read the retrain marks")
            time.sleep(every_s)

    def _answer_ahead(self, runtime: Runtime) -> None:
        """Answer ahead into `runtime`'s memos on a thread of its own (`Runtime.answer_ahead`),
        again every `answer_ahead_minutes`, stopping the one answering into the runtime it
        replaces."""
        if not self.settings.answer_ahead:
            return
        self._ahead_stop.set()
        self._ahead_stop = stop = threading.Event()
        every_s = self.settings.answer_ahead_minutes * 60
        threading.Thread(
            target=answer_ahead_quietly, args=(runtime, stop, every_s), daemon=True
        ).start()

    def __is_ready__(self) -> bool:
        return self.runtime is not None

    def reload(self) -> schemas.ModelsResponse:
        """Load the current champions beside the serving ones, then swap them in."""
        with self._reloading:
            try:
                fresh = Runtime.start(self.settings)
            except Exception as error:
                self.reload_error = f"{type(error).__name__}: {error}"
                raise
            self.reload_error = None
            self.runtime = fresh  # one reference swap: requests see old or new, whole
            # Tracking-token secrets are re-read too: a rotated secret takes effect here.
            self.token_keys = load_secrets(self.settings)
            domain_metrics().load(fresh.versions())
            self._answer_ahead(fresh)
        return fresh.models_info()

    def reload_in_background(self) -> None:
        threading.Thread(target=self._reload_logged, daemon=True).start()

    def _reload_logged(self) -> None:
        try:
            self.reload()
        except Exception:
            log.exception("reload failed; the loaded champions keep serving")

    # The handlers are coroutines that compute inline: a request is a millisecond or two of
    # CPU under the GIL, and handing it to BentoML's thread pool cost several times that
    # (measured: churn for one id 13.9 ms through the pool, 3.7 ms inline, ASGI client).
    @bentoml.api(route="/v1/score/delay", input_spec=schemas.DelayRequest)
    async def score_delay(self, shipment_ids: list[str]) -> schemas.DelayResponse:
        """Delay risk, band and reasons per shipment."""
        try:
            return self.runtime.score_delay(shipment_ids)
        except StoreUnavailableError as error:
            return _error(503, str(error))

    @bentoml.api(route="/v1/score/churn", input_spec=schemas.ChurnRequest)
    async def score_churn(self, customer_ids: list[str]) -> schemas.ChurnResponse:
        """Churn risk, driving contact reason and reasons per customer."""
        try:
            return self.runtime.score_churn(customer_ids)
        except StoreUnavailableError as error:
            return _error(503, str(error))

    @bentoml.api(route="/v1/explain", input_spec=schemas.ExplainRequest)
    async def explain(self, model: str, ids: list[str]) -> schemas.ExplainResponse:
        """Every feature's SHAP contribution to each id's delay risk, churn, top offer or
        best action's uplift."""
        try:
            return self.runtime.explain(model, ids)
        except (StoreUnavailableError, ModelUnavailableError) as error:
            return _error(503, str(error))

    @bentoml.api(route="/v1/recommend", input_spec=schemas.RecommendRequest)
    async def recommend(
        self, order_id: str, k: int = 3, token: str | None = None
    ) -> schemas.RecommendResponse:
        """Top-k offers for the order on a tracking page, with expected value; only with the
        shop's signed token for the order."""
        check = verify(token, order_id, self.token_keys)
        if not check.ok:
            return _error(401, check.reason)
        try:
            return self.runtime.recommend(order_id, k)
        except (StoreUnavailableError, ModelUnavailableError) as error:
            return _error(503, str(error))

    @bentoml.api(route="/v1/tracking", input_spec=schemas.TrackingRequest)
    async def tracking(self, order_id: str, token: str | None = None) -> schemas.TrackingResponse:
        """The order's parcels on a tracking page: where each is, its delivery window and its
        delay risk in words; only with the shop's signed token for the order."""
        check = verify(token, order_id, self.token_keys)
        if not check.ok:
            return _error(401, check.reason)
        try:
            return self.runtime.track(order_id)
        except StoreUnavailableError as error:
            return _error(503, str(error))

    @bentoml.api(route="/v1/outreach/queue", input_spec=schemas.OutreachRequest)
    async def outreach_queue(
        self, as_of=None, limit: int = 100, channel=None, region=None
    ) -> schemas.OutreachResponse:
        """The day's prioritised outreach actions, filtered."""
        try:
            return select_actions(
                self.runtime.queue.get(), as_of=as_of, limit=limit, channel=channel, region=region
            )
        except QueueUnavailableError as error:
            return _error(error.status, str(error))

    @admin.get("/widget/tracking.js", include_in_schema=False)
    def tracking_widget(self):
        """The tracking widget a shop's page embeds."""
        return Response(widget_script(), media_type="text/javascript")

    @admin.get("/demo/tracking/{order_id}", include_in_schema=False)
    def tracking_demo(self, order_id: str):
        """An example tracking page of the order, holding the order's own signed token (as
        the shop's backend would mint it); only where demo pages are on."""
        if not self.settings.demo_pages:
            return HTMLResponse(
                message_page("Not found", "Demo pages are off (AFTERSALE_DEMO_PAGES)."), 404
            )
        if not valid_order_id(order_id):
            return HTMLResponse(message_page("Bad order id", "That is not an order id."), 400)
        if not self.token_keys:
            return HTMLResponse(
                message_page("Unavailable", "Tracking tokens are not configured."), 503
            )
        runtime = self.runtime
        if runtime.parcels is None or runtime.parcels.parcels(order_id, runtime.now()) is None:
            return HTMLResponse(
                message_page("Order not found", f"No order {order_id} is known."), 404
            )
        token = mint(order_id, self.token_keys[0], ttl_s=DEMO_TOKEN_TTL_S)
        return HTMLResponse(demo_page(order_id, token))

    @admin.get("/v1/models")
    def models(self) -> schemas.ModelsResponse:
        """Loaded model versions and aliases."""
        return self.runtime.models_info().model_copy(update={"reload_error": self.reload_error})

    @admin.post("/v1/admin/reload")
    def admin_reload(self):
        """Load the registry's current champions; the old ones serve until they are ready,
        and keep serving when the new ones cannot load (503 with the reason)."""
        try:
            return self.reload()
        except Exception as error:
            log.exception("reload failed; the loaded champions keep serving")
            return _error(503, f"reload failed; the loaded champions keep serving: {error}")


# The first added is the outermost. A shop's page gets its CORS answers first, so that a
# preflight is never counted or refused by what follows and every refusal of the widget's
# calls carries the allow header; keys and scopes are checked before any route, BentoML's and
# the admin app's alike; the public tracking page is rate-limited per client before its
# handler runs; a body is bounded before anything reads it; the API document says what all of
# them answer.
Aftersale.add_asgi_middleware(WidgetCorsMiddleware)
Aftersale.add_asgi_middleware(ApiKeyMiddleware)
Aftersale.add_asgi_middleware(RateLimitMiddleware)
Aftersale.add_asgi_middleware(BodyLimitMiddleware)
Aftersale.add_asgi_middleware(
    ApiDocumentMiddleware, generate=lambda: Aftersale.openapi_spec.asdict()
)
