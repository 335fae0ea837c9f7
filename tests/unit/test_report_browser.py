"""The HTML report in a real headless browser (Debian's chromium): it renders, its figures show, and
the page logs nothing to the console.

The fixture finds chromium or installs it (tests/unit/headless_chromium.py: apt-get as root);
where it cannot, the tests skip with the command to run, except under CI=true, where they fail.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import headless_chromium
from analysis.report import write_report
from analysis.study import StudyOptions
from early_stop_rows import early_stopped_rows

WIDTH, HEIGHT = 1280, 2400
FIT_RED = np.array([214, 39, 40])  # matplotlib's tab:red, the fitted curve in the main figure


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        return headless_chromium.ensure_chromium()
    except (headless_chromium.BrowserMissing, OSError) as exc:
        if headless_chromium.in_ci():
            pytest.fail(f"CI=true and no headless chromium for the report's browser test: {exc}", pytrace=False)
        pytest.skip(f"no headless chromium: {exc}")


@pytest.mark.slow  # ~20 s on 2 cores: the full study, then two chromium loads
def test_report_renders_with_its_figures_and_no_console_messages(tmp_path: Path, chromium: str) -> None:
    paths = write_report(tmp_path / "report", early_stopped_rows(), metric="ndcg@10", higher_is_better=True,
                         flops_convention="exact HSTU count", title="early-stopped sweep", n_bootstrap=60,
                         options=StudyOptions(backtest_bootstrap=20))
    page = headless_chromium.render(chromium, paths.report_html, tmp_path / "shot.png", width=WIDTH, height=HEIGHT)

    assert page.console == [], page.console  # the report has no script: any console message is a fault
    assert page.console_errors == []
    assert re.search(r"<div class=\"verdict [a-z-]+\" id=\"verdict\">[^<]{20,}</div>", page.dom)
    srcs = re.findall(r"<img [^>]*src=\"([^\"]{0,30})", page.dom)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)  # self-contained

    with Image.open(page.screenshot) as img:
        assert img.size == (WIDTH, HEIGHT)
        rgb = np.asarray(img.convert("RGB")).reshape(-1, 3)
    colours = np.unique(rgb, axis=0)
    assert len(colours) > 500, f"only {len(colours)} distinct colours: a blank or text-only page"
    # The main figure's fitted curve is drawn in tab:red: only a decoded, displayed PNG has those pixels.
    red = int(np.sum(np.all(np.abs(rgb.astype(int) - FIT_RED) <= 12, axis=1)))
    assert red > 200, f"{red} pixels of the fitted curve's colour: the figure did not render"


def test_console_errors_are_detected(tmp_path: Path, chromium: str) -> None:
    """The check above can fail: a page with a script error and a console.error is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p>"
                   "<script>console.error('boom'); undefinedFunction();</script></body></html>")
    page = headless_chromium.render(chromium, bad, tmp_path / "bad.png", width=400, height=300)
    assert any("boom" in m for m in page.console)
    assert any("Uncaught ReferenceError: undefinedFunction is not defined" in m for m in page.console_errors)
