"""API keys and scopes: entries parsed with named errors, digests compared, the right status
for each request, keys written as digests only, and the middleware over a real ASGI app."""

from __future__ import annotations

import hashlib
import stat

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from typer.testing import CliRunner

from aftersale.cli import app as cli
from aftersale.settings import Settings
from serving.access import (
    ADMIN,
    OUTREACH_READ,
    SCORE_READ,
    ApiKeyMiddleware,
    KeyConfigError,
    KeyRing,
    add_key,
    load_keys,
    parse_keys,
    presented_secret,
    required_scope,
)

READER = "reader-secret-0123456789"
OPERATOR = "operator-secret-0123456789"


def ring() -> KeyRing:
    return KeyRing(
        parse_keys(f"reader:score:read:{READER}, ops:admin+outreach:read:{OPERATOR}", "test")
    )


def test_entries_parse_into_names_scopes_and_digests() -> None:
    keys = parse_keys(
        f"# the CRM\nreader:score:read:{READER}\n\nops:admin+outreach:read:{OPERATOR}", "file"
    )
    assert [(k.name, k.scopes) for k in keys] == [
        ("reader", frozenset({SCORE_READ})),
        ("ops", frozenset({ADMIN, OUTREACH_READ})),
    ]
    assert keys[0].digest == hashlib.sha256(READER.encode()).digest()
    hashed = parse_keys(f"ops:admin:sha256={hashlib.sha256(b'x' * 20).hexdigest()}", "file")
    assert hashed[0].digest == hashlib.sha256(b"x" * 20).digest()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("reader-only", "entry 1 is not name:scope+scope:secret"),
        (f"ok:admin:{READER},broken:admin", "entry 2 is not name:scope+scope:secret"),
        (f"reader:score:write:{READER}", "entry 1 (reader) has unknown scopes ['score:write']"),
        (f"reader::{READER}", "entry 1 is not name:scope+scope:secret"),
        ("reader:score:read:short", "shorter than 16 characters"),
        ("reader:score:read:sha256=abc", "malformed digest"),
        ("reader:score:read:sha256=" + "z" * 64, "malformed digest"),
    ],
)
def test_a_malformed_entry_is_named_and_its_secret_never_shown(text, problem) -> None:
    with pytest.raises(KeyConfigError, match=r"^AFTERSALE_API_KEYS: ") as raised:
        parse_keys(text, "AFTERSALE_API_KEYS")
    assert problem in str(raised.value)
    assert READER not in str(raised.value)


@pytest.mark.parametrize(
    ("secret", "scope", "status"),
    [
        (None, SCORE_READ, 401),
        ("", SCORE_READ, 401),
        ("wrong-secret-0123456789", SCORE_READ, 401),
        (READER, SCORE_READ, 200),
        (READER, OUTREACH_READ, 403),
        (READER, ADMIN, 403),
        (OPERATOR, ADMIN, 200),
        (OPERATOR, OUTREACH_READ, 200),
        (OPERATOR, SCORE_READ, 403),
    ],
)
def test_each_request_gets_the_status_its_key_and_scope_give(secret, scope, status) -> None:
    assert ring().authorize(secret, scope).status == status


def test_no_configured_key_lets_nobody_in() -> None:
    assert KeyRing([]).authorize(READER, SCORE_READ).status == 401


def test_routes_need_their_scope_and_unknown_ones_admin() -> None:
    assert required_scope("/v1/score/churn") == SCORE_READ
    assert required_scope("/v1/outreach/queue") == OUTREACH_READ
    assert required_scope("/v1/admin/reload") == ADMIN
    assert required_scope("/v1/anything/else") == ADMIN
    for public in ("/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/v1/recommend"):
        assert required_scope(public) is None


def test_the_key_is_read_from_either_header() -> None:
    assert presented_secret([(b"authorization", b"Bearer abc")]) == "abc"
    assert presented_secret([(b"Authorization", b"bearer  abc ")]) == "abc"
    assert presented_secret([(b"x-api-key", b"abc")]) == "abc"
    assert presented_secret([(b"authorization", b"Basic abc")]) is None
    assert presented_secret([]) is None


def test_keys_come_from_the_environment_and_the_secrets_file(tmp_path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"ops:admin:{OPERATOR}\n")
    settings = Settings(
        data_dir=tmp_path, api_keys=f"reader:score:read:{READER}", api_keys_file=path
    )
    assert [k.name for k in load_keys(settings)] == ["reader", "ops"]
    missing = Settings(data_dir=tmp_path, api_keys_file=tmp_path / "none")
    with pytest.raises(KeyConfigError, match="no file at"):
        load_keys(missing)
    # Without either, the default file under the data folder is read where it exists.
    assert load_keys(Settings(data_dir=tmp_path)) == []
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "api_keys").write_text(f"ops:admin:{OPERATOR}\n")
    assert [k.name for k in load_keys(Settings(data_dir=tmp_path))] == ["ops"]


def test_a_new_key_is_stored_as_its_digest_and_replaces_its_name(tmp_path) -> None:
    path = tmp_path / "secrets" / "api_keys"
    first = add_key(path, "crm", [SCORE_READ])
    other = add_key(path, "scheduler", [OUTREACH_READ])
    second = add_key(path, "crm", [SCORE_READ, ADMIN])
    text = path.read_text()
    for secret in (first, second, other):
        assert secret not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = KeyRing(parse_keys(text, str(path)))
    assert len(keys.keys) == 2
    assert keys.authorize(first, SCORE_READ).status == 401
    assert keys.authorize(second, ADMIN).status == 200
    assert keys.authorize(other, OUTREACH_READ).status == 200
    with pytest.raises(KeyConfigError, match="unknown scopes"):
        add_key(path, "x", ["everything"])
    with pytest.raises(KeyConfigError, match="name"):
        add_key(path, "a:b", [ADMIN])


def test_the_command_line_prints_a_key_the_service_accepts(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["key", "scheduler", "--scope", "outreach:read"])
    assert result.exit_code == 0, result.output
    secret = result.output.strip().splitlines()[-1]
    keys = KeyRing(load_keys(Settings(data_dir=tmp_path)))
    assert keys.authorize(secret, OUTREACH_READ).status == 200
    bad = CliRunner().invoke(cli, ["key", "scheduler", "--scope", "root"])
    assert bad.exit_code == 2
    assert "unknown scopes" in bad.output
    assert "Traceback" not in bad.output


def test_the_middleware_answers_before_a_protected_route_runs() -> None:
    ran = []

    async def endpoint(request):
        ran.append(request.url.path)
        return JSONResponse({"ok": True})

    paths = ["/v1/score/churn", "/v1/outreach/queue", "/livez", "/v1/unlisted"]
    inner = Starlette(routes=[Route(p, endpoint, methods=["GET"]) for p in paths])
    client = TestClient(ApiKeyMiddleware(inner, keys=ring()))
    assert client.get("/livez").status_code == 200
    denied = client.get("/v1/score/churn")
    assert denied.status_code == 401
    assert denied.json() == {"error": "an API key is required: Authorization: Bearer <key>"}
    assert client.get("/v1/outreach/queue", headers={"X-API-Key": READER}).status_code == 403
    assert client.get("/v1/unlisted", headers={"X-API-Key": READER}).status_code == 403
    assert ran == ["/livez"]
    allowed = client.get("/v1/score/churn", headers={"Authorization": f"Bearer {READER}"})
    assert allowed.status_code == 200
    assert ran == ["/livez", "/v1/score/churn"]
