"""A person's own images in a real browser: upload a zip of glyphs in the Train tab, see what the
model will see, train a few dozen steps, use the model, sample it in the Sample tab and check OOD
against its own held-out images.

Uses Debian's /usr/bin/chromium (Playwright never downloads a browser); skipped only when it is
missing on a developer machine, a failure under CI.
"""

from __future__ import annotations

import re

import pytest
from owndata import make_zip
from test_browser import step_of, wait_until

from ebm_play import ood

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(180)]
T = 30_000  # ms for each expectation: the first check of a model builds its reference energies


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    page.set_default_timeout(T)
    return page


def test_a_zip_of_glyphs_is_trained_on_sampled_and_judged_against_its_own_images(page, url, app, tmp_path):
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.locator("#train-start")).to_be_enabled()  # the page has its session id
    page.get_by_text("Your images").click()
    page.locator("#train-data-file input[type=file]").set_input_files(str(make_zip(tmp_path / "glyphs.zip", 6)))
    info = page.locator("#train-data-info")
    expect(info).to_contain_text("glyphs.zip: 18 images, 15 to train and 3 held out")
    expect(info).to_contain_text("3 classes")
    expect(page.locator("#train-data-preview img")).to_have_attribute("src", re.compile(r"\S+"))

    page.locator("#train-start").click()
    expect(page.locator("#train-log textarea")).to_have_value(re.compile("15 items from your images glyphs.zip"))
    wait_until(lambda: step_of(page) >= 30, 60, "a few dozen steps")
    page.locator("#train-stop").click()
    expect(page.locator("#train-status")).to_contain_text("Stopped")
    page.get_by_role("button", name="Use this model in the other tabs").click()
    expect(page.get_by_text("The other tabs now use")).to_contain_text("on glyphs.zip")

    page.get_by_role("tab", name="Sample").click()
    page.locator("#sample-run").click()
    expect(page.locator("#sample-grid img")).to_have_attribute("src", re.compile(r"\S+"))

    page.get_by_role("tab", name="OOD check").click()
    page.locator("#ood-model input").click()
    page.get_by_role("option", name="current model").click()
    page.locator("#ood-random").click()
    page.locator("#ood-run").click()
    verdict = page.locator("#ood-verdict")
    expect(verdict).to_contain_text("held-out images of glyphs.zip")
    assert re.search(r"higher than \d+(\.\d)?% of held-out images of glyphs\.zip", verdict.inner_text())
    page.locator("#ood-batch-run").click()
    expect(page.locator("#ood-batch-summary")).to_contain_text("against 3 held-out images of glyphs.zip")
    s = app.playground.sessions.all()
    mine = [x.trained for x in s if x.trained is not None and x.trained_label.endswith(" on glyphs.zip")]
    assert len(mine) == 1 and ood.scorer_for(mine[0]).reference_name == "held-out images of glyphs.zip"
