"""In a real browser: a page address carries the Train tab's settings (TensorFlow Playground's
convention), the command box and the link follow them, and a bad value is a note, not an error.

Uses Debian's /usr/bin/chromium (Playwright never downloads a browser here)."""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(90)]


def test_a_page_address_opens_the_train_tab_with_its_settings(browser, url):
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)  # the first load of a fresh server on a shared machine
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    page.set_default_timeout(20_000)
    page.goto(url.rstrip("/") + "/?tab=train&preset=fast&lr=0.002&steps=300")
    command = page.locator("#train-command .cm-content")
    expect(page.get_by_label("Learning rate")).to_have_value("0.002")
    expect(command).to_contain_text("--preset fast --lr 0.002 --steps 300")
    expect(page.get_by_label("Batch size")).to_have_value("64")
    link = page.locator("#train-link textarea")
    expect(link).to_have_value(re.compile(r"^http://127\.0\.0\.1:\d+/\?tab=train&preset=fast&model=cnn&lr=0\.002&steps=300$"))

    page.get_by_label("Learning rate").fill("0.003")  # the command follows the form
    expect(command).to_contain_text("--lr 0.003")

    page.goto(url.rstrip("/") + "/?tab=train&preset=dsm&lr=abc")  # a bad value: left out, with a note
    expect(page.locator("#train-address-note")).to_contain_text("setting lr: expected a finite number, got 'abc': ignored")
    expect(page.get_by_label("Denoising score matching (DSM)")).to_be_checked()
    expect(command).to_contain_text("--preset dsm --fresh-steps 1000 --steps 1000")  # as Start sets it
    page.close()


def test_points_uploaded_as_csv_become_the_landscape_data_set(browser, url, tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)
    f = tmp_path / "line.csv"
    f.write_text("x,y\n" + "".join(f"{i},{2 * i}\n" for i in range(40)))
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    page.set_default_timeout(20_000)
    page.goto(url.rstrip("/") + "/?tab=landscape&dataset=rings&lr=0.01")  # Play's settings from the address
    command = page.locator("#landscape-command .cm-content")
    expect(command).to_contain_text("--preset landscape --data rings")
    expect(command).to_contain_text("--lr 0.01")
    page.get_by_text("My points as a CSV file").click()
    page.locator("#landscape-points-file input[type=file]").set_input_files(str(f))
    expect(page.get_by_text("line.csv, 40 points, shifted by")).to_be_visible()
    expect(command).to_contain_text("--data my-points.csv")  # the data set is now "My points"
    expect(page.locator("#landscape-dataset input")).to_have_value("My points (clicked or uploaded)")
    page.close()
