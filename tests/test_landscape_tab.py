"""The Landscape tab's endpoints, called as module functions over a Playground (no server), and the
rules its wiring keeps: every event an endpoint, timers off until something runs, no picture
sent by a timer."""

from __future__ import annotations

import math
import re
import secrets
import time
from types import SimpleNamespace

import gradio as gr
import pytest
import torch
from PIL import Image

from ebm_play import EBMError
from ui import landscape_tab as T
from ui import landscape_view as V

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SHOW = T.SHOW_NAMES
SKIP = gr.skip()


@pytest.fixture
def sid(pg):
    sid = "land-" + secrets.token_hex(6)
    yield sid
    run = T._run(pg, sid)
    T.landscape_reset(pg, sid, clear_points=True)
    if run is not None:  # a reset run's thread still ending when the interpreter exits aborts torch
        run.join(10)


def wait_for(pg, sid, ok, timeout=60.0, what="the run") -> dict:
    """Poll the status the way the page's timer does (generous: the test machine is shared)."""
    deadline = time.monotonic() + timeout
    while True:
        st = T.landscape_status(pg, sid)
        if ok(st):
            return st
        assert time.monotonic() < deadline, f"timed out waiting for {what}; last status {st}"
        time.sleep(0.05)


def sample(pg, sid, landscape="double_well", a=("mala", 0.005, None, 1.0), b=("annealed", 0.005, None, 1.0),
           steps=600, chains=300, start="first_mode"):
    return list(T.landscape_sample(pg, sid, landscape, *a, *b, steps, chains, 0, start, 20.0))


def test_every_event_is_an_endpoint_and_no_timer_takes_a_picture(pg):
    with gr.Blocks() as demo:
        session = gr.BrowserState(None)
        T.create_tab(pg, session)
    fns = list(demo.fns.values())
    assert fns and all(hasattr(f.fn, "endpoint") for f in fns), [f.name for f in fns if not hasattr(f.fn, "endpoint")]
    timers = [b for b in demo.blocks.values() if isinstance(b, gr.Timer)]
    assert timers and not any(t.active for t in timers)  # an idle page sends nothing
    for f in fns:
        if any(isinstance(demo.blocks.get(block), gr.Timer) for block, _ in f.targets):
            assert not any(isinstance(i, (gr.Image, gr.ImageEditor, gr.File)) for i in f.inputs), f.name
    named = {f.api_name for f in fns if f.api_name}
    assert {"landscape_train_start", "landscape_status", "landscape_pause", "landscape_step", "landscape_reset",
            "landscape_sample", "landscape_compose", "landscape_gif", "landscape_objectives_start",
            "landscape_objectives_status", "landscape_objectives_stop"} <= named


def test_play_pause_step_live_settings_and_reset(pg, sid):
    assert T.landscape_status(pg, sid)["state"] == "none"
    st = T.landscape_train_start(pg, sid, "two_moons")
    assert st["state"] in ("starting", "running") and st["dataset"] == "two_moons" and st["points"] == 2000
    st = wait_for(pg, sid, lambda s: s["step"] >= 10 and s["view_version"] >= 3, what="10 steps")
    assert math.isfinite(st["last"]["loss"]) and 0 <= st["fit"]["precision"] <= 1

    t = time.monotonic()
    st = T.landscape_pause(pg, sid)
    assert st["state"] == "paused" and time.monotonic() - t < 2.0  # a flag: answers at once (a loaded machine)
    at = wait_for(pg, sid, lambda s: s["pending_steps"] == 0)["step"]
    time.sleep(0.3)
    assert T.landscape_status(pg, sid)["step"] == at  # the pause holds
    st = T.landscape_step(pg, sid, "two_moons", steps=3)
    assert (st["pending_steps"] >= 1 or st["step"] > at) and st["state"] == "paused"
    wait_for(pg, sid, lambda s: s["step"] == at + 3 and s["pending_steps"] == 0, what="3 single steps")
    with pytest.raises(EBMError, match="not running: nothing to pause"):
        T.landscape_pause(pg, sid)

    # Play with a new learning rate and noise: the same run takes them from its next step
    run_id = T.landscape_status(pg, sid)["run"]
    st = T.landscape_train_start(pg, sid, "two_moons", lr=1e-3, noise=0.05)
    assert st["run"] == run_id and st["state"] == "running"
    st = wait_for(pg, sid, lambda s: s["config"]["lr"] == 1e-3, what="the new settings")
    assert st["config"]["noise"] == 0.05 and st["step"] >= at + 3
    # a new data set (or hidden size, or seed) is a new run
    st = T.landscape_train_start(pg, sid, "rings")
    assert st["run"] != run_id and st["dataset"] == "rings"
    assert T.landscape_reset(pg, sid)["state"] == "none"
    assert pg.active_runs() == 0


def test_points_given_through_the_api_cross_the_same_checks(pg, sid):
    with pytest.raises(EBMError, match="no points yet"):
        T.landscape_step(pg, sid, "custom")
    for bad, msg in (([[0, 3]], "square"), ([[float("nan"), float("nan")]], "finite"), ([1, 2, 3], "pairs"),
                     ("[[0, 0", "JSON")):
        with pytest.raises(EBMError, match=msg):
            T.landscape_step(pg, sid, "custom", points=bad)
    pts = [[-0.5 + 0.01 * i, 0.5] for i in range(20)] + [[0.5, -0.5 + 0.01 * i] for i in range(20)]
    st = T.landscape_step(pg, sid, "custom", points=pts, steps=5)
    assert st["points"] == 40 and st["custom_points"] == 40 and st["dataset"] == "custom"
    st = wait_for(pg, sid, lambda s: s["step"] == 5 and s["pending_steps"] == 0, what="5 steps on the points")
    assert st["state"] == "paused" and math.isfinite(st["last"]["loss"])


def test_a_click_adds_points_and_a_bad_click_is_refused(pg, sid):
    with pytest.raises(EBMError, match="click coordinate"):
        T.click(pg, sid, 10, SHOW, {}, SimpleNamespace(index=[float("nan"), float("nan")]))
    with pytest.raises(EBMError, match="two coordinates"):
        T.click(pg, sid, 10, SHOW, {}, SimpleNamespace(index=None))
    out = T.click(pg, sid, 10, SHOW, {}, SimpleNamespace(index=[V.SIZE / 2, V.SIZE / 4]))  # the plane's (0, 0.5)
    assert out[0] == "custom" and out[1].endswith(".jpg")
    pts = pg.sessions.get(sid).choices[T.POINTS]
    assert pts.shape == (10, 2) and abs(float(pts[:, 0].mean())) < 0.06 and abs(float(pts[:, 1].mean()) - 0.5) < 0.06
    T.landscape_step(pg, sid, "custom")
    wait_for(pg, sid, lambda s: s["step"] == 1 and s["pending_steps"] == 0)
    out = T.click(pg, sid, 5, SHOW, {}, SimpleNamespace(index=[0, V.SIZE]))  # a corner: clamped into the square
    assert T.landscape_status(pg, sid)["custom_points"] == 15 and out[1].endswith(".jpg")
    T.landscape_step(pg, sid, "custom")  # the live run trains on all 15 from its next step
    wait_for(pg, sid, lambda s: s["step"] == 2 and s["pending_steps"] == 0)
    assert len(pg.run_of(sid, "landscape").view.data) == 15


@pytest.mark.parametrize("call,msg", [
    (lambda pg, sid: T.landscape_train_start(pg, sid, "two_moons", lr=-1), "learning rate must be between"),
    (lambda pg, sid: T.landscape_train_start(pg, sid, "two_moons", sampler_steps=10_000),
     "Langevin steps must be between 0 and 200"),
    (lambda pg, sid: T.landscape_train_start(pg, sid, "mnist"), "data set: unknown value 'mnist'"),
    (lambda pg, sid: T.landscape_step(pg, sid, "two_moons", steps=11), "steps must be between 1 and 10"),
    (lambda pg, sid: T.landscape_pause(pg, sid), "no landscape run"),
    (lambda pg, sid: T.landscape_status(pg, "x"), "session"),
    (lambda pg, sid: sample(pg, sid, "ring", chains=5000), "chains must be between 1 and 1000"),
    (lambda pg, sid: sample(pg, sid, "ring", a=("gibbs", None, None, None)), "sampler A: unknown value 'gibbs'"),
    (lambda pg, sid: sample(pg, sid, "ring", a=("mala", float("nan"), None, None)), "A step size must be a finite"),
    (lambda pg, sid: sample(pg, sid, "trained"), "no trained landscape"),
    (lambda pg, sid: sample(pg, sid, "composed"), "no composed landscape"),
    (lambda pg, sid: T.landscape_compose(pg, sid, "ring", 50), "weight 1 must be between"),
    (lambda pg, sid: T.landscape_compose(pg, sid, "none", 1, "none", 1, "none", 1), "at least one term"),
    (lambda pg, sid: T.landscape_gif(pg, sid, "sampling"), "no sampling run"),
    (lambda pg, sid: T.landscape_gif(pg, sid, "training"), "no training run"),
    (lambda pg, sid: T.landscape_objectives_start(pg, sid, "two_moons", "dsm", "dsm"), "two different objectives"),
    (lambda pg, sid: T.landscape_objectives_start(pg, sid, "two_moons", "cd", "mle"), "objective B: unknown value"),
    (lambda pg, sid: T.landscape_objectives_start(pg, sid, "two_moons", updates=0), "updates must be between 1 and"),
    (lambda pg, sid: T.landscape_objectives_start(pg, sid, "two_moons", updates=1.5), "updates must be a whole"),
    (lambda pg, sid: T.landscape_objectives_start(pg, sid, "custom"), "no points yet"),
    (lambda pg, sid: T.landscape_objectives_stop(pg, sid), "no comparison running"),
    (lambda pg, sid: T.compare(pg, sid, "two_moons", "cd", "nce", 10, -1, {}), "seed must be between"),
])
def test_bad_input_gives_one_clear_message(pg, sid, call, msg):
    with pytest.raises(EBMError, match=msg):
        call(pg, sid)


def test_two_samplers_side_by_side_on_the_double_well(pg, sid):
    """MALA at T = 1 stays in the well it starts in; annealed MALA reaches both; the GIF animates it."""
    outs = sample(pg, sid)
    assert len(outs) >= 2 and outs[0][3] is None  # streamed frames first (the old result cleared), then the final
    img_a, img_b, table, result = outs[-1]
    assert Image.open(img_a).size == Image.open(img_b).size == (400, 400)
    a, b = result["samplers"]
    assert a["sampler"] == "mala" and b["sampler"] == "annealed" and result["modes"] == 2
    assert a["mode_share"][1] < 0.05 and b["mode_share"][0] > 0.25 and b["mode_share"][1] > 0.25
    assert b["chains_hopped"] > a["chains_hopped"] and 0.5 < a["accept_rate"] <= 1
    header = table.splitlines()[0]
    assert all(h in header for h in ("accept", "mean E", "modes", "hopped", "1st hop"))
    assert not re.findall(r"\d\.\d{5,}", table)  # numbers as people read them (4 significant digits)
    gif = T.landscape_gif(pg, sid, "sampling")
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames > 10 and im.width > im.height  # A and B side by side


def test_compose_then_sample_the_composition(pg, sid):
    img, info = T.landscape_compose(pg, sid, "ring", 1.0, "half_plane_up", 1.0, "none", 1.0)
    assert info["composed"] == "1×Ring + 1×Half-plane y > 0" and len(info["terms"]) == 2
    with Image.open(img) as im:
        assert im.width > 2 * im.height  # two terms and their sum
    *_, result = sample(pg, sid, "composed", a=("ula", 0.002, None, 1.0), b=("none", None, None, None), steps=200,
                        chains=100, start="uniform")[-1]
    assert len(result["samplers"]) == 1 and result["landscape"].startswith("composed")
    # a trained landscape composes too, with a negative weight
    T.landscape_step(pg, sid, "gaussians8", steps=5)
    wait_for(pg, sid, lambda s: s["step"] == 5 and s["pending_steps"] == 0)
    _, info = T.landscape_compose(pg, sid, "trained", 1.0, "ring", -0.5, "none", 1.0)
    assert "− 0.5×Ring" in info["composed"]
    gif = T.landscape_gif(pg, sid, "training")
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames >= 2


def test_the_view_sends_only_what_changed_and_its_timer_stops(pg, sid):
    out = T.refresh(pg, sid, SHOW, "two_moons", None)  # a page with no run: a preview, no timer
    assert out[0].endswith(".jpg") and "No run yet" in out[1] and out[5].active is False
    again = T.poll(pg, sid, SHOW, "two_moons", out[4])
    assert again[:4] == [SKIP] * 4 and again[5].active is False
    out = T.step_once(pg, sid, "two_moons", 5e-3, 20, 0.002, 0.0632, 0.1, 0.05, 64, 256, 0, SHOW, {})
    assert out[5].active is True  # the step is taken in the background: watch for it
    seen, deadline = out[4], time.monotonic() + 60
    while out[5].active:
        assert time.monotonic() < deadline, "the timer never stopped"
        time.sleep(T.POLL_S)
        out = T.poll(pg, sid, SHOW, "two_moons", seen)
        seen = out[4]
    assert "step 1" in seen["md"] and seen["canvas"][2] >= 1
    quiet = T.poll(pg, sid, SHOW, "two_moons", seen)
    assert quiet[:4] == [SKIP] * 4 and quiet[5].active is False
    shown = T.poll(pg, sid, ["data"], "two_moons", seen)  # other layers: a new picture, nothing else
    assert shown[0].endswith(".jpg") and shown[1:4] == [SKIP] * 3


def test_presets_fill_the_form_and_clear_the_last_results(pg):
    out = T.sample_preset(pg, "noise")
    assert out[:4] == ["gmm", "uniform", 400, 20.0] and out[4] == "langevin" and out[6].value == 0.0632
    assert out[-4:] == [None, None, "", None]  # pictures, statistics and JSON of another run: gone
    a = T.sampler_fields(pg, "langevin")
    assert a[1].interactive is True and a[2].interactive is False
    assert [x.interactive for x in T.sampler_fields(pg, "none")[1:]] == [False, False]


def follow(pg, sid, out, timeout=90.0) -> list:
    """Tick the comparison's timer the way the page does until it switches itself off."""
    seen, deadline = out[4], time.monotonic() + timeout
    while out[5].active:
        assert time.monotonic() < deadline, "the comparison's timer never stopped"
        time.sleep(T.COMPARE_POLL_S)
        out = T.compare_poll(pg, sid, seen)
        seen = out[4]
    return out


def test_objectives_side_by_side_show_energies_scores_and_mode_shares(pg, sid):
    assert T.landscape_objectives_status(pg, sid)["state"] == "none"
    out = T.compare(pg, sid, "gaussians8", "cd", "dsm", 30, 0, {})
    assert out[5].active is True and "cd vs dsm" in out[2]  # the timer follows the run
    last = follow(pg, sid, out)
    seen = last[4]
    assert "Finished" in seen["md"] and "update 30 of 30" in seen["md"]
    with Image.open(last[0]) as a, Image.open(last[1]) as b:  # the final pictures come with the last tick
        assert a.size == b.size == (T.SAMPLE_SIZE, T.SAMPLE_SIZE)
    table = seen["table"]
    assert all(h in table.splitlines()[0] for h in ("mode 1", "mode 8", "outside", "max weight error", "TV"))
    assert "**cd** (langevin)" in table and "**dsm** (ladder)" in table
    assert not re.findall(r"\d\.\d{5,}", table)  # numbers through fmt
    st = T.landscape_objectives_status(pg, sid)
    assert st["state"] == "finished" and st["objectives"] == ["cd", "dsm"] and st["dataset"] == "gaussians8"
    for side in st["sides"].values():  # 8 modes, shares of the samples and the data, each adding up to 1
        m = side["modes"]
        assert len(m["weights"]) == 8 and abs(sum(m["samples"]) - 1) < 1e-3 and abs(sum(m["data"]) - 1) < 1e-3
        assert 0 <= m["max_error"] <= 1 and m["tv"] >= m["outside"] - 1e-4  # TV counts the outside share
    run = pg.sessions.get(sid).runs["objectives"]
    assert run.sides["dsm"].sigma == 0.02 and run.sides["cd"].sigma is None
    quiet = T.compare_poll(pg, sid, seen)  # an idle page: nothing new, no timer
    assert quiet[:4] == [SKIP] * 4 and quiet[5].active is False


def test_a_comparison_stops_and_a_new_one_replaces_it(pg, sid):
    pts = [[-0.5 + 0.01 * i, 0.5] for i in range(20)] + [[0.5, -0.5 + 0.01 * i] for i in range(20)]
    st = T.landscape_objectives_start(pg, sid, "custom", "cd", "nce", T.MAX_COMPARE_STEPS, 3, points=pts)
    first = st["run"]
    st = T.landscape_objectives_start(pg, sid, "custom", "nce", "dsm", T.MAX_COMPARE_STEPS, 3)  # replaces it
    assert st["run"] != first and st["objectives"] == ["nce", "dsm"] and st["data"] == T.DATASET_NAMES["custom"]
    out = T.compare_stop(pg, sid, {})
    assert "Stopped" in out[2] or "drawing fresh samples" in out[2]
    seen = follow(pg, sid, out)[4]
    st = T.landscape_objectives_status(pg, sid)
    assert st["state"] == "stopped" and st["step"] < T.MAX_COMPARE_STEPS and "Stopped" in seen["md"]
    assert all(len(s["modes"]["weights"]) == 2 for s in st["sides"].values())  # the two clicked strokes
    assert pg.active_runs() == 0


# --- your points as CSV, and the command line --------------------------------------------------------------
def test_the_command_is_the_engines_for_plays_settings_and_its_data():
    import shlex

    from ebm_play import cli
    from ebm_play import landscapes as L
    from ebm_play.data import load_dataset
    from ebm_play.reproduce import train_command

    d = T.TRAIN_DEFAULTS
    for dataset in ("two_moons", "spiral", "custom"):
        values = {**d, "dataset": dataset, "lr": 0.002, "hidden": 32, "seed": 3}
        line, note = T.command(None, *(values[k] for k in T.SETTINGS))
        cfg = L.train_config(**{k: values[k] for k in T.SETTINGS[1:]})  # what Play trains with (_ensure_run)
        data = "my-points.csv" if dataset == "custom" else dataset
        assert line == train_command(cfg, data, 1000, "my-landscape.safetensors", preset="landscape")
        args = cli.build_parser().parse_args(shlex.split(line)[3:])
        assert cli.config_from_args(args) == cfg and args.data == data
        assert ("Download my points" in note) == (dataset == "custom")
    assert (load_dataset("two_moons").train.x == L.dataset("two_moons")[0]).all()  # the same points as the page


def test_an_uploaded_csv_becomes_my_points_and_downloads_back_exactly(pg, sid, tmp_path):
    from ebm_play.data import points_from_csv

    f = tmp_path / "mine.csv"
    f.write_text("x,y\n" + "".join(f"{10 + i},{-5 + 2 * i}\n" for i in range(30)))  # outside the square: scaled
    out = T.upload_points(pg, sid, str(f), SHOW, {})
    assert out[0] == "custom" and "30 points" in out[1] and "scaled" in out[1]
    own = T._points(pg, sid)
    assert own.shape == (30, 2) and own.abs().max() <= 0.95 + 1e-6
    assert torch.allclose(own[1] - own[0], own[2] - own[1])  # shape kept: still a line of equal steps
    st = T.landscape_step(pg, sid, "custom", steps=2)  # they are the data set for training
    assert st["dataset"] == "custom" and st["points"] == 30
    wait_for(pg, sid, lambda st: st["step"] >= 2 and st["state"] == "paused", what="two steps on the points")
    back = points_from_csv(T.points_download(pg, sid))
    assert torch.equal(back.train.x, own)  # what --data my-points.csv trains on
    assert T.upload_points(pg, sid, None, SHOW, {}) == [SKIP] * (2 + T.N_VIEW)


@pytest.mark.parametrize("text,message", [
    ("", "no points in it"),
    ("x,y\n", "a header but no points"),
    ("1,2\n3\n", "row 2: expected two numbers"),
    ("0.1,0.2\nnan,0.3\n", "NaN or infinite"),
    ("0.1,inf\n", "NaN or infinite"),
    ("5,5\n5,5\n", "every point is the same"),
    ("\n".join("0.1,0.2" for _ in range(T.MAX_CUSTOM + 1)), "over 5,000"),
])
def test_bad_csv_files_are_refused_with_one_line(pg, sid, tmp_path, text, message):
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(EBMError, match=message) as e:
        T.upload_points(pg, sid, str(f), SHOW, {})
    assert "\n" not in str(e.value) and T._points(pg, sid) is None


def test_too_large_or_binary_csv_files_are_refused_before_reading(pg, sid, tmp_path):
    big = tmp_path / "big.csv"
    big.write_text("0.1,0.2\n" * (T.CSV_BYTES // 8 + 1))
    with pytest.raises(EBMError, match="over the 1 MB limit"):
        T.upload_points(pg, sid, str(big), SHOW, {})
    with pytest.raises(EBMError, match="larger than 1 MB"):
        T.upload_points(pg, sid, {"path": str(big), "size": T.CSV_BYTES + 1}, SHOW, {})
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\xff\xfe\x00\x01" * 100)
    with pytest.raises(EBMError, match="not UTF-8"):
        T.upload_points(pg, sid, str(binary), SHOW, {})
    with pytest.raises(EBMError, match="no points of your own"):
        T.points_download(pg, sid)


def test_a_page_address_fills_plays_settings_and_notes_the_rest():
    """?tab=landscape&dataset=rings&lr=0.01…: each value checked by its field's spec; a bad one is
    left out with a note (issue #23: a demo link opens with its settings)."""
    values, notes = T.address_values({"tab": "landscape", "dataset": "rings", "lr": "0.01", "hidden": "128",
                                      "batch-size": "64", "seed": "7"})
    assert values == {"dataset": "rings", "lr": 0.01, "hidden": 128, "batch_size": 64, "seed": 7} and notes == []
    values, notes = T.address_values({"dataset": "volcano", "lr": "5", "hidden": "9999", "sampler_steps": "ten",
                                      "colour": "red", "dataset_": "custom"})
    assert values == {} and len(notes) == 6
    assert any("learning rate" in n for n in notes) and any("hidden units must be between 4 and 256" in n for n in notes)
    assert T.address_values({f"k{i}": "1" for i in range(30)})[0] == {}
    assert T.from_address(None, None) == [gr.skip()] * len(T.SETTINGS)  # no request: nothing to fill
