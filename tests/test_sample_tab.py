"""The Sample tab: its helpers (recording, export, sampler settings) and its endpoints through a real
server (conftest) driven by gradio_client: streaming, downloads, cancelling, validation."""

from __future__ import annotations

import math
import secrets
import threading
import time

import numpy as np
import pytest
import torch
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import ebm_play
from ui import chains as C
from ebm_play import media
from test_recording import fake_recording


def chain_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "ebm-chains" and t.is_alive())


def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- helpers (no server) --------------------------------------------------------------------------


def test_sampler_defaults_per_model_kind_and_overrides():
    cnn = ebm_play.CNNEnergy(width=2).eval()
    steps, opts = C.sampler_settings(cnn, "mala")
    assert opts["temperature"] == 1e-4 and opts["wall"] == 1000.0 and steps == 500
    _, opts = C.sampler_settings(cnn, "mala", step_size=3e-5, temperature=2e-4)
    assert opts["step_size"] == 3e-5 and opts["temperature"] == 2e-4
    _, opts = C.sampler_settings(cnn, "annealed", base="hmc", leapfrog=3, t_start=0.5)
    assert opts["base"] == "hmc" and opts["leapfrog"] == 3 and opts["t_start"] == 0.5 and "temperature" not in opts
    _, opts = C.sampler_settings(cnn, "langevin")
    assert opts == {}  # the engine's reference settings
    cnn.info = {"samplers": {"ula": {"steps": 77, "temperature": 3e-6}}}  # a model file's own advice wins
    steps, opts = C.sampler_settings(cnn, "ula")
    assert steps == 77 and opts["temperature"] == 3e-6
    with pytest.raises(ebm_play.EBMError, match="step size must be between"):
        C.sampler_settings(cnn, "ula", step_size=-1)
    with pytest.raises(ebm_play.EBMError, match="leapfrog steps must be between"):
        C.sampler_settings(cnn, "hmc", leapfrog=0)
    with pytest.raises(ebm_play.EBMError, match="temperature must be a (finite )?number"):
        C.sampler_settings(cnn, "ula", temperature=float("nan"))


def test_energy_plot_marks_the_training_length_on_long_runs():
    rec = fake_recording(steps=40, chains=20)
    df, cmap, legend = C.energy_plot_data(rec, marker=10)
    assert set(df["series"]) >= {"mean", "chain 1", f"chain {C.PLOT_CHAINS}", "training length (10 steps)"}
    assert f"chain {C.PLOT_CHAINS + 1}" not in set(df["series"])  # at most 16 chain lines
    assert legend == ["mean", "training length (10 steps)"] and cmap["mean"] == C.MEAN_COLOR
    df, _, legend = C.energy_plot_data(rec, marker=100)  # a run shorter than training: no marker
    assert legend == ["mean"]
    acc = C.accept_plot_data(rec)
    assert set(acc["series"]) == {"last 20 updates", "since the start"} and acc["value"].between(0, 1).all()


# --- the endpoints ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sample_streams_frames_then_the_final_grid(client):
    job = client.submit(None, "langevin", 2000, None, None, None, 16, 3, frames=12, api_name="/sample")
    image, plot, result = job.result(timeout=50)
    assert len(job.outputs()) >= 3  # two streamed frames or more (one per 0.25 s over > 1 s), then the final grid
    assert result["steps_done"] == 2000 and not result["stopped"] and len(result["energy"]) == 16
    assert result["frames"] == 12 and result["frame_steps"][0] == 0 and result["frame_steps"][-1] == 2000
    assert all(math.isfinite(e) for e in result["energy"])
    with Image.open(image) as im:
        assert im.mode == "L" and im.size == media.chain_grid(torch.zeros(16, 1, 28, 28)).size
    assert plot is not None

    gif, mp4, png, npz = client.predict(result["record"], 5, api_name="/sample_files")
    with Image.open(gif) as im:
        assert im.n_frames == 12  # as many frames as requested
    with np.load(npz) as z:
        assert z["frames"].shape == (12, 16, 1, 28, 28) and list(z["frame_steps"]) == result["frame_steps"]
        assert np.allclose(z["energies"][-1], result["energy"], atol=1e-4)
    assert Image.open(png).size[0] > 100
    assert (mp4 is not None) == media.video_available()
    with pytest.raises(AppError, match="unknown or expired recording"):
        client.predict("no-such-record", 5, api_name="/sample_files")


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_cancelling_a_stream_stops_the_chains(client):
    before = chain_threads()
    job = client.submit(None, "langevin", 5000, None, None, None, 16, 0, api_name="/sample")
    wait_for(lambda: len(job.outputs()) >= 1, 30, "the first streamed frame")
    assert chain_threads() > before
    job.cancel()
    wait_for(lambda: chain_threads() <= before, 10, "the chains to stop after the cancel")


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_the_stop_button_ends_a_run_and_keeps_what_it_recorded(client):
    sid = "test-" + secrets.token_hex(6)
    job = client.submit(sid, "langevin", 5000, None, None, None, 8, 0, frames=50, api_name="/sample")
    wait_for(lambda: len(job.outputs()) >= 1, 30, "the first streamed frame")
    assert C.JOBS.stop((sid, "sample"))  # what the Stop button does
    _image, _plot, result = job.result(timeout=20)
    assert result["stopped"] and 0 < result["steps_done"] < 5000
    assert result["frame_steps"][-1] == result["steps_done"]  # the last state is a frame


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_metropolis_samplers_report_acceptance(client):
    _image, _plot, result = client.predict(None, "mala", 20, None, None, None, 4, 0, api_name="/sample")
    assert result["options"]["temperature"] < 1e-2 and 0 <= result["accept_rate"] <= 1
    _image, _plot, result = client.predict(None, "hmc", 5, None, None, None, 4, 0, leapfrog=2, api_name="/sample")
    assert result["options"]["leapfrog"] == 2 and result["accept_rate"] is not None


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_start_from_an_image_and_from_gaussian_noise(client, tmp_path):
    digit = ebm_play.sample_digits(train=False).x[:1]
    png = tmp_path / "digit.png"
    ebm_play.images.grid(digit, 1, scale=4, pad=0).save(png)
    image, _plot, result = client.predict(None, "langevin", 0, None, None, None, 2, 0, start="image",
                                          start_image=handle_file(str(png)), api_name="/sample")
    assert result["start"] == "image" and result["steps_done"] == 0
    with Image.open(image) as im:
        assert np.asarray(im).std() > 10  # the digit, not a blank grid
    _image, _plot, result = client.predict(None, "ula", 3, None, None, None, 2, 0, start="gaussian",
                                           api_name="/sample")
    assert result["start"] == "gaussian" and len(result["energy"]) == 2


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_class_conditional_sampling_with_jem(client, app):
    if "mnist-jem" not in app.registry.models:
        pytest.skip("no shipped JEM model")
    _image, _plot, result = client.predict(None, "langevin", 5, None, None, None, 2, 0, label=3, model="mnist-jem",
                                           api_name="/sample")
    assert result["class"] == 3 and result["model"] == "mnist-jem"


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kwargs,message", [
    (dict(chains=0), "chains must be between 1 and 256"),
    (dict(chains=2.5), "chains must be a whole number"),
    (dict(steps=5001), "steps must be between 0 and 5000"),
    (dict(chains=256, steps=5000), "too much work for one request"),
    (dict(sampler="hmc", steps=2000, chains=64, leapfrog=10), "chains × steps × leapfrog"),
    (dict(temperature=-1.0, sampler="ula"), "temperature must be between"),
    (dict(step_size=0.0, sampler="mala"), "step size must be between"),
    (dict(frames=1), "frames must be between 2 and"),
    (dict(seed=-3), "seed must be between"),
    (dict(sampler="nuts"), "unknown sampler .nuts."),
    (dict(start="buffer"), "this session has no training run"),
    (dict(start="image"), "draw a digit"),
    (dict(start="moon"), "unknown start .moon."),
    (dict(model="nope"), "unknown model 'nope'"),
    (dict(label=12), "class must be between 0 and 9"),
])
def test_every_number_is_checked_on_the_server(client, kwargs, message):
    args = {**dict(session=None, sampler="langevin", steps=5, step_size=None, noise=None, temperature=None, chains=2,
                   seed=0), **kwargs}
    with pytest.raises(AppError, match=message):
        client.predict(**args, api_name="/sample")


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_class_needs_a_jem_and_an_upload_must_be_an_energy_model(client, app, tmp_path):
    other = next((k for k, m in app.registry.models.items() if m.kind != "jem"), None)
    if other is not None:
        with pytest.raises(AppError, match="needs a JEM model"):
            client.predict(None, "langevin", 5, None, None, None, 2, 0, label=3, model=other, api_name="/sample")
    mine = ebm_play.save_model(ebm_play.CNNEnergy(width=2), tmp_path / "tiny.safetensors")
    _image, _plot, result = client.predict(None, "langevin", 3, None, None, None, 2, 0,
                                           model_file=handle_file(str(mine)), api_name="/sample")
    assert result["model"] == "uploaded tiny.safetensors"
    from ebm_play.models import DigitClassifier

    clf = ebm_play.save_model(DigitClassifier(width=2), tmp_path / "clf.safetensors")
    with pytest.raises(AppError, match="not an energy model"):
        client.predict(None, "langevin", 3, None, None, None, 2, 0, model_file=handle_file(str(clf)),
                       api_name="/sample")
