"""Tracking-page tokens: the shop signs each order's page, so order ids cannot be walked.

A token is `v1.<expiry>.<signature>`: the expiry in Unix seconds and the URL-safe base64 of
HMAC-SHA256(secret, "v1.<order_id>.<expiry>"). The shop's backend mints one when it renders
an order's tracking page (`mint`, or `aftersale token ORDER_ID`), and the page sends it with
`/v1/recommend`; the service answers only when the signature holds for that order and the
expiry has not passed (`verify`).

The secrets come from `AFTERSALE_TOKEN_SECRET` (comma-separated: the first signs, every one
verifies, so a secret is rotated by putting the new one first and dropping the old one once
its tokens have expired) or a secrets file (`AFTERSALE_TOKEN_SECRET_FILE`, default
`<data_dir>/secrets/token_secret`, one secret a line).

Hand-written on the standard library's `hmac`: a signed string of two fields needs no token
library, and JWT's header and algorithm negotiation would only add ways to get it wrong.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from aftersale.settings import Settings
from serving.access import write_private

VERSION = "v1"
DEFAULT_TTL_S = 24 * 3_600
MIN_SECRET_CHARS = 32


class TokenConfigError(ValueError):
    """No usable signing secret; the message says where one is configured."""


def token_secrets_file(settings: Settings) -> Path:
    return settings.token_secret_file or settings.data_dir / "secrets" / "token_secret"


def load_secrets(settings: Settings) -> list[bytes]:
    """The configured secrets, the signing one first (none: an empty list).

    Raises:
        TokenConfigError: A secret shorter than `MIN_SECRET_CHARS`, or a named secrets file
            that does not exist.
    """
    found = []
    if settings.token_secret is not None:
        found += [s.strip() for s in settings.token_secret.get_secret_value().split(",")]
    path = token_secrets_file(settings)
    if settings.token_secret_file is not None and not path.is_file():
        raise TokenConfigError(f"AFTERSALE_TOKEN_SECRET_FILE: no file at {path}")
    if path.is_file():
        found += [line.strip() for line in path.read_text().splitlines()]
    found = [s for s in found if s and not s.startswith("#")]
    for number, secret in enumerate(found, start=1):
        if len(secret) < MIN_SECRET_CHARS:
            raise TokenConfigError(
                f"tracking-token secret {number} is shorter than {MIN_SECRET_CHARS} characters"
            )
    return [s.encode() for s in found]


def ensure_secret(settings: Settings) -> Path | None:
    """Create a random signing secret in the secrets file when none is configured; the
    file's path when one was created, else None."""
    if load_secrets(settings):
        return None
    path = token_secrets_file(settings)
    write_private(path, secrets.token_urlsafe(48) + "\n")
    return path


def _signature(secret: bytes, order_id: str, expiry: int) -> str:
    message = f"{VERSION}.{order_id}.{expiry}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def mint(order_id: str, secret: bytes, ttl_s: int = DEFAULT_TTL_S, now: float | None = None) -> str:
    """A token for the order's tracking page, valid for `ttl_s` seconds."""
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s}")
    expiry = int((time.time() if now is None else now) + ttl_s)
    return f"{VERSION}.{expiry}.{_signature(secret, order_id, expiry)}"


@dataclass(frozen=True)
class Check:
    """Whether a token opens an order's page, and why not."""

    ok: bool
    reason: str = ""


def verify(token: str | None, order_id: str, keys: list[bytes], now: float | None = None) -> Check:
    """Whether `token` was signed for `order_id` by one of `keys` and has not expired.

    The answer never says whether the order exists: a wrong order and a wrong signature read
    alike.
    """
    if not keys:
        return Check(False, "tracking-page tokens are not configured on this service")
    if not token:
        return Check(False, "a tracking token for the order is required (field 'token')")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION or not parts[1].isdigit():
        return Check(False, "the tracking token is malformed")
    expiry = int(parts[1])
    valid = False
    for key in keys:
        valid |= hmac.compare_digest(_signature(key, order_id, expiry), parts[2])
    if not valid:
        return Check(False, "the tracking token is not valid for this order")
    if expiry <= (time.time() if now is None else now):
        return Check(False, "the tracking token has expired")
    return Check(True)
