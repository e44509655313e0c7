"""The OpenAPI document served at `/docs.json`: BentoML's, with the answers the service gives.

BentoML generates the document from the routes' schemas, but it declares the same errors
(400, 404, 500, with a string `detail` where a validation error holds a list) on every
BentoML route and none on the mounted admin routes, and it knows nothing of what the
middlewares answer: the API keys (401, 403), the body bound (413), the rate limit (429).
It offers no hook to amend the document, so `document` rewrites the generated one and
`ApiDocumentMiddleware` serves the result in its place. Every error is one shape,
`ErrorResponse`, whichever layer answers it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from serving.access import required_scope
from serving.bodylimit import MAX_BODY_BYTES
from serving.ratelimit import limited
from serving.schemas import ErrorResponse

DOCUMENT_PATH = "/docs.json"
REF_TEMPLATE = "#/components/schemas/{model}"
# BentoML's error schemas, replaced by `ErrorResponse`.
BENTOML_ERRORS = ("InvalidArgument", "NotFound", "InternalServerError")
KEY_SCHEMES = {
    "bearerKey": {"type": "http", "scheme": "bearer", "description": "An API key."},
    "headerKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}

# What each handler answers by itself beside 200 (`serving.service`, `serving.outreach`).
HANDLER_ERRORS: dict[str, dict[int, str]] = {
    "/v1/score/delay": {503: "The online feature store cannot be read."},
    "/v1/score/churn": {503: "The online feature store cannot be read."},
    "/v1/explain": {
        503: "The online feature store cannot be read; or, for the offer and uplift models, "
        "no champion is loaded, or the latest batch's effects came from another uplift model."
    },
    "/v1/recommend": {
        401: "No valid token of the shop's for this order (the same answer whether the "
        "order exists or not).",
        503: "The online feature store cannot be read, or no offer model is loaded.",
    },
    "/v1/tracking": {
        401: "No valid token of the shop's for this order (the same answer whether the "
        "order exists or not).",
        503: "The online feature store cannot be read.",
    },
    "/v1/outreach/queue": {
        404: "No outreach queue for `as_of`'s day, or `region` names a region no customer has.",
        503: "No outreach queue has been written yet.",
    },
    "/readyz": {503: "The models are still loading."},
    "/v1/admin/reload": {
        503: "The new champions cannot be loaded and have no local copy to serve; the loaded "
        "ones keep serving."
    },
}


def error_answers(path: str, operation: dict[str, Any]) -> dict[int, str]:
    """The error statuses a route answers, each with why."""
    answers: dict[int, str] = {}
    if "requestBody" in operation:
        answers[400] = (
            "The body is not JSON or does not match the request schema; `detail` names each "
            "invalid part."
        )
        answers[413] = f"The body is over {MAX_BODY_BYTES} bytes."
        answers[415] = "The body is not declared `application/json`."
    scope = required_scope(path)
    if scope is not None:
        answers[401] = "No API key, or not a valid one."
        answers[403] = f"The API key lacks the scope `{scope}`."
    if limited(path):
        answers[429] = "Over the per-client rate limit; `Retry-After` says when to call again."
    for status, text in HANDLER_ERRORS.get(path, {}).items():
        answers[status] = f"{answers[status]} Or: {text}" if status in answers else text
    if "x-bentoml-name" in operation:
        answers[500] = "An unexpected error; the server log holds it."
    return answers


def _error_response(description: str, with_body: bool) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if with_body:
        schema = {"$ref": REF_TEMPLATE.format(model=ErrorResponse.__name__)}
        response["content"] = {"application/json": {"schema": schema}}
    return response


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def document(spec: dict[str, Any]) -> dict[str, Any]:
    """The generated document with each route's real error answers and its key scheme.

    Args:
        spec: BentoML's document (`Service.openapi_spec.asdict()`); left unchanged.
    """
    spec = copy.deepcopy(spec)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in BENTOML_ERRORS:
        schemas.pop(name, None)
    error_schema = ErrorResponse.model_json_schema(ref_template=REF_TEMPLATE)
    schemas.update(error_schema.pop("$defs", {}))
    schemas[ErrorResponse.__name__] = error_schema
    spec["components"]["securitySchemes"] = KEY_SCHEMES
    for path, item in spec.get("paths", {}).items():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = {
                str(status): answer
                for status, answer in operation["responses"].items()
                if int(status) < 400
            }
            # The probes answer plain text; every other error is `ErrorResponse`.
            with_body = path.startswith("/v1/")
            for status, why in sorted(error_answers(path, operation).items()):
                responses[str(status)] = _error_response(why, with_body)
            operation["responses"] = responses
            body = operation.get("requestBody")
            if body is not None:
                # BentoML reads a missing body as `{}`: it is required where a field is.
                schema = body["content"]["application/json"]["schema"]
                body["required"] = bool(_resolve(spec, schema).get("required"))
            scope = required_scope(path)
            if scope is None:
                operation["security"] = []
            else:
                operation["security"] = [{name: []} for name in KEY_SCHEMES]
                operation["description"] = (
                    f"{operation.get('description', '')}\n\nNeeds an API key with the scope "
                    f"`{scope}`."
                ).strip()
    return spec


class ApiDocumentMiddleware:
    """ASGI middleware: answers `GET /docs.json` with `document` of the generated spec, built
    on the first request and kept (the routes do not change while the process runs)."""

    def __init__(self, app, generate: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self.generate = generate
        self.body: bytes | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != DOCUMENT_PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if self.body is None:
            self.body = json.dumps(document(self.generate())).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(self.body)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})
