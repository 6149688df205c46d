"""The Train tab's objective choice: its endpoints called directly on a Playground (no server) for
cd, dsm and nce runs on a few hundred bundled digits, then /train_start with objective="dsm"
through a real server (conftest) driven by gradio_client."""

from __future__ import annotations

import math
import secrets
import time
import zipfile
from pathlib import Path
from urllib.parse import parse_qsl

import gradio as gr
import numpy as np
import pytest
from gradio_client.exceptions import AppError
from owndata import LABELS, make_npz, make_zip
from PIL import Image

import ebm_play
from ebm_play import EBMError, settings
from ebm_play.archives import Limits
from ebm_play.data import Digits
from ebm_play.objectives import ABOUT
from ebm_play.playground import Playground
from ui import playback as P
from ui import sample_tab as S
from ui import train_tab as T

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

# Tiny on purpose: a dsm update at width 4 and batch 8 takes milliseconds on one core.
TINY = dict(kind="cnn", width=4, digits=list(range(10)), batch_size=8, sampler_steps=2, step_size=10.0, noise=0.005,
            alpha=0.1, lr=1e-3, buffer_size=32, reinit=0.05, seed=0, fresh_every=4, fresh_steps=10, max_steps=0)


def new_session() -> str:
    return "test-" + secrets.token_hex(6)


@pytest.fixture(scope="module")
def pg():
    p = Playground("cpu")
    few = ebm_play.sample_digits(train=True)
    p._data = Digits(few.x[:300], few.y[:300], "300 bundled digits")  # what pg.data() gives from now on
    yield p
    p.stop_all()


def finished(pg, sid, steps: int, objective: str):
    """Start a run of ``steps`` updates and wait for its end (a few seconds)."""
    st = T.train_start(pg, sid, **{**TINY, "max_steps": steps}, objective=objective)
    assert st["objective"] == objective and st["config"]["objective"] == objective
    run = pg.run_of(sid)
    run.join(30)
    assert run.state == "finished", run.error
    return run


def series(plot: gr.LinePlot) -> list[str]:
    return list(dict.fromkeys(plot.value["data"][i][2] for i in range(len(plot.value["data"]))))


# --- the form ------------------------------------------------------------------------------------------
def test_the_objective_offers_only_the_kinds_it_trains_and_explains_itself():
    kinds, width, about, every, steps = T.objective_changed(None, "dsm", "jem")
    assert [v for _, v in kinds.choices] == ["cnn"] and kinds.value == "cnn" and width == T.DEFAULT_WIDTH["cnn"]
    assert ABOUT["dsm"] in about and "ladder" in about and every == T.FRESH_EVERY["dsm"] and steps == 0
    kinds, width, about, *_ = T.objective_changed(None, "cd", "cnn")
    assert [v for _, v in kinds.choices] == ["cnn", "jem", "rbm"] and width == gr.skip() and about == ABOUT["cd"]
    assert T.fill_preset(None, "nce")[-1] == "nce" and len(T.fill_preset(None, "fast")) == len(T.PRESET_FIELDS)
    # 0 fresh-sample steps: the objective's own default (the dsm ladder's 100 per level, else 256 as before)
    assert T.fresh_steps_of(T.make_config(**{k: TINY[k] for k in T.FIELDS}, objective="dsm"), 0) == 1000
    assert T.fresh_steps_of(T.make_config(**{k: TINY[k] for k in T.FIELDS}), 0) == 256


def test_pairs_the_engine_refuses_are_refused_with_its_message(pg):
    sid = new_session()
    with pytest.raises(EBMError, match="objective dsm trains cnn or mlp2d energies, not jem"):
        T.train_start(pg, sid, **{**TINY, "kind": "jem"}, objective="dsm")
    with pytest.raises(EBMError, match="objective nce trains cnn or mlp2d energies, not rbm"):
        T.train_start(pg, sid, **{**TINY, "kind": "rbm"}, objective="nce")
    with pytest.raises(EBMError, match="objective: unknown value 'sm'"):
        T.train_start(pg, sid, **TINY, objective="sm")
    assert T.train_status(pg, sid)["state"] == "none"  # nothing was started


# --- runs per objective ------------------------------------------------------------------------------------
def test_a_dsm_run_shows_its_loss_per_noise_level_and_ladder_samples_not_a_buffer(pg):
    sid = new_session()
    run = finished(pg, sid, 6, "dsm")
    st = T.train_status(pg, sid)
    levels = [f"dsm_loss_{i}" for i in range(10)]
    assert set(levels) <= set(st["curves"]) and set(levels) <= set(st["last"]) and "e_fake" not in st["curves"]
    assert all(math.isfinite(st["last"][k]) for k in levels)
    out = T.poll(pg, sid, {})
    per_level, loss = out[1], out[2]
    ladder = run.config.noise_ladder().tolist()
    assert series(per_level) == [f"σ = {T.fmt(s)}" for s in ladder] and "score matching" in per_level.label
    assert "score matching" in loss.label and series(loss) == ["loss"]
    buffer, fresh = out[5], out[6]
    assert buffer.visible is False and fresh.label == "Fresh from noise (ladder sampler)" and fresh.value is not None
    assert run.view.buffer is None and set(run.view.energies) == {"real", "noise"} and "buffer" not in out[7].label
    assert run.quality and 0 <= run.quality[-1]["confident"] <= 1  # fresh ladder chains judged by the classifier
    assert "Denoising score matching" in out[0]
    last = run.history[-1]  # the status line names the loss at both ends of the ladder
    assert f"at σ_max {T.fmt(last['dsm_loss_0'])}" in out[0] and f"at σ_min {T.fmt(last['dsm_loss_9'])}" in out[0]

    # saved, and used in the other tabs: the Sample tab offers the ladder sampler, the model's own
    model = ebm_play.load_model(T.train_save(pg, sid))
    assert model.kind == "cnn-noise" and model.info["sampler"] == "ladder"
    assert model.info["samplers"]["ladder"]["steps"] == TINY["fresh_steps"]
    assert "trained in this session" in T.train_use(pg, sid)
    used, _ = pg.current_model(sid)
    assert settings.default_sampler(used) == "ladder" and "ladder" in settings.applicable(used)
    sampler, steps, *_ = P.knob_values(used, "ladder")
    assert ("ladder", "ladder") in sampler.choices and sampler.value == "ladder" and steps == TINY["fresh_steps"]
    _grid, _plot, result = list(S.sample(pg, sid, "ladder", 10, chains=2))[-1]
    assert result["model"].startswith("trained in this session") and all(math.isfinite(e) for e in result["energy"])
    with pytest.raises(EBMError, match=r"objective \(dsm\) keeps no replay buffer"):
        list(S.sample(pg, sid, "ladder", 10, chains=2, start="buffer"))


def test_an_nce_run_shows_accuracy_and_log_z(pg):
    sid = new_session()
    finished(pg, sid, 6, "nce")
    st = T.train_status(pg, sid)
    assert {"nce_accuracy", "log_z"} <= set(st["curves"]) and 0 <= st["last"]["nce_accuracy"] <= 1
    out = T.poll(pg, sid, {})
    assert series(out[1]) == ["classification accuracy (data vs noise)", "loss"] and "Noise-contrastive" in out[1].label
    assert series(out[2]) == ["log Z", "E(data)", "E(noise)"]
    assert out[5].visible is False and out[6].label == "Fresh from noise (Langevin)"
    assert "accuracy" in out[0] and "log Z" in out[0]


def test_a_new_run_resets_the_plots_and_a_cd_run_shows_its_buffer(pg):
    sid = new_session()
    finished(pg, sid, 3, "nce")
    seen = T.poll(pg, sid, {})[15]
    finished(pg, sid, 3, "cd")
    out = T.poll(pg, sid, seen)
    assert out[15]["run"] != seen["run"]  # another run: everything is drawn anew
    assert series(out[1]) == ["E(real)", "E(fake)", "gap E(fake)−E(real)"] and "Contrastive divergence" in out[1].label
    assert out[5].visible is True and out[5].value is not None and out[6].label == "Fresh from noise"
    assert "e_fake" in T.train_status(pg, sid)["curves"]


# --- through a real server ------------------------------------------------------------------------------
def test_train_start_with_objective_dsm_through_the_api(client, app):
    sid = new_session()
    try:
        st = client.predict(sid, **{**TINY, "max_steps": 4}, objective="dsm", api_name="/train_start")
        assert st["objective"] == "dsm" and st["config"]["objective"] == "dsm"
        deadline = time.monotonic() + 30
        while st["state"] != "finished":
            assert time.monotonic() < deadline and st["state"] != "failed", st
            time.sleep(0.2)
            st = client.predict(sid, api_name="/train_status")
        assert {f"dsm_loss_{i}" for i in range(10)} <= set(st["curves"]) and "dsm_loss_9" in st["last"]
        with pytest.raises(AppError, match="objective dsm trains cnn or mlp2d energies, not rbm"):
            client.predict(new_session(), **{**TINY, "kind": "rbm"}, objective="dsm", api_name="/train_start")
    finally:
        run = app.playground.sessions.peek(sid).runs.get("image") if app.playground.sessions.peek(sid) else None
        if run is not None and run.live:
            run.stop()


# --- your own images -----------------------------------------------------------------------------------
def one_line(fn, *args, **kw) -> str:
    """The EBMError an endpoint raises: one short line, as the page shows it."""
    with pytest.raises(EBMError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 300, msg
    return msg


def test_an_uploaded_zip_is_previewed_counted_trained_on_and_judged_against_its_own_held_out_images(pg, tmp_path):
    from ui import ood_tab as O

    sid = new_session()
    zip_path = make_zip(tmp_path / "icons.zip", per_class=6)
    preview, md = T.data_upload(pg, sid, str(zip_path), True)
    line, _, note = T.reproduce(pg, *[TINY[f] for f in T.FIELDS], 0, 0, "cd", sid)  # the command names the upload
    assert "--data icons.zip --labels-from-folders" in line and "--classes" not in line and "icons.zip" in note
    # 3 classes × 6 pictures; 10% of each class held out, at least one: 5 to train and 1 held out per class
    assert "**icons.zip**: 18 images, 15 to train and 3 held out" in md
    assert all(f"| {c} | 6 | 1 |" in md for c in LABELS) and "3 classes" in md
    assert pg.sessions.peek(sid).data.hash[:12] in md and str(tmp_path) not in md
    # 15 training images, the classes taking turns, 8 to a row: 28×28 tiles at scale 2 with 2-px separators
    assert Image.open(preview).size == (8 * 56 + 9 * 2, 2 * 56 + 3 * 2)
    st = T.train_start(pg, sid, **{**TINY, "kind": "jem", "width": 4, "max_steps": 3, "digits": [3]})
    run = pg.run_of(sid)
    run.join(30)
    assert run.state == "finished", run.error
    assert st["config"]["classes"] is None  # the digit choice is for MNIST: every picture is trained on
    assert "15 items from your images icons.zip" in run.log[0]
    assert "icons.zip" in T.train_use(pg, sid)
    model, _ = pg.current_model(sid)
    assert model.config["n_classes"] == 3 and model.info["dataset"]["arg"] == "icons.zip"
    _, text, result = O.ood_score(pg, sid, None, 0, O.CURRENT, 0.95)
    assert "held-out images of icons.zip" in text and "MNIST test digits" not in text
    assert O.scorer(model).n == 3  # percentiles among the 3 held-out pictures, not 2,000 digits
    _, _, batch_md, batch = O.ood_batch(pg, sid, None, O.MNIST_SET, O.CURRENT, 0.95)
    assert "against 3 held-out images of icons.zip" in batch_md and batch["n"] == 500
    x = S.sample(pg, sid, steps=2, chains=2, frames=2, label=2)
    assert str(list(x)[-1][-1]["model"]).startswith("trained in this session")


def test_an_npz_without_labels_trains_a_cnn_and_jem_is_refused_with_the_engines_line(pg, tmp_path):
    from owndata import glyph_arrays

    sid = new_session()
    x, _ = glyph_arrays(4)
    path = tmp_path / "marks.npz"
    np.savez(path, x=x)
    _, md = T.data_upload(pg, sid, str(path), True)
    assert "12 images" in md and "No labels" in md and "JEM needs labels" in md
    assert "JEM needs labels, and marks.npz has none" in one_line(T.train_start, pg, sid, **{**TINY, "kind": "jem"})
    T.train_start(pg, sid, **{**TINY, "max_steps": 2})
    pg.run_of(sid).join(30)
    assert pg.run_of(sid).state == "finished" and "items from your images marks.npz" in pg.run_of(sid).log[0]


def test_use_mnist_again_and_images_let_go_to_make_room(pg, tmp_path):
    a, b = new_session(), new_session()
    zip_path = make_zip(tmp_path / "icons.zip", per_class=3)
    T.data_upload(pg, a, str(zip_path), True)
    assert T.data_forget(pg, a) == (None, T.MNIST_NOTE, None) and pg.own_data(a) is None
    T.train_start(pg, a, **{**TINY, "max_steps": 1})
    pg.run_of(a).join(30)
    assert "300 bundled digits" in pg.run_of(a).log[0]
    T.data_upload(pg, a, str(zip_path), True)
    held, pg.max_held_data_bytes = pg.max_held_data_bytes, pg.sessions.peek(a).data.nbytes  # room for one set
    try:
        T.data_upload(pg, b, str(zip_path), True)  # b's upload lets a's go (seen less recently)
    finally:
        pg.max_held_data_bytes = held
    assert pg.own_data(b) is not None and pg.sessions.peek(a).data is None
    msg = one_line(T.train_start, pg, a, **TINY)  # never MNIST without a word
    assert "let go to make room" in msg and "upload them again" in msg
    assert T.data_shown(pg, a) == (gr.skip(), gr.skip()) and T.data_shown(pg, b)[1].startswith("**icons.zip**")


def _zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return str(path)


def test_bad_uploads_each_reach_the_page_as_one_line(pg, tmp_path, monkeypatch):
    from owndata import glyphs, png

    good = png(glyphs(1)["ring"][0])
    blank = png(Image.new("L", (40, 40), 255))
    cases = {
        "bomb": (_zip(tmp_path / "bomb.zip", {"a.png": bytes(5 * 2**20)}), "zip bomb"),
        "nested": (_zip(tmp_path / "nested.zip", {"a.png": good, "inner.zip": good}), "nested archives"),
        "text": (_zip(tmp_path / "text.zip", {"a.png": good, "notes.txt": b"hello"}), "notes.txt: not an image"),
        "blank": (_zip(tmp_path / "blank.zip", {"a/1.png": good, "a/2.png": blank}), "all one colour"),
        "kind": (str(make_npz(tmp_path / "x.npz").rename(tmp_path / "x.csv")), "expected zip or npz"),
    }
    sid = new_session()
    for name, (path, words) in cases.items():
        assert words in one_line(T.data_upload, pg, sid, path, True), name
    monkeypatch.setattr(T, "DATA_LIMITS", Limits(max_file_bytes=1000))
    assert "upload limit" in one_line(T.data_upload, pg, sid, str(make_zip(tmp_path / "big.zip")), True)
    monkeypatch.setattr(T, "DATA_LIMITS", Limits(max_images=10))
    assert "20,000" not in (msg := one_line(T.data_upload, pg, sid, str(make_zip(tmp_path / "many.zip")), True))
    assert "images" in msg
    monkeypatch.undo()
    assert pg.own_data(sid) is None  # nothing refused was kept
    few = _zip(tmp_path / "few.zip", {"a/1.png": good, "a/2.png": good, "b/1.png": png(glyphs(1)["bar"][0])})
    _, md = T.data_upload(pg, sid, few, True)
    assert "class 'b' has 1" in md
    assert "JEM needs at least 2 images per class" in one_line(T.train_start, pg, sid, **{**TINY, "kind": "jem"})


# --- reproduce a run: the command line, the page address, a file's settings --------------------------------
FORMS = [  # form values (FIELDS, then fresh_steps, max_steps, objective)
    {**T.PRESETS["fast"], "fresh_steps": 0, "max_steps": 0},
    {**T.PRESETS["reference"], "width": 16, "fresh_steps": 0, "max_steps": 0},
    {**T.PRESETS["dsm"], "fresh_steps": 0, "max_steps": 400},
    {**T.PRESETS["nce"], "lr": 0.002, "digits": [3, 8], "fresh_steps": 300, "max_steps": 0},
    {**TINY, "kind": "rbm", "width": 64, "digits": [0, 1, 7], "objective": "cd", "max_steps": 2500},
    {**TINY, "kind": "jem", "width": 8, "reinit": 0.25, "seed": 7, "objective": "cd"},
]


def form_args(v: dict) -> list:
    return [*(v[f] for f in T.FIELDS), v["fresh_steps"], v["max_steps"], v["objective"]]


@pytest.mark.parametrize("v", FORMS, ids=lambda v: f"{v['objective']}-{v['kind']}")
def test_the_command_box_is_the_engines_command_for_what_start_trains(v):
    from ebm_play import cli
    from ebm_play.reproduce import train_command

    line, link, note = T.reproduce(None, *form_args(v))
    cfg = T.form_config(*(v[f] for f in T.FIELDS), v["fresh_steps"], v["objective"])
    assert line == train_command(cfg, None, v["max_steps"] or T.TRAIN_STEPS)
    args = cli.build_parser().parse_args(line.split()[3:])
    assert cli.config_from_args(args) == cfg and args.data is None and args.steps == (v["max_steps"] or 1000)
    assert ("until you stop it" in note) == (v["max_steps"] == 0)

    # the link opens the page with the same form values (Stop after included when set)
    assert link.startswith("?tab=train&")
    values, notes = T.address_values(dict(parse_qsl(link[1:])))
    want = {**{f: v[f] for f in T.FILL_FIELDS}, **({"max_steps": v["max_steps"]} if v["max_steps"] else {})}
    assert notes == [] and values == {**want, "digits": sorted(v["digits"])}


def test_a_page_address_fills_what_it_can_and_notes_the_rest():
    values, notes = T.address_values({"tab": "train", "preset": "fast", "lr": "0.002"})
    assert values == {**{f: T.PRESETS["fast"][f] for f in T.PRESET_FIELDS}, "lr": 0.002, "fresh_steps": 0} and not notes
    values, notes = T.address_values({"preset": "nope", "lr": "abc", "grad-clip": "0.5", "width": "999", "seed": "3000000000",
                                      "data": "glyphs", "steps": "50", "classes": "3,8", "reinit": "2"})
    assert values["digits"] == [3, 8] and values["max_steps"] == 50 and values["lr"] == 1e-4  # the reference recipe
    assert notes == ["preset 'nope' is not one of fast, reference, dsm, nce: ignored",
                     "setting lr: expected a finite number, got 'abc': ignored",
                     "grad_clip: not a setting of the Train tab: ignored",
                     "width must be between 1 and 256 for a cnn model, got 999: ignored",
                     "seed must be between 0 and 2147483647, got 3000000000: ignored",
                     "data: the Train tab trains on MNIST digits (the command line takes --data): ignored",
                     "reinit must be between 0 and 1, got 2.0: ignored"]
    values, notes = T.address_values({"model": "jem", "objective": "dsm"})  # each fine, not together
    refused = "objective dsm trains cnn or mlp2d energies, not jem: the address's settings were not applied"
    assert values == {} and notes == [refused]
    assert T.address_values({"tab": "sample"}) == ({}, [])
    assert T.address_values({f"k{i}": "1" for i in range(41)})[0] == {}
    out = T.from_address(None, None)  # no request (unit test): nothing changes
    assert all(x == gr.skip() for x in out)


def test_a_weights_file_fills_the_settings_it_was_trained_with(pg, tmp_path):
    sid = new_session()
    form = {**TINY, "digits": [3, 8], "lr": 0.002, "seed": 5, "fresh_steps": 0, "objective": "nce"}
    T.train_start(pg, sid, **{**form, "max_steps": 2})
    pg.run_of(sid).join(30)
    out = T.fill_from_file(pg, T.train_save(pg, sid))
    assert len(out) == len(T.FILL_FIELDS) + 1 and out[0].value == "cnn" and [v for _, v in out[0].choices] == ["cnn"]
    assert dict(zip(T.FILL_FIELDS[1:], out[1:])) == {f: form[f] for f in T.FILL_FIELDS[1:]}
    assert "Its training settings are filled in" in out[-1] and "Not in this form" not in out[-1]
    # a shipped file trained by the CLI: every setting it records, and the ones this form has not
    shipped = T.fill_from_file(pg, str(ROOT / "weights" / "mnist-jem.safetensors"))
    from ebm_play.reproduce import settings_from_file
    cfg = settings_from_file(ROOT / "weights" / "mnist-jem.safetensors").config
    assert shipped[0].value == "jem" and shipped[T.FILL_FIELDS.index("lr")] == cfg.lr
    assert shipped[T.FILL_FIELDS.index("sampler_steps")] == cfg.sampler_steps
    assert T.fill_from_file(pg, None) == [gr.skip()] * len(T.FILL_FIELDS) + [""]
    with pytest.raises(EBMError):
        T.fill_from_file(pg, str(ROOT / "weights" / "mnist-classifier.safetensors"))
