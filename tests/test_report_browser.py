"""report.html opened in a real browser (headless Chromium): structure rendered, page not blank."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_report import CLASSMAP, make_gallery, make_results

from seglab.report import ReportInfo, write_report

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium fully offline (no GPU, sandbox, network services or first-run UI)."""
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def rendered_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    browser = find_browser()
    if browser is None:
        pytest.skip(
            "no Chromium/Chrome binary on PATH (Debian: apt-get install chromium); "
            "the report's browser check needs one"
        )
    root = tmp_path_factory.mktemp("browser")
    results = make_results(root / "runs")
    files = write_report(
        results,
        CLASSMAP,
        root / "compare",
        gallery=make_gallery(results, count=3),
        info=ReportInfo(title="Browser check", data="folder:x"),
    )
    return browser, files.html


def test_dom_has_table_rows_plots_and_gallery(rendered_report: tuple[str, Path], tmp_path: Path):
    browser, html = rendered_report
    done = chromium(browser, tmp_path / "profile", "--dump-dom", html.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    table = re.search(r'<table class="comparison">(.*?)</table>', dom, re.S)
    assert table, "comparison table missing from the rendered DOM"
    body_rows = re.findall(r"<tr>\s*<td>", table.group(1))
    assert len(body_rows) == 3
    for label in ("fastnet", "midnet", "bignet"):
        assert label in table.group(1)
    plots = re.findall(r'<img class="plot" src="data:image/png;base64,', dom)
    assert len(plots) == 4
    gallery = re.findall(r'<img class="gallery-img" src="data:image/(?:png|jpeg);base64,', dom)
    assert len(gallery) == 3 * (2 + 3)


def test_screenshot_is_not_blank(rendered_report: tuple[str, Path], tmp_path: Path) -> None:
    browser, html = rendered_report
    shot = tmp_path / "report.png"
    done = chromium(
        browser,
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1280,2400",
        "--virtual-time-budget=3000",
        html.as_uri(),
    )
    assert shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2400, 1280)
    # Rendered text, plots and coloured masks: a blank or error page has a handful of colours.
    distinct = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert distinct > 500, f"only {distinct} distinct colours: the page looks blank"
    assert pixels.std() > 20
    # The header band is the report's dark header, i.e. our page and not an error page.
    assert pixels[20:60, :, :].mean() < 80
