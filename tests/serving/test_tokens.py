"""Tracking-page tokens and the public route's rate limit: a token opens one order's page
until it expires, rotation keeps old tokens valid, and a client over the limit gets 429 with
Retry-After before the handler runs."""

from __future__ import annotations

import stat

import pytest
from limits import parse_many
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from typer.testing import CliRunner

from aftersale.cli import app as cli
from aftersale.settings import Settings
from serving.ratelimit import SWEEP_EVERY, MovingWindows, RateLimitMiddleware
from serving.tokens import (
    TokenConfigError,
    ensure_secret,
    load_secrets,
    mint,
    verify,
)

SECRET = b"s" * 40
OTHER = b"o" * 40
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def test_a_token_opens_its_order_until_it_expires() -> None:
    token = mint("o1", SECRET, ttl_s=600, now=NOW)
    assert token.startswith(f"v1.{int(NOW) + 600}.")
    assert verify(token, "o1", [SECRET], now=NOW + 599).ok
    expired = verify(token, "o1", [SECRET], now=NOW + 600)
    assert not expired.ok
    assert "expired" in expired.reason


@pytest.mark.parametrize(
    ("token", "order", "reason"),
    [
        (None, "o1", "required"),
        ("", "o1", "required"),
        ("v1.123", "o1", "malformed"),
        ("v2.99999999999.abc", "o1", "malformed"),
        ("v1.soon.abc", "o1", "malformed"),
        ("minted-for-o1", "o2", "not valid for this order"),
        ("signed-by-another-secret", "o1", "not valid for this order"),
        ("expiry-moved", "o1", "not valid for this order"),
    ],
)
def test_a_token_for_another_order_or_secret_or_altered_opens_nothing(token, order, reason) -> None:
    good = mint("o1", SECRET, ttl_s=600, now=NOW)
    version, expiry, signature = good.split(".")
    token = {
        "minted-for-o1": good,
        "signed-by-another-secret": mint("o1", OTHER, ttl_s=600, now=NOW),
        "expiry-moved": f"{version}.{int(expiry) + 3600}.{signature}",
    }.get(token, token)
    check = verify(token, order, [SECRET], now=NOW)
    assert not check.ok
    assert reason in check.reason


def test_rotation_verifies_with_every_secret_and_signs_with_the_first(tmp_path) -> None:
    old_token = mint("o1", OTHER, ttl_s=600, now=NOW)
    settings = Settings(data_dir=tmp_path, token_secret=f"{SECRET.decode()},{OTHER.decode()}")
    keys = load_secrets(settings)
    assert keys == [SECRET, OTHER]
    assert verify(old_token, "o1", keys, now=NOW).ok
    assert verify(mint("o1", keys[0], now=NOW), "o1", [SECRET], now=NOW).ok


def test_no_secret_opens_nothing_and_a_short_one_is_refused(tmp_path) -> None:
    assert "not configured" in verify("v1.1.x", "o1", [], now=NOW).reason
    with pytest.raises(TokenConfigError, match="shorter than 32"):
        load_secrets(Settings(data_dir=tmp_path, token_secret="short"))
    with pytest.raises(TokenConfigError, match="no file at"):
        load_secrets(Settings(data_dir=tmp_path, token_secret_file=tmp_path / "none"))


def test_a_secret_is_made_once_readable_by_its_owner_only(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    path = ensure_secret(settings)
    assert path is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = load_secrets(settings)
    assert len(first) == 1
    assert ensure_secret(settings) is None
    assert load_secrets(settings) == first


def test_the_command_line_mints_a_token_the_service_accepts(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AFTERSALE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AFTERSALE_TOKEN_SECRET", SECRET.decode())
    result = CliRunner().invoke(cli, ["token", "o42", "--ttl", "60"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    assert verify(token, "o42", [SECRET]).ok
    assert not verify(token, "o43", [SECRET]).ok
    bad = CliRunner().invoke(cli, ["token", "o42", "--ttl", "0"])
    assert bad.exit_code == 2
    assert "Traceback" not in bad.output
    monkeypatch.delenv("AFTERSALE_TOKEN_SECRET")
    missing = CliRunner().invoke(cli, ["token", "o42"])
    assert missing.exit_code == 2
    assert "AFTERSALE_TOKEN_SECRET" in missing.output


def test_a_client_over_the_limit_gets_429_with_retry_after() -> None:
    ran = []

    async def endpoint(request):
        ran.append(request.url.path)
        return JSONResponse({"ok": True})

    inner = Starlette(
        routes=[Route(p, endpoint, methods=["POST"]) for p in ("/v1/recommend", "/v1/other")]
    )
    client = TestClient(RateLimitMiddleware(inner, limit="3/minute"))
    assert [client.post("/v1/recommend").status_code for _ in range(3)] == [200] * 3
    over = client.post("/v1/recommend")
    assert over.status_code == 429
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert "too many requests" in over.json()["error"]
    assert len(ran) == 3
    # Other routes are not counted.
    assert client.post("/v1/other").status_code == 200


def test_a_moving_window_frees_a_hit_as_it_leaves_the_window() -> None:
    windows = MovingWindows(parse_many("2/second;3/minute"))
    assert windows.hit("a", now=0.0) is None
    assert windows.hit("a", now=0.5) is None
    # The second-long window is full until the first hit leaves it.
    assert windows.hit("a", now=0.9) == pytest.approx(0.1)
    assert windows.hit("b", now=0.9) is None
    assert windows.hit("a", now=1.0) is None
    # A refused hit was not counted: the minute-long window holds three, now full.
    assert windows.hit("a", now=2.0) == pytest.approx(58.0)
    assert windows.hit("a", now=60.0) is None


def test_a_moving_window_forgets_silent_clients() -> None:
    windows = MovingWindows(parse_many("5/second"))
    for n in range(SWEEP_EVERY - 1):
        windows.hit(f"c{n}", now=0.0)
    # The sweeping hit comes after every earlier client's window has passed.
    windows.hit("late", now=2.0)
    assert list(windows.hits) == ["late"]
