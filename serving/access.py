"""Who may call what: API keys with scopes, checked before any route runs.

A key is an entry `name:scope+scope:secret` (the secret holds no colon). Entries come from
`AFTERSALE_API_KEYS` (separated by commas) and from a secrets file (`AFTERSALE_API_KEYS_FILE`,
else `<data_dir>/secrets/api_keys` where it exists; one entry a line, `#` starts a comment).
In a file the secret may be given by its digest, `sha256=<hex>`, so the file never holds the
key itself (`aftersale key` writes such entries). Only digests are kept in memory, and a
presented key is compared with every stored digest in constant time.

A caller presents its key as `Authorization: Bearer <secret>` or `X-API-Key: <secret>`.
Every route needs a key with its scope (`ROUTE_SCOPES`; a route not listed needs `admin`),
except the probes, the metrics scrape, the OpenAPI document and the public tracking page's
routes (`PUBLIC`). No key: 401; a key without the scope: 403.

Why hand-written: the check is a dozen lines of the standard library (`hashlib`, `hmac`);
BentoML has no authentication of its own, and an ASGI middleware covers its routes and the
mounted FastAPI admin routes alike. SHA-256 rather than a slow password hash: the secrets are
random 256-bit tokens (`new_secret`), which no dictionary attack can guess, and a slow hash
would cost every request milliseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aftersale.settings import Settings

SCORE_READ = "score:read"
OUTREACH_READ = "outreach:read"
ADMIN = "admin"
SCOPES = (SCORE_READ, OUTREACH_READ, ADMIN)

# Route → the scope it needs.
ROUTE_SCOPES = {
    "/v1/score/delay": SCORE_READ,
    "/v1/score/churn": SCORE_READ,
    "/v1/explain": SCORE_READ,
    "/v1/outreach/queue": OUTREACH_READ,
    "/v1/models": ADMIN,
    "/v1/admin/reload": ADMIN,
}
# Reachable without a key: probes, the metrics scrape, the OpenAPI document and its page, and
# the tracking page's routes (its data guarded by the per-order token; its demo page off
# unless configured, `serving.tracking`).
PUBLIC = frozenset(
    {
        *("/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/"),
        *("/v1/recommend", "/v1/tracking", "/widget/tracking.js"),
    }
)
PUBLIC_PREFIXES = ("/static_content/", "/demo/tracking/")
DIGEST_PREFIX = "sha256="
MIN_SECRET_CHARS = 16


class KeyConfigError(ValueError):
    """A malformed key entry; the message names its source and position, never a secret."""


@dataclass(frozen=True)
class ApiKey:
    """One caller's key: its name, scopes and the SHA-256 digest of its secret."""

    name: str
    scopes: frozenset[str]
    digest: bytes


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_secret() -> str:
    """A fresh random key: 32 bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def entry(name: str, scopes: Iterable[str], secret: str) -> str:
    """A secrets-file line for the key: its digest, never the secret."""
    return f"{name}:{'+'.join(scopes)}:{DIGEST_PREFIX}{digest(secret).hex()}"


def parse_keys(text: str, source: str) -> list[ApiKey]:
    """Parse key entries (comma- or line-separated; blank lines and `#` comments skipped).

    Raises:
        KeyConfigError: An entry is not `name:scope+scope:secret`, names an unknown scope, or
            holds a secret shorter than `MIN_SECRET_CHARS` or a malformed digest.
    """
    keys = []
    lines = [line.split("#", 1)[0].strip() for line in text.replace(",", "\n").splitlines()]
    for number, line in enumerate((line for line in lines if line), start=1):
        # Scopes hold colons themselves: the name ends at the first, the secret (which holds
        # none) starts after the last.
        name, _, rest = line.partition(":")
        scopes_text, _, secret = rest.rpartition(":")
        if not name or not scopes_text or not secret:
            raise KeyConfigError(f"{source}: entry {number} is not name:scope+scope:secret")
        scopes = frozenset(s for s in scopes_text.split("+") if s)
        unknown = sorted(scopes - set(SCOPES))
        if not scopes or unknown:
            raise KeyConfigError(
                f"{source}: entry {number} ({name}) has unknown scopes {unknown or '(none)'}; "
                f"known: {', '.join(SCOPES)}"
            )
        if secret.startswith(DIGEST_PREFIX):
            try:
                value = bytes.fromhex(secret.removeprefix(DIGEST_PREFIX))
            except ValueError:
                value = b""
            if len(value) != hashlib.sha256().digest_size:
                raise KeyConfigError(f"{source}: entry {number} ({name}) has a malformed digest")
        elif len(secret) < MIN_SECRET_CHARS:
            raise KeyConfigError(
                f"{source}: entry {number} ({name}) has a secret shorter than "
                f"{MIN_SECRET_CHARS} characters"
            )
        else:
            value = digest(secret)
        keys.append(ApiKey(name, scopes, value))
    return keys


def add_key(path: Path, name: str, scopes: Iterable[str]) -> str:
    """Create a key: write its entry (the digest only) to the secrets file, replacing an
    earlier key of the same name, and return the secret, which is stored nowhere else.

    The file is written as `write_private` writes: a reader sees the old keys or the new.

    Raises:
        KeyConfigError: The name is empty or holds ':' or ',', or a scope is unknown.
    """
    scopes = list(dict.fromkeys(scopes))
    if not name or any(c in name for c in ":,#\n"):
        raise KeyConfigError(f"key name {name!r}: give a non-empty name without ':', ',' or '#'")
    unknown = sorted(set(scopes) - set(SCOPES)) if scopes else ["(none)"]
    if unknown:
        raise KeyConfigError(f"key {name}: unknown scopes {unknown}; known: {', '.join(SCOPES)}")
    secret = new_secret()
    kept = []
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.split("#", 1)[0].strip().split(":", 1)[0] != name:
                kept.append(line)
    write_private(path, "\n".join([*kept, entry(name, scopes, secret)]) + "\n")
    return secret


def write_private(path: Path, text: str) -> None:
    """Write a secrets file readable by its owner only: whole, to a temporary file beside
    it, then moved over the old one, so a reader sees the old text or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.touch(mode=0o600)
    scratch.chmod(0o600)
    scratch.write_text(text)
    scratch.replace(path)


def default_keys_file(settings: Settings) -> Path:
    """Where `aftersale key` writes: `api_keys_file`, else `<data_dir>/secrets/api_keys`."""
    return settings.api_keys_file or settings.data_dir / "secrets" / "api_keys"


def keys_file(settings: Settings) -> Path | None:
    """The secrets file: `api_keys_file`, else `<data_dir>/secrets/api_keys` if present."""
    if settings.api_keys_file is not None:
        return settings.api_keys_file
    default = default_keys_file(settings)
    return default if default.is_file() else None


def load_keys(settings: Settings) -> list[ApiKey]:
    """Every configured key, from the environment and the secrets file.

    Raises:
        KeyConfigError: A malformed entry, or a named secrets file that does not exist.
    """
    keys = []
    if settings.api_keys is not None:
        keys += parse_keys(settings.api_keys.get_secret_value(), "AFTERSALE_API_KEYS")
    path = keys_file(settings)
    if path is not None:
        if not path.is_file():
            raise KeyConfigError(f"AFTERSALE_API_KEYS_FILE: no file at {path}")
        keys += parse_keys(path.read_text(), str(path))
    return keys


@dataclass(frozen=True)
class Decision:
    """Whether a request may go on: its HTTP status (200: yes) and the key's name."""

    status: int
    name: str | None = None
    message: str = ""


class KeyRing:
    """The configured keys, checked in constant time."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys = tuple(keys)

    def authorize(self, secret: str | None, scope: str) -> Decision:
        """Whether `secret` holds `scope` (every stored digest is compared: the time does not
        tell which key, if any, was close)."""
        if not secret:
            return Decision(401, message="an API key is required: Authorization: Bearer <key>")
        presented = digest(secret)
        found = None
        for key in self.keys:
            if hmac.compare_digest(key.digest, presented):
                found = key
        if found is None:
            return Decision(401, message="the API key is not valid")
        if scope not in found.scopes:
            return Decision(403, found.name, f"the API key lacks the scope {scope!r}")
        return Decision(200, found.name)


def required_scope(path: str) -> str | None:
    """The scope a path needs; None for a public one (an unlisted path needs `admin`)."""
    if path in PUBLIC or path.startswith(PUBLIC_PREFIXES):
        return None
    return ROUTE_SCOPES.get(path.rstrip("/") or "/", ADMIN)


def presented_secret(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key in `Authorization: Bearer …` or `X-API-Key`, if any."""
    found = None
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1").strip()
        if name == "authorization" and value[:7].lower() == "bearer ":
            found = value[7:].strip() or found
        elif name == "x-api-key":
            found = value or found
    return found


class ApiKeyMiddleware:
    """ASGI middleware: answers 401 or 403 before a protected route runs.

    The keys are read from the settings when the app is built (`keys` for tests).
    """

    def __init__(self, app, keys: KeyRing | None = None) -> None:
        from aftersale.settings import get_settings

        self.app = app
        self.ring = keys if keys is not None else KeyRing(load_keys(get_settings()))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = required_scope(scope["path"])
        if needed is None:
            await self.app(scope, receive, send)
            return
        decision = self.ring.authorize(presented_secret(scope["headers"]), needed)
        if decision.status == 200:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": decision.message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        if decision.status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="aftersale"'))
        await send({"type": "http.response.start", "status": decision.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
