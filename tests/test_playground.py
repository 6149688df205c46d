"""The one manager of runs: budget, session and slot checks come before any allocation."""

from __future__ import annotations

import threading
import time

import pytest

import ebm_play
from ebm_play import EBMError
from ebm_play import landscapes as L
from ebm_play.playground import TRAINED_MODEL, Playground
from ebm_play.runs import Limits
from ebm_play.training import preset

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pg():
    p = Playground("cpu", limits=Limits(running=2))
    yield p
    p.stop_all()


def small():
    return preset("fast", buffer_size=128, batch_size=8, sampler_steps=2)


def test_ten_concurrent_starts_build_at_most_the_cap(pg, monkeypatch):
    built = []
    original = ebm_play.runs.Trainer

    def counting(*a, **kw):
        built.append(1)
        return original(*a, **kw)

    monkeypatch.setattr(ebm_play.runs, "Trainer", counting)
    d = pg.data()
    results = []

    def start(i):
        try:
            results.append(pg.start_run(f"crowd-{i:04d}", "image", small(), d.x, d.y))
        except EBMError as e:
            results.append(str(e))

    threads = [threading.Thread(target=start, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs = [r for r in results if not isinstance(r, str)]
    assert len(runs) == 2 and all("server is busy" in r for r in results if isinstance(r, str))
    time.sleep(1)
    assert len(built) == 2
    for r in runs:
        r.stop()
        r.join(10)


def test_one_live_run_per_session_and_kind_and_resume_needs_a_slot(pg):
    d = pg.data()
    run = pg.start_run("owner-0001", "image", small(), d.x, d.y)
    with pytest.raises(EBMError, match="already has a"):
        pg.start_run("owner-0001", "image", small(), d.x, d.y)
    pts, _ = L.make_dataset("two_moons", 200, seed=0)
    land = pg.start_run("owner-0001", "landscape", L.train_config(), pts)  # another kind: fine
    with pytest.raises(EBMError, match="server is busy"):
        pg.start_run("owner-0002", "image", small(), d.x, d.y)
    land.pause()
    deadline = time.monotonic() + 30
    while land.state != "paused":  # (a pause asked for while starting lands when the trainer is built)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    other = pg.start_run("owner-0002", "image", small(), d.x, d.y)  # a paused run frees its slot
    with pytest.raises(EBMError, match="server is busy"):
        pg.resume_run("owner-0001", "landscape")
    for r in (run, land, other):
        r.stop()
        r.join(10)


def test_memory_budget_refuses_before_allocating():
    pg = Playground("cpu", limits=Limits(run_bytes=50 * 2**20))
    with pytest.raises(EBMError, match="lower the buffer size"):
        pg.start_run("big-buffer-1", "image", preset("fast", buffer_size=100_000), pg.data().x, pg.data().y)
    assert pg.sessions.peek("big-buffer-1") is None  # refused before even a session was made
    tiny = Playground("cpu", limits=Limits(run_bytes=2**16))  # 64 KB: less than two 2-D trainers hold together
    with pytest.raises(EBMError, match="over the 0 MB a run may use"):
        tiny.start_objectives("big-sbs-01", L.dataset("two_moons")[0], ("cd", "dsm"), 0, 10)
    assert tiny.sessions.peek("big-sbs-01") is None



def test_objectives_side_by_side_take_one_slot_and_report_mode_shares(pg):
    data, labels = L.make_dataset("two_moons", 400, seed=0)
    modes = L.modes_for("two_moons", data=data, labels=labels)
    for bad, msg in (((("cd", "cd"), 10), "two or more different"), ((("cd", "mle"), 10), "two or more different"),
                     ((("cd", "dsm"), 0), "updates must be"), ((("cd", "dsm"), 10**6), "updates must be")):
        with pytest.raises(EBMError, match=msg):
            pg.start_objectives("sbs-0001", data, *bad[:1], 0, bad[1], modes)
    other = pg.start_run("sbs-0002", "landscape", L.train_config(), data)
    run = pg.start_objectives("sbs-0001", data, ("cd", "dsm"), 0, 20, modes, source="two moons")
    with pytest.raises(EBMError, match="already has a"):
        pg.start_objectives("sbs-0001", data, ("cd", "nce"), 0, 20, modes)
    with pytest.raises(EBMError, match="server is busy"):  # two running: the comparison holds one slot
        pg.start_run("sbs-0003", "landscape", L.train_config(), data)
    other.stop()
    run.join(60)
    st = run.status()
    assert st["state"] == "finished" and st["step"] == 20 and not st["busy"] and pg.active_runs() == 0
    assert st["sides"]["cd"]["sampler"] == "langevin" and st["sides"]["dsm"]["sampler"] == "ladder"
    assert st["sides"]["dsm"]["step"] == st["sides"]["cd"]["step"] == 20 and st["sides"]["dsm"]["sigma"] == 0.02
    for side in run.sides.values():  # the energy, the score field and the samples the report counts
        assert side.E.shape == (run.GRID, run.GRID) and side.score[2].shape == (run.SCORE_GRID, run.SCORE_GRID)
        assert side.samples.shape == (run.N_SAMPLES, 2) and len(side.report["weights"]) == 2
        assert 0 <= side.report["tv"] <= 1 and side.report["data"][-1] == 0.0


def test_the_classifying_model_is_the_sessions_jem_else_the_preferred_one(pg):
    jems = [k for k, m in pg.models.items() if m.has_classes]
    if not jems:
        with pytest.raises(EBMError, match="needs a JEM"):
            pg.classifying_model("classify-0001")
        return
    expected = "mnist-ood" if "mnist-ood" in jems else jems[0]
    assert pg.classifying_model("classify-0001")[1] == expected  # the default model (mnist) is no JEM
    pg.use_model("classify-0002", jems[-1])
    assert pg.classifying_model("classify-0002") == (pg.models[jems[-1]], jems[-1])
    assert pg.classifying_model("classify-0001", preferred=jems[-1])[1] == jems[-1]

def test_a_trained_model_is_used_in_the_session_only(pg):
    d = pg.data()
    run = pg.start_run("trainer-0001", "image", small(), d.x, d.y, max_steps=2)
    deadline = time.monotonic() + 60
    while run.state != "finished":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert pg.use_trained("trainer-0001") == f"{TRAINED_MODEL} (cnn, step 2)"
    assert pg.current_model("trainer-0001")[1].startswith(TRAINED_MODEL)
    assert pg.current_model("someone-else")[1] == pg.default_model
    with pytest.raises(EBMError, match="no model trained"):
        pg.named_model("someone-else", TRAINED_MODEL)
