"""The command line, mostly in-process through ``cli.main([...])`` (fast), twice as a real
``python -m ebm_play`` subprocess. Models are tiny untrained CNNs written by the tests; training
uses the bundled MNIST sample (``--data`` points at an empty folder, never ``--download``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ebm_play
from ebm_play import cli, weights
from ebm_play.training import Trainer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return ebm_play.save_model(ebm_play.CNNEnergy(width=4), tmp_path_factory.mktemp("m") / "tiny.safetensors")


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory) -> Path:
    x = ebm_play.sample_digits(train=False).x[:3]
    p = tmp_path_factory.mktemp("d") / "digits.npz"
    np.savez(p, x=x.numpy())
    return p


def run(capsys, *args) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc, err, *words):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]


# --- sample -----------------------------------------------------------------------------------
def test_sample_png_grid(capsys, tmp_path, model_file):
    out = tmp_path / "grid.png"
    rc, stdout, _ = run(capsys, "sample", "--model", model_file, "--n", 4, "--steps", 3, "--out", out)
    assert rc == 0 and "4 samples" in stdout
    img = Image.open(out)
    assert img.mode == "L" and img.width >= 2 * 28 and img.height >= 2 * 28


def test_sample_npz_shape_range_and_energy(capsys, tmp_path, model_file):
    out = tmp_path / "x.npz"
    assert run(capsys, "sample", "--model", model_file, "--n", 5, "--steps", 4, "--out", out)[0] == 0
    z = np.load(out)
    x, e = z["x"], z["energy"]
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32
    assert x.min() >= -1 and x.max() <= 1
    assert e.shape == (5,)
    model = ebm_play.load_model(model_file, "cpu")
    np.testing.assert_allclose(e, ebm_play.score(model, torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_sample_seed_reproducible(capsys, tmp_path, model_file):
    def draw(seed, name):
        out = tmp_path / name
        assert run(capsys, "sample", "--model", model_file, "--n", 3, "--steps", 3, "--seed", seed, "--out", out)[0] == 0
        return np.load(out)["x"]

    a, b, c = draw(7, "a.npz"), draw(7, "b.npz"), draw(8, "c.npz")
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_sampler_options_passed_only_when_given(capsys, tmp_path, model_file, monkeypatch):
    seen = []
    real = cli.sample_chains
    monkeypatch.setattr(cli, "sample_chains", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    base = ["sample", "--model", model_file, "--n", 2, "--steps", 2, "--out", tmp_path / "s.npz"]
    assert run(capsys, *base)[0] == 0
    assert run(capsys, *base, "--step-size", 5, "--grad-clamp", "none")[0] == 0
    assert run(capsys, *base, "--sampler", "hmc", "--leapfrog", 2, "--step-size", 0.01)[0] == 0
    assert seen == [{}, {"step_size": 5.0, "grad_clamp": None}, {"leapfrog": 2, "step_size": 0.01}]


def test_model_recommended_steps_apply_unless_given(capsys, tmp_path):
    m = ebm_play.save_model(ebm_play.CNNEnergy(width=4), tmp_path / "rec.safetensors",
                            info={"samplers": {"langevin": {"steps": 3}}})
    rc, out, _ = run(capsys, "sample", "--model", m, "--n", 2, "--out", tmp_path / "a.npz")
    assert rc == 0 and "after 3 langevin steps" in out
    rc, out, _ = run(capsys, "sample", "--model", m, "--n", 2, "--steps", 1, "--out", tmp_path / "b.npz")
    assert rc == 0 and "after 1 langevin steps" in out


def test_other_samplers(capsys, tmp_path, model_file):
    for extra in (["--sampler", "ula", "--temperature", 0.5], ["--sampler", "mala"],
                  ["--sampler", "annealed", "--base", "langevin", "--t-start", 10, "--noise", 0.01]):
        rc, _, err = run(capsys, "sample", "--model", model_file, "--n", 2, "--steps", 2, "--out", tmp_path / "o.npz", *extra)
        assert rc == 0, err


# --- score ------------------------------------------------------------------------------------
def test_score_round_trip_equals_api(capsys, tmp_path, model_file, digits_npz):
    out = tmp_path / "s.npz"
    rc, stdout, _ = run(capsys, "score", "--model", model_file, "--in", digits_npz, "--out", out)
    assert rc == 0
    model = ebm_play.load_model(model_file, "cpu")
    expected = ebm_play.score(model, ebm_play.load_images(digits_npz)).numpy()
    got = np.load(out)["energy"]
    assert got.shape == (3,)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert f"{expected[2]:.4f}" in stdout and "3 images" in stdout


def test_score_png_input(capsys, tmp_path, model_file, digits_npz):
    png = tmp_path / "digit.png"
    ebm_play.save_images(ebm_play.load_images(digits_npz)[:1], png)
    rc, stdout, _ = run(capsys, "score", "--model", model_file, "--in", png)
    assert rc == 0 and "1 image:" in stdout


# --- inpaint / denoise --------------------------------------------------------------------------
@pytest.mark.parametrize("half", ["top", "bottom", "left", "right"])
def test_inpaint_keeps_kept_half_exactly(capsys, tmp_path, model_file, digits_npz, half):
    out = tmp_path / "fill.npz"
    rc, _, err = run(capsys, "inpaint", "--model", model_file, "--in", digits_npz, "--keep", half,
                     "--n", 3, "--steps", 3, "--out", out)
    assert rc == 0, err
    x = np.load(out)["x"]
    image = ebm_play.load_images(digits_npz)[:1].numpy()
    kept = {"top": np.s_[:, :, :14, :], "bottom": np.s_[:, :, 14:, :],
            "left": np.s_[:, :, :, :14], "right": np.s_[:, :, :, 14:]}[half]
    free = {"top": np.s_[:, :, 14:, :], "bottom": np.s_[:, :, :14, :],
            "left": np.s_[:, :, :, 14:], "right": np.s_[:, :, :, :14]}[half]
    assert x.shape == (3, 1, 28, 28)
    assert np.array_equal(x[kept], np.broadcast_to(image, x.shape)[kept])
    assert not np.allclose(x[free], np.broadcast_to(image, x.shape)[free])


def test_inpaint_with_mask_picture(capsys, tmp_path, model_file, digits_npz):
    mask = np.zeros((56, 56), np.uint8)
    mask[:, :28] = 255  # light = keep: the left half, at twice the size
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "fill.npz"
    rc, _, err = run(capsys, "inpaint", "--model", model_file, "--in", digits_npz, "--mask", tmp_path / "mask.png",
                     "--n", 2, "--steps", 2, "--out", out)
    assert rc == 0, err
    x = np.load(out)["x"]
    image = ebm_play.load_images(digits_npz)[:1].numpy()
    assert np.array_equal(x[:, :, :, :14], np.repeat(image, 2, 0)[:, :, :, :14])
    assert run(capsys, "inpaint", "--model", model_file, "--in", digits_npz, "--keep", "top",
               "--n", 2, "--steps", 2, "--out", tmp_path / "fill.png")[0] == 0


def test_denoise_output_shape(capsys, tmp_path, model_file, digits_npz):
    clean = ebm_play.load_images(digits_npz)
    noisy = (clean + 0.3 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    np.savez(tmp_path / "noisy.npz", x=noisy.numpy())
    out = tmp_path / "clean.npz"
    rc, _, err = run(capsys, "denoise", "--model", model_file, "--in", tmp_path / "noisy.npz", "--weight", 2,
                     "--steps", 3, "--out", out)
    assert rc == 0, err
    z = np.load(out)
    assert z["x"].shape == (3, 1, 28, 28) and z["energy"].shape == (3,)
    assert run(capsys, "denoise", "--model", model_file, "--in", tmp_path / "noisy.npz", "--steps", 2,
               "--out", tmp_path / "clean.png")[0] == 0
    assert (tmp_path / "clean.png").is_file()


# --- train ------------------------------------------------------------------------------------
TINY = ["--model", "cnn", "--width", 4, "--batch-size", 8, "--sampler-steps", 2, "--buffer-size", 16]


def test_train_writes_loadable_file_with_metadata(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths: the same metadata length on every run
    rc, out, err = run(capsys, "train", *TINY, "--steps", 3, "--log-every", 1, "--data", "nodata", "--out", "w.safetensors")
    assert rc == 0, err
    assert "E(real)" in out and "E(fake)" in out and "gap" in out and "steps/s" in out
    assert out.count("step ") >= 3
    model = ebm_play.load_model(tmp_path / "w.safetensors", "cpu")
    assert model.kind == "cnn" and model.config["width"] == 4
    assert model.info["train_steps"] == 3
    assert model.info["train_config"]["batch_size"] == 8
    assert "bundled" in model.info["data"]

    rc, out, err = run(capsys, "train", "--resume", "w.safetensors", "--steps", 2, "--data", "nodata",
                       "--out", "w2.safetensors", "--lr", 5e-5)
    assert rc == 0, err
    info = ebm_play.load_model(tmp_path / "w2.safetensors", "cpu").info
    assert info["train_steps"] == 5 and info["train_config"]["lr"] == 5e-5
    assert info["train_config"]["batch_size"] == 8  # taken from the resumed file


def test_train_dsm_and_nce_and_the_file_brings_its_own_sampler(capsys, tmp_path, monkeypatch, digits_npz):
    """--objective dsm writes a σ-conditioned model whose file names the ladder sampler: sample,
    inpaint and evaluate then use it without --sampler; nce logs its accuracy and log Z."""
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(capsys, "train", *TINY, "--objective", "dsm", "--sigma-levels", 3, "--fresh-steps", 6,
                       "--steps", 2, "--log-every", 1, "--data", "nodata", "--out", "d.safetensors")
    assert rc == 0, err
    assert "objective dsm" in out and "σ 1: " in out and "gap" not in out
    model = ebm_play.load_model("d.safetensors", "cpu")
    assert model.kind == "cnn-noise" and model.info["objective"] == "dsm" and model.info["sampler"] == "ladder"
    assert model.info["noise_ladder"] == pytest.approx([1.0, 0.1414, 0.02], rel=1e-3)
    rc, out, err = run(capsys, "sample", "--model", "d.safetensors", "--n", 2, "--out", "s.npz")
    assert rc == 0 and "after 6 ladder steps" in out, err
    rc, out, err = run(capsys, "sample", "--model", "d.safetensors", "--n", 2, "--steps", 4, "--sigma-max", 0.5,
                       "--levels", 2, "--out", "s.npz")
    assert rc == 0 and "after 4 ladder steps" in out, err
    rc, out, err = run(capsys, "inpaint", "--model", "d.safetensors", "--in", digits_npz, "--keep", "top", "--n", 2,
                       "--out", "f.npz")
    assert rc == 0, err
    with np.load("f.npz") as z:  # the ladder sampler holds the kept half exactly too
        assert np.array_equal(z["x"][:, :, :14], np.repeat(np.load(digits_npz)["x"][:1, :, :14], 2, 0))
    rc, out, err = run(capsys, "train", *TINY, "--objective", "nce", "--nce-ratio", 2, "--steps", 2, "--log-every", 1,
                       "--data", "nodata", "--out", "n.safetensors")
    assert rc == 0 and "acc " in out and "log Z" in out, err
    info = ebm_play.load_model("n.safetensors", "cpu").info
    assert info["objective"] == "nce" and "log_z" in info and info["nce_ratio"] == 2
    rc, out, err = run(capsys, "train", *TINY, "--objective", "dsm", "--model", "rbm", "--data", "nodata", "--out", "x.safetensors")
    assert_user_error(rc, err, "dsm")


def test_train_saves_every_k_steps(capsys, tmp_path, monkeypatch):
    saved = []
    real = cli.save_model
    monkeypatch.setattr(cli, "save_model", lambda m, p, info: saved.append(info["train_steps"]) or real(m, p, info))
    rc, _, err = run(capsys, "train", *TINY, "--steps", 5, "--save-every", 2, "--data", tmp_path / "nodata",
                     "--out", tmp_path / "w.safetensors")
    assert rc == 0, err
    assert saved == [2, 4, 5]


def test_train_ctrl_c_saves_what_it_has(capsys, tmp_path, monkeypatch):
    real = Trainer.step

    def step(self):
        if self.state.step == 2:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "step", step)
    monkeypatch.chdir(tmp_path)
    rc, out, _ = run(capsys, "train", *TINY, "--steps", 50, "--save-every", 0, "--data", "nodata", "--out", "w.safetensors")
    assert rc == 130 and "interrupted" in out
    assert ebm_play.load_model(tmp_path / "w.safetensors", "cpu").info["train_steps"] == 2


def test_train_time_budget_and_rollbacks(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, _ = run(capsys, "train", *TINY, "--steps", 1000, "--minutes", 1e-6, "--data", "nodata", "--out", "t.safetensors")
    assert rc == 0 and "budget" in out
    assert ebm_play.load_model("t.safetensors", "cpu").info["train_steps"] < 1000
    # an energy bound no model can meet: every update is a divergence, rolled back and reported
    rc, out, _ = run(capsys, "train", *TINY, "--steps", 2, "--energy-bound", 1e-9, "--data", "nodata", "--out", "r.safetensors")
    assert rc == 0 and "rolled back" in out
    assert ebm_play.load_model("r.safetensors", "cpu").info["rollbacks"] == 2


# --- models, help -----------------------------------------------------------------------------
def test_models_lists_shipped_and_short_names_resolve(capsys, tmp_path, monkeypatch, model_file):
    shipped = tmp_path / "weights"
    shipped.mkdir()
    monkeypatch.setattr(weights, "WEIGHTS_DIR", shipped)
    rc, out, _ = run(capsys, "models")
    assert rc == 0 and "no shipped models" in out
    (shipped / "mini.safetensors").write_bytes(model_file.read_bytes())
    (shipped / "broken.safetensors").write_bytes(b"not a model")
    rc, out, _ = run(capsys, "models")
    assert rc == 0 and "cnn" in out
    assert [line.split()[0] for line in out.splitlines()] == ["broken", "mini"]
    assert "unreadable" in out.splitlines()[0]
    assert run(capsys, "sample", "--model", "mini", "--n", 1, "--steps", 1, "--out", tmp_path / "a.png")[0] == 0


@pytest.mark.parametrize("command", ["sample", "score", "inpaint", "denoise", "train"])
def test_help_mentions_energy_convention(capsys, command):
    rc, out, _ = run(capsys, command, "--help")
    assert rc == 0
    assert "lower energy = more data-like" in out and "--device" in out


# --- user errors: one line on stderr, exit code 2 -----------------------------------------------
def _bad_npz(tmp_path, name, x):
    p = tmp_path / name
    np.savez(p, x=x)
    return p


@pytest.mark.parametrize("case", [
    "missing input", "missing model file", "unknown model name", "wrong shape", "nan", "pixel range",
    "unknown sampler", "negative steps", "bad option value", "option of another sampler", "gibbs on a cnn",
    "bad device", "missing mask", "bad output type", "train negative steps", "train bad lr", "train bad width",
    "train bad classes", "resume missing", "2-D model",
])
def test_user_errors_are_one_line(capsys, tmp_path, model_file, digits_npz, case):
    m = ["--model", model_file]
    args = {
        "missing input": ["score", *m, "--in", tmp_path / "nope.npz"],
        "missing model file": ["sample", "--model", tmp_path / "nope.safetensors", "--out", tmp_path / "o.png"],
        "unknown model name": ["sample", "--model", "no-such-model", "--out", tmp_path / "o.png"],
        "wrong shape": ["score", *m, "--in", _bad_npz(tmp_path, "s.npz", np.zeros((2, 28, 27), np.float32))],
        "nan": ["score", *m, "--in", _bad_npz(tmp_path, "n.npz", np.full((1, 1, 28, 28), np.nan, np.float32))],
        "pixel range": ["denoise", *m, "--in", _bad_npz(tmp_path, "r.npz", np.full((1, 1, 28, 28), 5.0, np.float32)),
                        "--out", tmp_path / "o.png"],
        "unknown sampler": ["sample", *m, "--sampler", "metropolis", "--out", tmp_path / "o.png"],
        "negative steps": ["sample", *m, "--steps", -5, "--out", tmp_path / "o.png"],
        "bad option value": ["sample", *m, "--step-size", "-1", "--out", tmp_path / "o.png"],
        "option of another sampler": ["sample", *m, "--sampler", "ula", "--noise", 0.1, "--out", tmp_path / "o.png"],
        "gibbs on a cnn": ["sample", *m, "--sampler", "gibbs", "--steps", 1, "--out", tmp_path / "o.png"],
        "bad device": ["sample", *m, "--device", "tpu", "--out", tmp_path / "o.png"],
        "missing mask": ["inpaint", *m, "--in", digits_npz, "--mask", tmp_path / "nomask.png", "--out", tmp_path / "o.png"],
        "bad output type": ["sample", *m, "--steps", 1, "--out", tmp_path / "o.txt"],
        "train negative steps": ["train", "--steps", -1, "--out", tmp_path / "w.safetensors"],
        "train bad lr": ["train", *TINY, "--lr", -1, "--data", tmp_path / "nodata", "--out", tmp_path / "w.safetensors"],
        "train bad width": ["train", "--width", 0, "--data", tmp_path / "nodata", "--out", tmp_path / "w.safetensors"],
        "train bad classes": ["train", "--classes", "3,12", "--out", tmp_path / "w.safetensors"],
        "resume missing": ["train", "--resume", tmp_path / "gone.safetensors", "--out", tmp_path / "w.safetensors"],
        "2-D model": ["score", "--model", ebm_play.save_model(ebm_play.MLPEnergy(hidden=4, layers=1), tmp_path / "p.safetensors"),
                      "--in", digits_npz],
    }[case]
    rc, _, err = run(capsys, *args)
    assert_user_error(rc, err)


def test_error_messages_say_what_is_wrong(capsys, tmp_path, model_file):
    rc, _, err = run(capsys, "score", "--model", model_file, "--in", _bad_npz(tmp_path, "r.npz", np.full((1, 1, 28, 28), 5.0, np.float32)))
    assert_user_error(rc, err, "[−1, 1]")
    rc, _, err = run(capsys, "sample", "--model", model_file, "--steps", -5, "--out", tmp_path / "o.png")
    assert_user_error(rc, err, "--steps")
    rc, _, err = run(capsys, "sample", "--model", "no-such-model", "--out", tmp_path / "o.png")
    assert_user_error(rc, err, "no-such-model")


# --- the real entry point -------------------------------------------------------------------------
def _python_m(*args, cwd):
    env = {**os.environ, "EBM_PLAY_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "ebm_play", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_python_m_sample(tmp_path, model_file):
    p = _python_m("sample", "--model", model_file, "--n", 4, "--steps", 3, "--device", "cpu", "--out", "grid.png", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "wrote grid.png" in p.stdout
    assert Image.open(tmp_path / "grid.png").mode == "L"


def test_python_m_user_error_has_no_traceback(tmp_path, model_file):
    np.savez(tmp_path / "bad.npz", x=np.full((1, 1, 28, 28), np.nan, np.float32))
    p = _python_m("score", "--model", model_file, "--in", "bad.npz", cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: ") and "NaN" in p.stderr


def test_evaluate_prints_quality_ood_and_writes_json(capsys, tmp_path, model_file, monkeypatch):
    monkeypatch.setenv("EBM_PLAY_DATA", str(tmp_path / "no-mnist"))  # the bundled test digits
    clf = ebm_play.save_model(ebm_play.models.DigitClassifier(width=4), tmp_path / "clf.safetensors")
    rc, out, err = run(capsys, "evaluate", "--model", str(model_file), "--classifier", str(clf), "--n", "100",
                       "--steps", "2", "--json", str(tmp_path / "r.json"))
    assert rc == 0, err
    assert "held-out real digits" in out and "OOD AUROC" in out and "letters" in out and "pad-drawn digits" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_samples"] == 100 and 0 <= report["ood_auroc"]["uniform noise"] <= 1
    rc, _, err = run(capsys, "evaluate", "--model", str(model_file), "--classifier", str(model_file), "--n", "100")
    assert_user_error(rc, err, "not an evaluation classifier")


def test_ensemble_averages_jem_files_standardised_on_training_digits(capsys, tmp_path, model_file, monkeypatch):
    monkeypatch.setenv("EBM_PLAY_DATA", str(tmp_path / "no-mnist"))  # the bundled digits
    torch.manual_seed(0)
    jems = [ebm_play.save_model(ebm_play.JEMEnergy(width=4), tmp_path / f"j{i}.safetensors", info={"train_steps": 5})
            for i in range(2)]
    rc, out, err = run(capsys, "ensemble", *jems, "--n", 300, "--out", tmp_path / "e.safetensors")
    assert rc == 0, err
    assert "saved" in out and "2 members" in out
    e = ebm_play.load_model(tmp_path / "e.safetensors")
    assert e.kind == "jem-ensemble" and [m["file"] for m in e.info["members"]] == ["j0.safetensors", "j1.safetensors"]
    assert "first 300 digits" in e.info["standardised_on"]
    digits = ebm_play.sample_digits(train=True).x[:300]
    assert abs(ebm_play.score(e, digits).mean().item()) < 1e-3  # each member has mean 0 on those digits
    rc, _, err = run(capsys, "score", "--model", tmp_path / "e.safetensors", "--in", _bad_npz(tmp_path, "d.npz", digits[:2].numpy()))
    assert rc == 0, err
    rc, _, err = run(capsys, "ensemble", jems[0], model_file, "--out", tmp_path / "bad.safetensors")
    assert_user_error(rc, err, "tiny.safetensors", "JEM")
    assert not (tmp_path / "bad.safetensors").exists()


# --- issue #20: outputs checked at start, runs never lost, every mistake one line --------------------
def _unwritable_folder(tmp_path) -> Path:
    d = tmp_path / "locked"
    d.mkdir()
    d.chmod(0o500)
    if os.access(d, os.W_OK):  # root writes anywhere: a sysfs folder refuses even root
        d = Path("/sys")
        if os.access(d, os.W_OK) and not os.path.isdir(d):
            pytest.skip("no folder that this user cannot write")
    return d


def _bad_outs(tmp_path) -> dict:
    (tmp_path / "folder.safetensors").mkdir()
    os.mkfifo(tmp_path / "pipe.safetensors")
    (tmp_path / "null.safetensors").symlink_to("/dev/null")
    (tmp_path / "file.txt").write_text("a file, not a folder")
    return {
        "wrong type": (tmp_path / "w.png", "unknown type .png; write .safetensors"),
        "a folder": (tmp_path / "folder.safetensors", "is a folder"),
        "a pipe": (tmp_path / "pipe.safetensors", "is not a regular file"),
        "a device": (tmp_path / "null.safetensors", "is a device"),
        "under a file": (tmp_path / "file.txt" / "w.safetensors", "is not a folder"),
        "unwritable folder": (_unwritable_folder(tmp_path) / "w.safetensors", "cannot write in"),
    }


@pytest.mark.parametrize("case", ["wrong type", "a folder", "a pipe", "a device", "under a file", "unwritable folder"])
def test_train_refuses_a_bad_out_before_the_first_step(capsys, tmp_path, monkeypatch, case):
    out, words = _bad_outs(tmp_path)[case]
    touched = []
    monkeypatch.setattr(cli, "mnist", lambda *a, **k: touched.append("data loaded"))
    rc, stdout, err = run(capsys, "train", *TINY, "--steps", 5, "--data", "nodata", "--out", out)
    assert_user_error(rc, err, words)
    assert touched == [] and stdout == ""
    assert Path("/dev/null").is_char_device()


@pytest.mark.parametrize("command", ["sample", "inpaint", "denoise", "score", "ensemble", "evaluate"])
def test_other_outputs_are_checked_before_the_work(capsys, tmp_path, monkeypatch, model_file, digits_npz, command):
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: pytest.fail("loaded a model before checking the output"))
    pipe = tmp_path / "o.npz"
    os.mkfifo(pipe)
    m = ["--model", model_file]
    args = {"sample": ["sample", *m, "--out", pipe], "inpaint": ["inpaint", *m, "--in", digits_npz, "--keep", "top", "--out", pipe],
            "denoise": ["denoise", *m, "--in", digits_npz, "--out", pipe], "score": ["score", *m, "--in", digits_npz, "--out", pipe],
            "ensemble": ["ensemble", model_file, "--out", tmp_path / "e.npz"],
            "evaluate": ["evaluate", *m, "--json", tmp_path / "r.txt"]}[command]
    rc, _, err = run(capsys, *args)
    assert_user_error(rc, err)
    assert pipe.is_fifo()


def test_outputs_are_written_atomically_and_never_over_a_device(capsys, tmp_path, model_file):
    (tmp_path / "null.png").symlink_to("/dev/null")
    rc, _, err = run(capsys, "sample", "--model", model_file, "--n", 1, "--steps", 1, "--out", tmp_path / "null.png")
    assert_user_error(rc, err, "is a device")
    out = tmp_path / "x.npz"  # np.savez would add .npz to a temporary name; the rename must still land here
    assert run(capsys, "sample", "--model", model_file, "--n", 2, "--steps", 1, "--out", out)[0] == 0
    assert np.load(out)["x"].shape == (2, 1, 28, 28)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null.png", "x.npz"]


def test_a_second_ctrl_c_during_the_final_save_does_not_abort_it(capsys, tmp_path, monkeypatch):
    """Ctrl-C at update 3, and two more while the weights are being written: the save completes."""
    real_step, real_save = Trainer.step, cli.save_model

    def step(self):
        if self.state.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # lands in the sampler: the update is dropped whole
        return real_step(self)

    def save(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return real_save(*a, **k)

    monkeypatch.setattr(Trainer, "step", step)
    monkeypatch.setattr(cli, "save_model", save)
    rc, out, err = run(capsys, "train", *TINY, "--steps", 50, "--save-every", 0, "--data", "nodata",
                       "--out", tmp_path / "w.safetensors")
    assert rc == 130 and "interrupted: saved" in out and "the weights are being saved" in err
    assert ebm_play.load_model(tmp_path / "w.safetensors", "cpu").info["train_steps"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back


def _train_process(tmp_path, *extra):
    env = {**os.environ, "EBM_PLAY_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    args = ["train", *TINY, "--steps", 100000, "--save-every", 0, "--log-every", 1, "--data", "nodata",
            "--out", "w.safetensors", *extra]
    p = subprocess.Popen([sys.executable, "-m", "ebm_play", *map(str, args)], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout:  # wait until it trains
        if line.startswith("step"):
            return p
    pytest.fail(f"no training output: {p.stderr.read()}")


@pytest.mark.slow
def test_ctrl_c_twice_during_training_leaves_a_loadable_file(tmp_path):
    """Two presses 5 ms apart (the report's case), then one every 2 ms until the process ends, so
    that some land during the final save: the run's weights are written all the same."""
    p = _train_process(tmp_path)
    p.send_signal(signal.SIGINT)
    time.sleep(0.005)
    while p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGINT)
        time.sleep(0.002)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted: saved w.safetensors" in out and "Traceback" not in err
    assert ebm_play.load_model(tmp_path / "w.safetensors", "cpu").info["train_steps"] >= 1


def test_thread_counts_are_capped(capsys, monkeypatch):
    rc, _, err = run(capsys, "models", "--threads", 100000)
    assert_user_error(rc, err, "threads 100000 is more than this machine can use")
    monkeypatch.setenv("EBM_PLAY_THREADS", "100000")
    rc, _, err = run(capsys, "models")
    assert_user_error(rc, err, "EBM_PLAY_THREADS 100000")
    monkeypatch.setenv("EBM_PLAY_THREADS", "many")
    assert_user_error(*run(capsys, "models")[::2], "EBM_PLAY_THREADS must be a whole number")


def test_thread_count_that_used_to_segfault_is_one_line(tmp_path):
    env = {**os.environ, "EBM_PLAY_THREADS": "100000",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-m", "ebm_play", "models"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120, check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "at most" in p.stderr  # was: exit 139


def _jem_file(tmp_path, n_classes: int) -> Path:
    torch.manual_seed(0)
    return ebm_play.save_model(ebm_play.JEMEnergy(width=2, n_classes=n_classes), tmp_path / f"jem{n_classes}.safetensors",
                               info={"train_config": {"model": "jem", "width": 2, "batch_size": 8, "sampler_steps": 2,
                                                      "buffer_size": 16}})


def test_resuming_a_jem_with_fewer_classes_than_the_digits(capsys, tmp_path):
    jem = _jem_file(tmp_path, 3)
    rc, _, err = run(capsys, "train", "--resume", jem, "--steps", 1, "--data", "nodata", "--out", tmp_path / "o.safetensors")
    assert_user_error(rc, err, "a JEM of 3 classes cannot learn digit 9")
    rc, _, err = run(capsys, "train", "--resume", jem, "--steps", 1, "--classes", "0,1,2", "--data", "nodata",
                     "--out", tmp_path / "o.safetensors")
    assert rc == 0, err


@pytest.mark.parametrize("stored,words", [
    ({"lr": "fast"}, "lr must be a positive number"), ({"batch_size": 10**400}, "training settings are malformed"), ({"nope": 1}, "unknown training option"),
    ([1, 2], "not an object"),
])
def test_resuming_a_file_with_malformed_training_settings(capsys, tmp_path, stored, words):
    torch.manual_seed(0)
    f = ebm_play.save_model(ebm_play.CNNEnergy(width=2), tmp_path / "c.safetensors", info={"train_config": stored})
    rc, _, err = run(capsys, "train", "--resume", f, "--steps", 1, "--data", "nodata", "--out", tmp_path / "o.safetensors")
    assert_user_error(rc, err, words)


@pytest.mark.parametrize("case", ["jem 0 classes", "rbm visible 10", "negative visible", "steps 10**400", "deep json",
                                  "string temperature", "list settings", "steps 10**400 flag"])
def test_hostile_files_and_numbers_are_one_line(capsys, tmp_path, case):
    from test_weights import TINY_TENSORS, write_raw

    def meta(m):
        return write_raw(tmp_path / "h.safetensors", TINY_TENSORS, m if isinstance(m, str) else json.dumps(m))

    cnn = {"kind": "cnn", "config": {"width": 1}}
    deep = json.dumps(cnn)[:-1] + ', "info": ' + "[" * 100_000 + "]" * 100_000 + "}"
    model = meta({
        "jem 0 classes": {"kind": "jem", "config": {"width": 1, "n_classes": 0}},
        "rbm visible 10": {"kind": "rbm", "config": {"visible": 10, "hidden": 2}},
        "negative visible": {"kind": "rbm", "config": {"visible": -1}},
        "steps 10**400": {**cnn, "info": {"samplers": {"langevin": {"steps": 10**400}}}},
        "deep json": deep,
        "string temperature": {**cnn, "info": {"samplers": {"ula": {"temperature": "hot"}}}},
        "list settings": {**cnn, "info": {"samplers": {"langevin": []}}},
        "steps 10**400 flag": cnn,
    }[case])
    steps = ["--steps", 10**400] if case == "steps 10**400 flag" else []
    rc, _, err = run(capsys, "sample", "--model", model, *steps, "--out", tmp_path / "o.png")
    assert_user_error(rc, err, "h.safetensors" if not steps else "steps")
    assert len(err) < 300


def test_an_unexpected_exception_is_one_line_unless_debugging(capsys, monkeypatch):
    def bug(args):
        raise RuntimeError("something no check foresaw")

    monkeypatch.setattr(cli, "cmd_models", bug)
    rc, _, err = run(capsys, "models")
    assert_user_error(rc, err, "something no check foresaw", "RuntimeError", "EBM_PLAY_DEBUG=1")
    monkeypatch.setenv("EBM_PLAY_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main(["models"])
# --- data a person brings: --data PATH_OR_NAME --------------------------------------------------
from owndata import make_folder, make_npz, make_torchvision_root, make_zip  # noqa: E402

SMALL = ["--batch-size", 8, "--sampler-steps", 2, "--buffer-size", 32, "--width", 4, "--steps", 2, "--log-every", 1]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, list]:
    """--data arguments for each kind of source, all the same three labels of generated glyphs."""
    d = tmp_path_factory.mktemp("sources")
    return {"folder": [make_folder(d / "glyphs"), "--labels-from-folders"],
            "zip": [make_zip(d / "glyphs.zip"), "--labels-from-folders"],
            "npz": [make_npz(d / "glyphs.npz")],
            "torchvision": ["fashion-mnist", "--data-root", make_torchvision_root(d / "tv")]}


@pytest.mark.parametrize("kind", ["cnn", "jem"])
@pytest.mark.parametrize("source", ["folder", "zip", "npz", "torchvision"])
def test_train_on_each_source(capsys, tmp_path, sources, source, kind):
    out = tmp_path / "m.safetensors"
    rc, stdout, err = run(capsys, "train", "--model", kind, "--data", *sources[source], *SMALL, "--out", out)
    assert rc == 0, err
    assert "3 classes (bar 6, cross 6, ring 6)" in stdout or "3 classes (0 6, 1 6, 2 6)" in stdout or source == "torchvision"
    model = ebm_play.load_model(out)
    d = model.info["dataset"]
    assert d["size"] == 18 and len(d["classes"]) == 3 and len(d["hash"]) == 64
    assert d["split"] == ("the official test split" if source == "torchvision" else "10% per class at random, seed 0")
    if kind == "jem":
        assert model.config["n_classes"] == 3 and model.classify(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
    rc, listing, _ = run(capsys, "models", out)
    assert "18 images" in listing and d["hash"][:12] in listing and "trained by: python -m ebm_play train" in listing


def test_evaluate_against_the_models_own_held_out_data(capsys, tmp_path, sources):
    out = tmp_path / "m.safetensors"
    assert run(capsys, "train", "--model", "jem", "--data", *sources["zip"], *SMALL, "--out", out)[0] == 0
    rc, stdout, err = run(capsys, "evaluate", "--model", out, "--n", 20, "--steps", 2, "--classifier-updates", 20,
                          "--json", tmp_path / "r.json")
    assert rc == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["dataset"]["held_out"] == 3 and report["classifier"]["classes"] == 3
    assert set(report["ood_auroc"]) >= {"MNIST digits", "uniform noise", "rotated images"}
    assert 0 <= report["copy"]["samples"] <= 1 and "copy rate" in stdout and "MNIST digits" in stdout
    assert "accuracy" in report  # a JEM's held-out accuracy, over its 3 classes


def test_evaluate_refuses_data_that_is_gone(capsys, tmp_path):
    folder = make_folder(tmp_path / "g")
    out = tmp_path / "m.safetensors"
    assert run(capsys, "train", "--data", folder, *SMALL, "--out", out)[0] == 0
    shutil.rmtree(folder)  # the recorded path now names nothing (it would read as an MNIST root)
    rc, _, err = run(capsys, "evaluate", "--model", out, "--n", 10, "--steps", 1)
    assert_user_error(rc, err, "not what", "--data")


def test_train_on_2d_points_from_csv(capsys, tmp_path):
    (tmp_path / "p.csv").write_text("x,y\n" + "".join(f"{i},{i * i % 7}\n" for i in range(40)))
    out = tmp_path / "l.safetensors"
    rc, stdout, err = run(capsys, "train", "--preset", "landscape", "--data", tmp_path / "p.csv", "--steps", 2, "--out", out)
    assert rc == 0, err
    assert "40 points" in stdout and "scaled by" in stdout
    assert ebm_play.load_model(out).info["dataset"]["unit"] == "points"


@pytest.mark.parametrize("args, words", [
    (["--model", "jem", "--data", "NPZ_UNLABELLED"], ["JEM needs labels"]),
    (["--model", "jem", "--data", "FOLDER"], ["JEM needs labels", "--labels-from-folders"]),
    (["--model", "mlp2d", "--data", "FOLDER"], ["holds 28×28 images"]),
    (["--data", "two_moons"], ["holds 2-D points", "mlp2d"]),
    (["--data", "typo.zip"], ["no such file"]),
    (["--data", "FOLDER", "--mirrored", 0.25], ["MNIST digits only"]),
    (["--data", "FOLDER", "--held-out", 0.9], ["held-out share"]),
])
def test_train_data_mistakes(capsys, tmp_path, sources, args, words):
    np.savez(tmp_path / "u.npz", x=np.load(sources["npz"][0])["x"])
    subst = {"NPZ_UNLABELLED": tmp_path / "u.npz", "FOLDER": sources["folder"][0]}
    rc, _, err = run(capsys, "train", *[subst.get(a, a) for a in args], *SMALL, "--out", tmp_path / "m.safetensors")
    assert_user_error(rc, err, *words)


def test_resume_trains_on_the_data_its_file_names(capsys, tmp_path, sources):
    out = tmp_path / "m.safetensors"
    assert run(capsys, "train", "--data", *sources["npz"], *SMALL, "--out", out)[0] == 0
    first = ebm_play.load_model(out).info["dataset"]
    rc, stdout, err = run(capsys, "train", "--resume", out, "--steps", 1, "--out", out)
    assert rc == 0, err
    assert "glyphs.npz: 18 images" in stdout
    again = ebm_play.load_model(out).info
    assert again["dataset"]["hash"] == first["hash"] and again["train_steps"] == 3
