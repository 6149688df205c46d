"""End to end in a real browser: run a short chain in the Sample tab and scrub it with the step
slider; load a recipe in the Compose tab and run it. Saves docs/sample_tab.png and docs/compose_tab.png.

Uses Debian's /usr/bin/chromium (Playwright never downloads a browser here); skipped only when it is
missing on a developer machine, a failure under CI (env CI set).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.set_default_timeout(30_000)
    return page


def settle(page, locator, value: str, timeout: float = 20):
    """Fill an input and keep it filled until the page's initial refresh has passed."""
    deadline = time.monotonic() + timeout
    locator.fill(value)
    stable_since = time.monotonic()
    while time.monotonic() - stable_since < 1.5:
        assert time.monotonic() < deadline, "the field kept changing"
        time.sleep(0.25)
        if locator.input_value() != value:
            locator.fill(value)
            stable_since = time.monotonic()


def test_sample_scrub_then_compose_a_recipe(page, url, app):
    from playwright.sync_api import expect

    page.goto(url + "?tab=sample")
    status = page.locator("#sample-status")
    expect(page.locator("#train-start")).to_be_enabled(timeout=30_000)  # the page has its session id
    settle(page, page.locator("#sample-steps input"), "100")  # after the refresh of the recommended settings
    page.locator("#sample-run").click()
    expect(status).to_contain_text("done", timeout=60_000)
    expect(page.locator("#sample-gif")).to_be_visible(timeout=30_000)  # downloads appear when the files are ready
    expect(status).to_contain_text("step 100 of 100")
    grid = page.locator("#sample-grid img")
    final_src = grid.get_attribute("src")

    # Scrub back to the start, then a little forward: the grid shows the recorded frames.
    slider = page.locator("#sample-step input[type=range]")
    expect(slider).to_be_enabled()
    slider.fill("0")
    expect(status).to_contain_text("frame 1 of 60 · step 0")
    expect(grid).not_to_have_attribute("src", final_src)
    slider.fill("50")
    expect(status).to_contain_text(re.compile(r"frame (29|30|31) of 60 · step (49|50|51) "))

    # Play runs through the frames on a timer; pause stops it.
    page.locator("#sample-play").click()
    expect(status).to_contain_text(re.compile(r"frame (3[2-9]|[45]\d|60) of 60"))  # it moved on
    page.locator("#sample-pause").click()
    time.sleep(1.0)  # a tick already on its way may still land
    slider.fill("100")
    expect(status).to_contain_text("frame 60 of 60 · step 100")
    time.sleep(0.5)
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "sample_tab.png"), full_page=True)

    # Compose: a recipe loads the experts in one click and shows its cached result; then run it live.
    page.get_by_role("tab", name="Compose").click()
    recipes = page.locator("#compose-recipes")
    expect(recipes).to_be_visible()
    first = recipes.get_by_role("button").first
    name = first.inner_text().strip()
    first.click()
    compose_status = page.locator("#compose-status")
    expect(compose_status).to_contain_text("Cached result of this recipe", timeout=60_000)
    settle(page, page.locator("#compose-steps input"), "60")  # a shorter live run than the recipe's
    page.locator("#compose-run").click()
    expect(compose_status).to_contain_text("done", timeout=60_000)
    expect(page.locator("#compose-terms g.mark-line path").first).to_have_attribute("d", re.compile(r"\S{20,}"))
    expect(page.locator("#compose-gif")).to_be_visible(timeout=30_000)
    assert name
    time.sleep(0.5)
    page.screenshot(path=str(DOCS / "compose_tab.png"), full_page=True)
