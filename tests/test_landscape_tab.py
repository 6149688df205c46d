"""The Landscape tab through its API: a real server (conftest) driven by gradio_client."""

from __future__ import annotations

import functools
import math
import time

import pytest
import test_app
from gradio_client.exceptions import AppError
from PIL import Image
from test_app import new_session

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ENDPOINTS = {"/landscape_train_start", "/landscape_status", "/landscape_pause", "/landscape_step",
             "/landscape_reset", "/landscape_sample", "/landscape_compose", "/landscape_gif"}


status = functools.partial(test_app.status, api_name="/landscape_status")
wait_for = functools.partial(test_app.wait_for, api_name="/landscape_status")


@pytest.fixture
def sessions(client):
    """Sessions listed here get their landscape run reset after the test (runs cost a core each)."""
    sids: list[str] = []
    yield sids
    for sid in sids:
        try:
            client.predict(sid, True, api_name="/landscape_reset")
        except AppError:
            pass


def test_every_landscape_action_has_a_named_endpoint(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert ENDPOINTS <= set(api["named_endpoints"])
    start = api["named_endpoints"]["/landscape_train_start"]["parameters"]
    assert [p["parameter_name"] for p in start][:3] == ["session", "dataset", "lr"]


def test_train_pause_step_play_reset(client, sessions):
    sid = new_session()
    sessions.append(sid)
    assert status(client, sid)["state"] == "none"
    st = client.predict(sid, "two_moons", api_name="/landscape_train_start")
    assert st["state"] == "running" and st["dataset"] == "two_moons" and st["points"] == 2000
    st = wait_for(client, sid, lambda s: s["step"] >= 20 and s["view_version"] >= 5)
    assert math.isfinite(st["last"]["loss"]) and 0 <= st["fit"]["precision"] <= 1

    time.sleep(2.0)  # the worker republishes the grids several times a second while it trains
    st = status(client, sid)
    print(f"worker: {st['steps_per_s']} steps/s, grids republished {st['updates_per_s']} times/s")
    assert st["updates_per_s"] >= 3, st["updates_per_s"]  # ~6/s: every 0.15 s, plus a step

    st = client.predict(sid, api_name="/landscape_pause")
    assert st["state"] == "paused"
    at = st["step"]
    time.sleep(0.3)
    assert status(client, sid)["step"] == at

    st = client.predict(sid, "two_moons", steps=3, api_name="/landscape_step")
    assert st["step"] == at + 3 and st["state"] == "paused"
    with pytest.raises(AppError, match="not running: nothing to pause"):
        client.predict(sid, api_name="/landscape_pause")

    # Play with a new learning rate and noise: the same run (same step count) takes them on the fly
    st = client.predict(sid, "two_moons", lr=1e-3, noise=0.05, api_name="/landscape_train_start")
    assert st["run"] and st["state"] == "running" and st["step"] >= at + 3
    assert st["config"]["lr"] == 1e-3 and st["config"]["noise"] == 0.05
    assert any("settings" in line for line in st["log"])
    run_id = st["run"]
    # a new data set (or model size) is a new run
    st = client.predict(sid, "rings", api_name="/landscape_train_start")
    assert st["run"] != run_id and st["dataset"] == "rings"

    st = client.predict(sid, api_name="/landscape_reset")
    assert st["state"] == "none"
    assert status(client, sid)["state"] == "none"


def test_train_on_points_given_through_the_api(client, sessions):
    sid = new_session()
    sessions.append(sid)
    with pytest.raises(AppError, match="no points yet"):
        client.predict(sid, "custom", api_name="/landscape_step")
    pts = [[-0.5 + 0.01 * i, 0.5] for i in range(20)] + [[0.5, -0.5 + 0.01 * i] for i in range(20)]
    st = client.predict(sid, "custom", points=pts, steps=5, api_name="/landscape_step")
    assert st["state"] == "paused" and st["step"] == 5 and st["points"] == 40 and st["custom_points"] == 40
    with pytest.raises(AppError, match="square"):
        client.predict(sid, "custom", points=[[0, 3]], api_name="/landscape_step")


def test_bad_input_gives_a_clear_error(client):
    sid = new_session()
    with pytest.raises(AppError, match="learning rate must be between"):
        client.predict(sid, "two_moons", lr=-1, api_name="/landscape_train_start")
    with pytest.raises(AppError, match="Langevin steps must be between 0 and 200"):
        client.predict(sid, "two_moons", sampler_steps=10_000, api_name="/landscape_train_start")
    with pytest.raises(AppError, match="unknown data set"):
        client.predict(sid, "mnist", api_name="/landscape_train_start")
    with pytest.raises(AppError, match="no landscape run"):
        client.predict(sid, api_name="/landscape_pause")
    with pytest.raises(AppError, match="session"):
        client.predict("x", api_name="/landscape_status")
    with pytest.raises(AppError, match="chains must be between 1 and 1000"):
        client.predict(sid, "ring", chains=5000, api_name="/landscape_sample")
    with pytest.raises(AppError, match="unknown sampler 'gibbs' for sampler A"):
        client.predict(sid, "ring", sampler_a="gibbs", api_name="/landscape_sample")
    with pytest.raises(AppError, match="no trained landscape"):
        client.predict(sid, "trained", api_name="/landscape_sample")
    with pytest.raises(AppError, match="no composed landscape"):
        client.predict(sid, "composed", api_name="/landscape_sample")
    with pytest.raises(AppError, match="weight 1 must be between"):
        client.predict(sid, "ring", 50, api_name="/landscape_compose")
    with pytest.raises(AppError, match="no sampling run"):
        client.predict(sid, "sampling", api_name="/landscape_gif")


def test_two_samplers_side_by_side_on_the_double_well(client):
    """MALA at T = 1 stays in the well it starts in; annealed MALA reaches both; the GIF animates it."""
    sid = new_session()
    job = client.submit(sid, "double_well", "mala", 0.005, None, 1.0, "annealed", 0.005, None, 1.0, 600, 300, 0,
                        "first_mode", 20.0, api_name="/landscape_sample")
    img_a, img_b, table, result = job.result(timeout=90)
    assert len(job.outputs()) >= 2  # streamed frames before the final one
    assert Image.open(img_a).size == Image.open(img_b).size == (400, 400)
    a, b = result["samplers"]
    assert a["sampler"] == "mala" and b["sampler"] == "annealed" and result["modes"] == 2
    assert a["mode_share"][1] < 0.05 and b["mode_share"][0] > 0.25 and b["mode_share"][1] > 0.25
    assert b["chains_hopped"] > a["chains_hopped"] and 0.5 < a["accept_rate"] <= 1
    assert {"accept", "mode shares", "chains that hopped"} <= set(table["headers"])

    gif = client.predict(sid, "sampling", api_name="/landscape_gif")
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames > 10 and im.width > im.height  # A and B side by side


def test_compose_then_sample_the_product_of_experts(client, sessions):
    sid = new_session()
    sessions.append(sid)
    img, info = client.predict(sid, "ring", 1.0, "half_plane_up", 1.0, "none", 1.0, api_name="/landscape_compose")
    assert info["composed"] == "1×Ring + 1×Half-plane y > 0" and len(info["terms"]) == 2
    with Image.open(img) as im:
        assert im.width > 2 * im.height  # two terms and their sum
    *_, result = client.predict(sid, "composed", "ula", 0.002, None, 1.0, "none", None, None, None, 200, 100, 0,
                                "uniform", 20.0, api_name="/landscape_sample")
    assert len(result["samplers"]) == 1 and result["landscape"].startswith("composed")
    # a trained landscape composes too, with a negative weight
    client.predict(sid, "gaussians8", steps=5, api_name="/landscape_step")
    _, info = client.predict(sid, "trained", 1.0, "ring", -0.5, "none", 1.0, api_name="/landscape_compose")
    assert "− 0.5×Ring" in info["composed"]


def test_training_gif(client, sessions):
    sid = new_session()
    sessions.append(sid)
    with pytest.raises(AppError, match="no training run"):
        client.predict(sid, "training", api_name="/landscape_gif")
    for _ in range(3):
        client.predict(sid, "spiral", steps=10, api_name="/landscape_step")
    gif = client.predict(sid, "training", api_name="/landscape_gif")
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames >= 3
