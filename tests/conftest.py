"""App fixtures: one real server per test session, on a free localhost port."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the test server

# Everything the tests, the app, gradio_client (an empty folder per download) and Chromium write
# to the temp directory goes to one folder, removed at the end instead of piling up in /tmp.
TMP = tempfile.mkdtemp(prefix="ebm-play-tests-")
os.environ["TMPDIR"] = tempfile.tempdir = TMP
os.environ["GRADIO_TEMP_DIR"] = os.path.join(TMP, "gradio")


CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright never downloads a browser here
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts a server or trains (seconds, not milliseconds)")
    config.addinivalue_line("markers", "browser: drives Chromium through Playwright")


def pytest_unconfigure(config):
    shutil.rmtree(TMP, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Browser tests skip only where Chromium is missing on a developer machine; under CI (env CI
    set) a missing browser is a failure."""
    if os.path.exists(CHROMIUM) or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason=f"{CHROMIUM} not installed (required under CI)")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def browser():
    """A headless Chromium for one test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg():
    """A playground of the shipped models for a module's endpoint tests (no server); its runs stop after."""
    from ebm_play.playground import Playground

    p = Playground("cpu")
    yield p
    p.stop_all()


@pytest.fixture(scope="session")
def app():
    """The app built by ``build_app()``, launched in a background thread; closed at the end."""
    from ui.app import build_app, launch_options

    demo = build_app(device="cpu", max_runs=2)
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                        **launch_options(demo))
    yield demo
    demo.playground.data()  # wait for the MNIST warm-up thread: torch exiting under a daemon thread aborts
    demo.playground.stop_all()
    demo.close()


@pytest.fixture(scope="session")
def url(app) -> str:
    return app.local_url


@pytest.fixture(scope="session")
def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)
