"""The app through its API: a real server (conftest) driven by gradio_client, as a user script would."""

from __future__ import annotations

import math
import secrets
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import ebm_play
from ebm_play.models import IMAGE_ENERGIES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

ENDPOINTS = {"/sample", "/score", "/train_start", "/train_status", "/train_pause", "/train_resume", "/train_step",
             "/train_stop", "/train_save", "/train_use"}
# Tiny on purpose: ~100 steps/s on one core, so a run visibly advances within a second.
TINY = dict(kind="cnn", width=4, digits=[0, 1], batch_size=8, sampler_steps=2, step_size=10.0, noise=0.005,
            alpha=0.1, lr=1e-3, buffer_size=32, reinit=0.05, seed=0, fresh_every=20, fresh_steps=2, max_steps=0)


def new_session() -> str:
    return "test-" + secrets.token_hex(6)


def status(client, sid, api_name="/train_status") -> dict:
    return client.predict(sid, api_name=api_name)


def wait_for(client, sid, ok, timeout=20.0, api_name="/train_status") -> dict:
    """Poll a status endpoint until ``ok(status)`` (the way the page's timer does)."""
    deadline = time.monotonic() + timeout
    while True:
        st = status(client, sid, api_name)
        if ok(st):
            return st
        assert time.monotonic() < deadline, f"timed out waiting; last status {st}"
        time.sleep(0.1)


@pytest.fixture
def stopper(client):
    """Sessions registered here get their run stopped after the test, pass or fail (the cap is global)."""
    sessions: list[str] = []
    yield sessions
    for sid in sessions:
        try:
            client.predict(sid, api_name="/train_stop")
        except AppError:
            pass


def test_page_is_served_quickly(url):
    t = time.monotonic()
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200 and "ebm_play" in r.text
    assert time.monotonic() - t < 5


def test_every_action_has_a_named_endpoint(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert ENDPOINTS <= set(api["named_endpoints"])
    start = api["named_endpoints"]["/train_start"]["parameters"]
    assert [p["parameter_name"] for p in start][:3] == ["session", "kind", "width"]


def test_untrained_banner_when_no_energy_model_is_shipped(monkeypatch, tmp_path):
    from ui.app import build_app

    monkeypatch.setattr(ebm_play.weights, "WEIGHTS_DIR", tmp_path)  # an empty weights folder
    demo = build_app(device="cpu")
    assert demo.playground.untrained and list(demo.playground.models) == ["random (untrained)"]
    texts = [getattr(b, "value", "") or "" for b in demo.blocks.values()]
    assert any("untrained random model" in str(t) for t in texts)


def test_the_playground_removes_its_download_folder(monkeypatch, tmp_path):
    import gc

    from ebm_play.playground import Playground

    monkeypatch.setattr(ebm_play.weights, "WEIGHTS_DIR", tmp_path)  # quick: no models to load
    pg = Playground("cpu")
    folder = Path(pg.tmp)
    (folder / "model.safetensors").write_bytes(b"saved for download")
    del pg
    gc.collect()
    assert not folder.exists()


def test_shipped_energy_models_are_offered(app):
    kinds = {m.kind for m in app.playground.models.values()}
    assert kinds <= set(IMAGE_ENERGIES)  # helpers in weights/ (the evaluation classifier) are not offered
    assert app.playground.untrained == (not set(app.playground.models) - {"random (untrained)"})


def test_training_run_lifecycle(client, stopper, tmp_path):
    sid = new_session()
    stopper.append(sid)
    st = client.predict(sid, **TINY, api_name="/train_start")
    assert st["state"] in ("starting", "running") and st["config"]["classes"] == [0, 1]

    st = wait_for(client, sid, lambda s: s["step"] >= 3)  # the worker advances on its own
    assert st["last"]["step"] >= 3 and math.isfinite(st["last"]["loss"])
    st = wait_for(client, sid, lambda s: s["quality"] is not None)  # fresh samples judged by the classifier
    assert 0 <= st["quality"]["confident"] <= 1 and 0 <= st["quality"]["coverage"] <= 1

    st = client.predict(sid, api_name="/train_pause")
    assert st["state"] == "paused"
    # (an update already past its last check may still land: the log names the step it stopped at)
    st = wait_for(client, sid, lambda s: any("paused at step" in line for line in s["log"]))
    paused_at = st["step"]
    time.sleep(0.3)
    assert status(client, sid)["step"] == paused_at  # really paused

    st = client.predict(sid, api_name="/train_step")  # answered at once; the run takes the step meanwhile
    assert st["state"] == "paused" and st["step"] in (paused_at, paused_at + 1)
    st = wait_for(client, sid, lambda s: s["step"] == paused_at + 1)
    assert st["last"]["step"] == paused_at + 1 and st["state"] == "paused" and st["pending_steps"] == 0

    assert client.predict(sid, api_name="/train_resume")["state"] == "running"
    wait_for(client, sid, lambda s: s["step"] > paused_at + 3)

    st = client.predict(sid, api_name="/train_stop")
    assert st["state"] == "stopped"
    st = wait_for(client, sid, lambda s: any("stopped at step" in line for line in s["log"]))
    final = st["step"]
    time.sleep(0.3)
    assert status(client, sid)["step"] == final
    with pytest.raises(AppError, match="already stopped"):
        client.predict(sid, api_name="/train_stop")

    path = client.predict(sid, api_name="/train_save")
    assert path.endswith(".safetensors")
    model = ebm_play.load_model(path)
    assert model.kind == "cnn" and model.config["width"] == 4
    assert model.info["train_steps"] == final
    assert model.info["samplers"]["langevin"]["steps"] == TINY["fresh_steps"]  # the Sample tab's default

    msg = client.predict(sid, api_name="/train_use")
    assert "trained in this session" in msg
    image, _plot, result = client.predict(sid, "langevin", 5, None, None, None, 4, 0, api_name="/sample")
    assert result["model"].startswith("trained in this session")
    assert len(result["energy"]) == 4 and all(math.isfinite(e) for e in result["energy"])
    with Image.open(image) as im:
        assert im.width > 28 and im.height > 28


def test_sample_streams_frames_and_returns_final_grid(client):
    job = client.submit(None, "langevin", 300, None, None, None, 16, 1, api_name="/sample")
    image, plot, result = job.result(timeout=60)
    assert len(job.outputs()) >= 2  # intermediate frames, then the final grid
    assert result["steps"] == 300 and len(result["energy"]) == 16
    assert Image.open(image).size[0] > 100
    assert plot is not None


def test_score_a_digit(client, tmp_path):
    png = tmp_path / "digit.png"
    ebm_play.images.grid(ebm_play.sample_digits(train=False).x[:1], 1, scale=4).save(png)
    energy, preview, note = client.predict(None, handle_file(str(png)), api_name="/score")
    assert math.isfinite(energy) and "real test digits" in note
    assert Image.open(preview).size[0] >= 28


def test_bad_input_gives_a_clear_error(client, tmp_path):
    with pytest.raises(AppError, match="steps must be between 0 and"):
        client.predict(None, "langevin", -5, None, None, None, 4, 0, api_name="/sample")
    with pytest.raises(AppError, match="Gibbs sampling needs an RBM"):
        client.predict(None, "gibbs", 5, None, None, None, 4, 0, api_name="/sample")
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    with pytest.raises(AppError, match="not an image"):
        client.predict(None, handle_file(str(text)), api_name="/score")
    sid = new_session()
    with pytest.raises(AppError, match="learning rate must be"):
        client.predict(sid, **{**TINY, "lr": -1}, api_name="/train_start")
    with pytest.raises(AppError, match="at least one digit"):
        client.predict(sid, **{**TINY, "digits": []}, api_name="/train_start")
    with pytest.raises(AppError, match="Langevin steps must be between 0 and"):
        client.predict(sid, **{**TINY, "sampler_steps": -1}, api_name="/train_start")
    with pytest.raises(AppError, match="no training run"):
        client.predict(sid, api_name="/train_pause")
    with pytest.raises(AppError, match="session"):
        client.predict("x", api_name="/train_status")


def test_resume_from_uploaded_weights(client, stopper, tmp_path):
    good = ebm_play.save_model(ebm_play.CNNEnergy(width=6), tmp_path / "mine.safetensors", {"train_steps": 7})
    sid = new_session()
    stopper.append(sid)
    st = client.predict(sid, **{**TINY, "resume": handle_file(str(good))}, api_name="/train_start")
    assert st["resumed_from"] == "mine.safetensors" and st["config"]["width"] == 6  # the file's width wins
    client.predict(sid, api_name="/train_stop")

    rbm = ebm_play.save_model(ebm_play.RBM(hidden=8), tmp_path / "rbm.safetensors")
    with pytest.raises(AppError, match="rbm model, but the run trains cnn"):
        client.predict(sid, **{**TINY, "resume": handle_file(str(rbm))}, api_name="/train_start")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"definitely not a model")
    with pytest.raises(AppError, match="junk.safetensors"):
        client.predict(sid, **{**TINY, "resume": handle_file(str(junk))}, api_name="/train_start")


def test_one_run_per_session_and_a_server_cap(client, stopper, app):
    assert app.playground.limits.running == 2
    a, b, c = new_session(), new_session(), new_session()
    stopper += [a, b, c]
    client.predict(a, **TINY, api_name="/train_start")
    with pytest.raises(AppError, match="already has a (starting|running) run"):
        client.predict(a, **TINY, api_name="/train_start")
    client.predict(b, **TINY, api_name="/train_start")
    with pytest.raises(AppError, match="server is busy"):
        client.predict(c, **TINY, api_name="/train_start")
    client.predict(a, api_name="/train_stop")
    assert client.predict(c, **TINY, api_name="/train_start")["state"] in ("starting", "running")


def test_a_crashing_run_is_reported_and_replaceable(client, stopper, app):
    sid = new_session()
    stopper.append(sid)
    client.predict(sid, **TINY, api_name="/train_start")
    run = app.playground.sessions.get(sid).runs["image"]
    wait_for(client, sid, lambda s: s["state"] == "running")

    def boom():
        raise RuntimeError("boom")

    run.trainer.step = boom  # the worker's next update fails
    st = wait_for(client, sid, lambda s: s["state"] == "failed", timeout=10)
    assert st["error"] == "RuntimeError: boom"
    assert any("failed" in line for line in run.log)
    assert client.predict(sid, **TINY, api_name="/train_start")["state"] in ("starting", "running")  # slot free


def test_a_rollback_shows_in_status_log_and_curve(client, stopper, app):
    import pandas as pd

    from ui.train_tab import _markers

    sid = new_session()
    stopper.append(sid)
    client.predict(sid, **TINY, api_name="/train_start")
    client.predict(sid, api_name="/train_pause")
    st = wait_for(client, sid, lambda s: s["state"] == "paused")
    run = app.playground.sessions.get(sid).runs["image"]
    run.trainer._divergence = lambda *a: "forced by the test"  # the engine's own rollback path follows
    try:
        client.predict(sid, api_name="/train_step")
        st = wait_for(client, sid, lambda s: s["step"] == st["step"] + 1)
    finally:
        del run.trainer._divergence
    assert st["last"]["rolled_back"] and "forced by the test" in st["rollbacks"][-1]
    assert any("rolled back" in line for line in run.log)
    df, colors = _markers(pd.DataFrame({"step": [1, 2], "value": [0.0, 1.0], "series": ["loss", "loss"]}), run)
    marker = f"rollback @{st['step']}"
    assert marker in set(df["series"]) and colors[marker] == "#dc2626"
