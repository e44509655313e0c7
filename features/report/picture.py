"""A picture of the report page, for the README: the page as headless Chromium draws it.

The picture is the top of the page at a fixed window size, so that it shows what a reader
sees on opening the report. Chromium is a system program (Debian's `chromium`), not a Python
dependency; it is looked up on PATH and its own messages are kept out of the console.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

# Names a Chromium binary goes by, in the order they are tried.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW_WIDTH = 1280
WINDOW_HEIGHT = 2000
TIMEOUT_S = 120


class ChromiumError(RuntimeError):
    """No Chromium is installed, or it drew no picture."""


def find_chromium() -> str | None:
    """The path of the first Chromium binary on PATH; None when there is none."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found is not None:
            return found
    return None


def screenshot(
    page_path: Path,
    png_path: Path,
    width: int = WINDOW_WIDTH,
    height: int = WINDOW_HEIGHT,
) -> Path:
    """Draw an HTML file with headless Chromium and write the window as a PNG.

    Args:
        page_path: The HTML page (the report is self-contained, so nothing is fetched).
        png_path: Where to write the picture; its folder is created.
        width: Window width in CSS pixels (one device pixel each).
        height: Window height: the page below it is cut off.

    Returns:
        `png_path`.

    Raises:
        ChromiumError: No Chromium is on PATH, or it failed or wrote no PNG.
    """
    chromium = find_chromium()
    if chromium is None:
        raise ChromiumError(
            f"no Chromium on PATH (tried {', '.join(CHROMIUM_NAMES)}); install Debian's "
            "`chromium` package"
        )
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.unlink(missing_ok=True)
    # A profile of its own, so that nothing is written to the user's home; no sandbox,
    # because CI runs as root, where Chromium refuses to start sandboxed.
    with tempfile.TemporaryDirectory() as profile:
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-background-networking",
            "--force-device-scale-factor=1",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={png_path}",
            Path(page_path).resolve().as_uri(),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as error:
            raise ChromiumError(f"{chromium} drew nothing in {TIMEOUT_S} s") from error
    if done.returncode != 0 or not png_path.is_file():
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise ChromiumError(f"{chromium} exited with {done.returncode} and no picture:\n{tail}")
    return png_path
