"""The drawing tabs in a real browser: draw on the pad, classify, check OOD, inpaint with a painted
mask, denoise a test digit. Saves docs/draw_*.png (shown in the README).

Slow by nature here: with --disable-gpu, Chromium renders the editor's canvas in software, and the
pad exports its pictures after every stroke, which takes seconds on a busy 2-core machine. So each
test draws as few strokes as it can.

Uses Debian's /usr/bin/chromium (Playwright never downloads a browser); skipped only when it is
missing on a developer machine, a failure under CI.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from pads import MASK, SEVEN, stroke

DOCS = Path(__file__).resolve().parent.parent / "docs"

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(180)]

T = 30_000  # ms for each expectation: the first request of a tab builds its model's reference energies


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(30_000)
    return page


def src(page, selector: str) -> str:
    loc = page.locator(f"{selector} img")
    return (loc.first.get_attribute("src") or "") if loc.count() else ""


def wait_until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def settle(page, selector: str, quiet: float = 1.5, timeout: float = 20) -> None:
    """Wait until the picture in ``selector`` is set and has not changed for ``quiet`` seconds (the
    pad sends a few events per stroke; the last one wins)."""
    wait_until(lambda: src(page, selector), timeout, f"a picture in {selector}")
    last, since = src(page, selector), time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"{selector} kept changing"
        time.sleep(0.2)
        now = src(page, selector)
        if now != last:
            last, since = now, time.monotonic()


def json_of(page, selector: str) -> dict:
    text = page.locator(selector).inner_text()
    start = text.find("{")
    return json.loads(text[start:]) if start >= 0 else {}


def test_classify_and_ood_check_of_a_drawing(page, url):
    from playwright.sync_api import expect

    DOCS.mkdir(exist_ok=True)

    # Classify: draw a 7, see what the model sees, get p(y|x) and an answer
    page.goto(url + "?tab=classify")
    stroke(page, "#classify-pad", SEVEN)
    settle(page, "#classify-preview")
    expect(page.locator("#classify-note")).to_contain_text("your drawing", timeout=T)
    page.locator("#classify-run").click()
    expect(page.locator("#classify-answer")).to_contain_text(re.compile(r"p = \d"), timeout=T)
    answer = page.locator("#classify-answer h1").inner_text()
    assert re.fullmatch(r"\d|I don't know|probably \d", answer.strip()), answer
    expect(page.locator("#classify-probs canvas, #classify-probs svg").first).to_be_visible(timeout=T)
    time.sleep(1)
    page.screenshot(path=str(DOCS / "draw_classify.png"), full_page=True)

    # OOD check: an hourglass scribble; then the batch AUROC of a built-in set
    page.get_by_role("tab", name="OOD check").click()
    stroke(page, "#ood-pad", [(0.2, 0.2), (0.8, 0.8), (0.8, 0.2), (0.2, 0.8), (0.2, 0.2)])  # an hourglass
    settle(page, "#ood-preview")
    page.locator("#ood-run").click()
    expect(page.locator("#ood-verdict")).to_contain_text("distribution", timeout=T)
    expect(page.locator("#ood-verdict")).to_contain_text("higher than", timeout=T)
    page.locator("#ood-batch-run").click()
    expect(page.locator("#ood-batch-summary")).to_contain_text("AUROC", timeout=T)
    settle(page, "#ood-batch-grid", quiet=0.5)
    time.sleep(1)
    page.screenshot(path=str(DOCS / "draw_ood.png"), full_page=True)



def test_inpaint_with_a_painted_mask_and_denoise_a_test_digit(page, url):
    from playwright.sync_api import expect

    DOCS.mkdir(exist_ok=True)
    # Inpaint: a random test digit (the other test draws on pads), a mask painted over its lower part, filled in
    page.goto(url + "?tab=inpaint")
    page.locator("#inpaint-random").click()
    expect(page.locator("#inpaint-note")).to_contain_text("test digit #", timeout=T)
    settle(page, "#inpaint-preview", quiet=1.0)
    def result_text() -> str:
        return page.locator("#inpaint-result").inner_text()

    for _attempt in range(3):  # a late pad event can reset the mask pad under the stroke: then paint again
        stroke(page, "#inpaint-mask", MASK)
        page.locator("#inpaint-run").click()
        time.sleep(1)  # an error badge from the last attempt goes when the new run starts
        wait_until(lambda: "kept_exactly" in result_text() or "Error" in result_text(), 90, "the fills or an error")
        if "kept_exactly" in result_text():
            break
        body = page.inner_text("body")
        assert re.search("the mask is empty|no mask:", body), "inpaint failed: " + body[body.find("Error"):][:300]
    settle(page, "#inpaint-strip", quiet=0.5)
    result = json_of(page, "#inpaint-result")
    assert result["kept_exactly"] is True and result["input"].startswith("test digit #")
    assert 0 < result["erased_pixels"] < 784 and len(result["energy"]) == 4
    time.sleep(1)
    page.screenshot(path=str(DOCS / "draw_inpaint.png"), full_page=True)

    # Denoise: a random test digit, Gaussian noise, restored
    page.get_by_role("tab", name="Denoise").click()
    page.locator("#denoise-random").click()
    expect(page.locator("#denoise-note")).to_contain_text("test digit #", timeout=T)
    page.locator("#denoise-run").click()
    expect(page.locator("#denoise-summary")).to_contain_text("Distance to the clean image", timeout=60_000)
    settle(page, "#denoise-images", quiet=0.5)
    time.sleep(1)
    page.screenshot(path=str(DOCS / "draw_denoise.png"), full_page=True)
