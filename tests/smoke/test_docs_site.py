"""The documentation site builds, strict, and renders in a real browser.

``scripts/docs --site-dir`` builds it (installing the docs extra into
``.venv-docs`` on its first run); a local HTTP server on 127.0.0.1 serves
it; headless Chromium (Debian's ``chromium`` package) renders the home page,
the tutorial and the configuration reference to screenshots and dumps each
page's DOM after its scripts ran, which must show the page's heading, the
site's navigation and, for the references, what was generated from the code
(not a blank page, an error page or a marker left unexpanded). Without
Chromium the browser test is skipped, saying how to get it.

The screenshots are kept in the test's temporary folder (pytest prints
nothing about it; ``--basetemp`` chooses it).
"""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

#: The first build installs the docs extra into .venv-docs (half a minute
#: from a warm cache; more from a cold one).
pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]
PAGES = {
    # name: (path, its heading, text the page must show)
    "home": ("", "rochallor-sdk", "A supervisor in five minutes"),
    "tutorial": (
        "tutorial/",
        "Tutorial: from a first handler to a supervised pipeline",
        "tutorial_handlers.py",
    ),
    "config": ("config/", "Configuration reference", "supervisor.max_memory_hard_mb"),
}


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [str(ROOT / "scripts" / "docs"), "--site-dir", str(target)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"scripts/docs failed:\n{result.stdout}\n{result.stderr}"
    return target


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_site_builds_with_the_generated_references(site: Path) -> None:
    config = (site / "config" / "index.html").read_text()
    assert 'id="supervisor-workers"' in config
    metrics = (site / "metrics" / "index.html").read_text()
    assert "workflow_supervisor_worker_restarts_total" in metrics
    cli = (site / "cli" / "index.html").read_text()
    assert "--config" in cli
    for page in site.rglob("*.html"):
        assert "<!-- reference:" not in page.read_text(), page


def browse(browser: str, url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="docs-chromium-") as profile:
        return subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=5000",
                *arguments,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.mark.parametrize("name", sorted(PAGES))
def test_page_renders_in_chromium(name: str, served: str, tmp_path: Path) -> None:
    browser = chromium()
    if browser is None:
        pytest.skip("Chromium is not installed: apt-get install -y chromium (Debian's package)")
    path, heading, text = PAGES[name]
    url = served + path

    dom = browse(browser, url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    html = dom.stdout
    assert f">{heading}" in html, f"{name}: no heading {heading!r}"
    assert text in html, f"{name}: {text!r} is missing"
    # The navigation is there, with every part of the site.
    assert 'class="md-nav' in html
    for part in ("Tutorial", "How-to guides", "Reference", "Explanation", "Configuration"):
        assert part in html, f"{name}: the navigation lacks {part!r}"
    assert "404 - Not found" not in html

    shot = tmp_path / f"{name}.png"
    result = browse(browser, url, f"--screenshot={shot}", "--window-size=1280,1600")
    assert result.returncode == 0, result.stderr
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert not_blank(shot), f"{shot} looks blank"


def not_blank(png: Path) -> bool:
    """More than a handful of colours (a blank or error page has few)."""
    try:
        from PIL import Image  # noqa: PLC0415 - the ml extra; optional here
    except ImportError:
        return png.stat().st_size > 20_000
    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    return colours is None or len(colours) > 50
