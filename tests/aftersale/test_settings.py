"""Settings with a format are read into their canonical form, and a bad value is an error
naming its variable."""

from __future__ import annotations

import pytest

from aftersale.settings import SettingsError, get_settings


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        ("", ()),
        (" , ", ()),
        ("https://shop.example", ("https://shop.example",)),
        # As a browser writes its Origin header: lower case, no default port.
        ("HTTPS://Shop.Example:443", ("https://shop.example",)),
        ("http://localhost:8080, http://localhost:8080", ("http://localhost:8080",)),
        ("https://a.example,http://[::1]:3000", ("https://a.example", "http://[::1]:3000")),
        ("*", ("*",)),
    ],
)
def test_cors_origins_are_read_as_a_browser_writes_them(monkeypatch, value, origins) -> None:
    monkeypatch.setenv("AFTERSALE_CORS_ORIGINS", value)
    assert get_settings().cors_origins == origins


def test_no_origin_is_allowed_by_default(monkeypatch) -> None:
    monkeypatch.delenv("AFTERSALE_CORS_ORIGINS", raising=False)
    assert get_settings().cors_origins == ()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("shop.example", "'shop.example' is not an origin scheme://host[:port]"),
        ("https://shop.example/", "is not an origin"),
        ("https://shop.example/track", "is not an origin"),
        ("https://shop.example?x=1", "is not an origin"),
        ("https://user@shop.example", "is not an origin"),
        ("https://shop.example:99999", "is not an origin"),
        ("ftp://shop.example", "is not an origin"),
        ("null", "is not an origin"),
        ("https://shop.example,*", "'*' allows every origin: name it alone"),
    ],
)
def test_a_bad_cors_origin_is_a_settings_error_naming_it(monkeypatch, value, problem) -> None:
    monkeypatch.setenv("AFTERSALE_CORS_ORIGINS", value)
    with pytest.raises(SettingsError, match="AFTERSALE_CORS_ORIGINS") as raised:
        get_settings()
    assert problem in str(raised.value)


@pytest.mark.parametrize("value", ["10%", "2.5%", "2GiB", "512MB", " 300 MiB ", "1tb"])
def test_duckdb_memory_limit_takes_a_share_or_a_size(monkeypatch, value) -> None:
    monkeypatch.setenv("AFTERSALE_DUCKDB_MEMORY_LIMIT", value)
    assert get_settings().duckdb_memory_limit == value.strip()


@pytest.mark.parametrize("value", ["lots", "10", "2 GiBs", "-1GB", "10%; DROP TABLE x", ""])
def test_a_bad_duckdb_memory_limit_is_a_settings_error_naming_it(monkeypatch, value) -> None:
    monkeypatch.setenv("AFTERSALE_DUCKDB_MEMORY_LIMIT", value)
    with pytest.raises(SettingsError, match="AFTERSALE_DUCKDB_MEMORY_LIMIT") as raised:
        get_settings()
    assert "is neither a share (10%) nor a size" in str(raised.value)
