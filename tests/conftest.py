"""App fixtures: one real server per test session, on a free localhost port."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the test server


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts a server or trains (seconds, not milliseconds)")
    config.addinivalue_line("markers", "browser: drives Chromium through Playwright")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app():
    """The app built by ``build_app()``, launched in a background thread; closed at the end."""
    from ui.app import build_app
    from ui.common import launch_style

    demo = build_app(device="cpu", max_runs=2)
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                        **launch_style())
    yield demo
    demo.registry.stop_all()
    from ui import landscape_tab

    for manager in landscape_tab.MANAGERS:
        manager.stop_all()
    demo.close()


@pytest.fixture(scope="session")
def url(app) -> str:
    return app.local_url


@pytest.fixture(scope="session")
def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)
