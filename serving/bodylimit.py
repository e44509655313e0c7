"""Bounds on a request body, checked before any handler reads it: its size and its type.

BentoML and uvicorn read a body whole, however large, before the request schema can refuse
it; a caller could make a worker hold gigabytes. Every request the service accepts is a few
kilobytes (at most 100 ids), so a body over `MAX_BODY_BYTES` is answered 413 at once: by its
`Content-Length` when it declares one, else as soon as the bytes streamed in pass the bound.

BentoML picks a body's parser by its `Content-Type`: a multipart body fails inside it (500)
and its pickle refusal answers a list. The service reads JSON alone, so a non-empty body
declared as anything else is answered 415; one without a `Content-Type` is read as JSON.
"""

from __future__ import annotations

import json

# 100 ids of a few hundred characters each fit many times over.
MAX_BODY_BYTES = 64 * 1024
MEDIA_TYPE = b"application/json"


def _reply(status: int, message: str) -> tuple[dict, dict]:
    body = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        # The rest of an oversized body is never read: the connection cannot be reused.
        (b"connection", b"close"),
    ]
    start = {"type": "http.response.start", "status": status, "headers": headers}
    return start, {"type": "http.response.body", "body": body}


class BodyLimitMiddleware:
    """ASGI middleware: 413 for a request body over `max_bytes`, 415 for one that is not
    JSON, the body passed on whole otherwise (bodies are small: holding one costs nothing)."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is over {self.max_bytes} bytes"
        media_type = None
        for name, value in scope["headers"]:
            if name.lower() == b"content-type":
                media_type = value.split(b";", 1)[0].strip().lower()
            elif name.lower() == b"content-length":
                if not value.strip().isdigit():
                    for message in _reply(400, "the Content-Length header is not a number"):
                        await send(message)
                    return
                if int(value) > self.max_bytes:
                    for message in _reply(413, too_large):
                        await send(message)
                    return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the caller left: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                for reply in _reply(413, too_large):
                    await send(reply)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and media_type not in (None, MEDIA_TYPE):
            for reply in _reply(415, "the request body must be JSON (application/json)"):
                await send(reply)
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: the disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
