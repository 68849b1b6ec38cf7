"""The built book as a reader sees it: every chapter page rendered in headless Chromium.

Needs the HTML (`jupyter-book build .`) and Debian's `chromium`. Without them the tests skip, unless
``DEPTHMASK_BOOK_CHECK=1`` (set by `.ci/run`, which builds the book and installs Chromium first):
then a missing build or browser fails. Screenshots are kept in ``_build/screenshots/`` - look at them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
REQUIRED = os.environ.get("DEPTHMASK_BOOK_CHECK") == "1"
BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.slow  # a browser per page: seconds each
PAGES = sorted((HTML / "notebooks").glob("[0-9][0-9]_*.html")) + sorted((HTML / "book").glob("*.html"))


def _need(ok: bool, why: str) -> None:
    if not ok:
        (pytest.fail if REQUIRED else pytest.skip)(why)


class Page(HTMLParser):
    """What a test needs from a rendered page: images in cell outputs, error outputs, links and ids."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[set[str]] = []
        self.output_images, self.bad_outputs, self.links, self.ids = [], [], [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        if a.get("id"):
            self.ids.add(a["id"])
        inside = set().union(*self.stack) if self.stack else set()
        if tag == "img" and "cell_output" in inside:
            self.output_images.append(a.get("src", ""))
        if classes & {"stderr", "traceback", "error"} and ("cell_output" in inside or "output" in classes):
            self.bad_outputs.append(" ".join(sorted(classes)))
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag not in {"img", "br", "hr", "meta", "link", "input"}:
            self.stack.append(classes)

    def handle_endtag(self, tag):
        if tag not in {"img", "br", "hr", "meta", "link", "input"} and self.stack:
            self.stack.pop()


def _notebook_figures(path: Path) -> int:
    """Image outputs the chapter's committed notebook holds (what its page must show)."""
    import json

    cells = json.loads(path.read_text())["cells"]
    return sum(any(k.startswith("image/") for k in o.get("data", {}))
               for c in cells if not {"remove-output", "remove-cell"} & set(c.get("metadata", {}).get("tags", []))
               for o in c.get("outputs", []))


def _render(page: Path) -> Page:
    """The DOM after Chromium ran the page's scripts, parsed; also saves a full-width screenshot."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    base = [BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--virtual-time-budget=3000"]
    dom = subprocess.run(base + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    subprocess.run(base + [f"--screenshot={SHOTS / (page.stem + '.png')}", "--window-size=1280,2400", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    parsed = Page()
    parsed.feed(dom.stdout)
    return parsed


def test_the_book_was_built_and_a_browser_is_there():
    _need(bool(PAGES), f"no built book under {HTML}: run `jupyter-book build .`")
    _need(BROWSER is not None, "no chromium: `apt-get install chromium`")
    assert len([p for p in PAGES if p.parent.name == "notebooks"]) == 14


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_page_as_a_reader_sees_it(page):
    _need(BROWSER is not None, "no chromium: `apt-get install chromium`")
    dom = _render(page)
    assert not dom.bad_outputs, f"{page.name} shows error or stderr output: {dom.bad_outputs[:5]}"
    if page.parent.name == "notebooks":
        want = _notebook_figures(ROOT / "notebooks" / (page.stem + ".ipynb"))
        assert len(dom.output_images) == want, f"{page.name} shows {len(dom.output_images)} of its {want} figures"
        if page.stem[:2] != "00":
            assert want >= 1, f"{page.name}: a chapter without a single figure"
        for src in dom.output_images:
            if not src.startswith("data:"):
                assert (page.parent / unquote(src)).resolve().exists(), f"{page.name}: image {src} is missing"
    for href in dom.links:
        url = urlparse(href)
        if url.scheme or href.startswith(("mailto:", "javascript:")):
            continue
        target = (page.parent / unquote(url.path)).resolve() if url.path else page
        assert target.exists(), f"{page.name}: link {href} points to nothing"
        if url.fragment and target.suffix == ".html" and target == page:
            assert url.fragment in dom.ids, f"{page.name}: anchor #{url.fragment} is not on the page"
