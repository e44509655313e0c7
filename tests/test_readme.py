"""The README's claims about files in the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_shows_the_committed_picture_of_the_report() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    reports = readme.split("## Reports", 1)[1].split("\n## ", 1)[0]
    images = re.findall(r"!\[[^\]]+\]\(([^)\s]+)\)", reports)
    assert "docs/report.png" in images
    data = (ROOT / "docs" / "report.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")


def test_readme_shows_the_committed_picture_of_the_tracking_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    serving = readme.split("## Serving", 1)[1].split("\n## ", 1)[0]
    page = serving.split("### The tracking page", 1)[1]
    images = re.findall(r"!\[[^\]]+\]\(([^)\s]+)\)", page)
    assert "docs/tracking_page.png" in images
    data = (ROOT / "docs" / "tracking_page.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
