"""The Compose tab: its endpoints called directly on a Playground (no server): the page's rows, the
recipes and their kept results, plots that show the run they belong to; then /compose through a real
server (conftest) driven by gradio_client."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from ebm_play import EBMError, settings
from ui import compose_tab as C
from ui import playback as P


def rows(pg, **changes) -> list:
    v = {**C.defaults(pg), **changes}
    return [v[k] for k in C.ROWS]


def test_the_page_rows_become_an_experts_list_and_a_run_starts_clean(pg):
    spec, timer, slider, *downloads, plot = C.compose_start(pg, *rows(pg, sym_on=True, ink_on=True, ink_w=-0.5))
    assert [e["expert"] for e in spec if e["on"]] == ["model", "ink", "symmetry"]
    assert "sketch" not in [e["expert"] for e in spec]  # a switched-off sketch is left out: no pad needed
    assert timer.active is False and slider.interactive is False and not any(d.visible for d in downloads)
    assert plot.value is None and plot.colors_in_legend == []  # nothing of the last run's plot or legend stays
    with pytest.raises(EBMError, match="weight must be between -10 and 10"):
        C.compose_start(pg, *rows(pg, m1_w=11))


def test_a_composition_streams_and_the_plot_names_only_its_own_experts(pg):
    experts = [{"expert": "model", "weight": 1.0}, {"expert": "symmetry", "weight": -0.5},
               {"expert": "ink", "target": 0.2, "weight": 0.3, "on": False}]
    outputs = list(C.compose(pg, None, experts, None, "ula", 10, chains=3, frames=3))
    _grid, plot, result = outputs[-1]
    names = [e["name"] for e in result["experts"]]
    assert set(result["terms"]) == set(names[:2]) and result["steps_done"] == 10
    assert plot.colors_in_legend == [f"{names[0]} (w +1)", "symmetry (w -0.5)", "total E"]
    df = plot.value["data"]
    assert {row[2] for row in df} == set(plot.colors_in_legend)
    rec = pg.records.get(result["record"])
    frame, _cmap, _legend = P.terms_frame(rec)
    last = frame[frame["step"] == 10]
    total = last[last["series"] == "total E"]["value"].iloc[0]
    assert math.isclose(total, last[last["series"] != "total E"]["value"].sum(), rel_tol=1e-4, abs_tol=1e-4)


def test_recipes_load_their_rows_and_a_result_kept_once(pg):
    book = C.recipes(pg)
    if "mnist" in pg.models and "mnist-jem" in pg.models:
        assert set(book) == {"3 AND 8", "3 but not 8", "any digit but 1", "symmetric digits", "thick 0"}
    name = "symmetric digits" if "symmetric digits" in book else next(iter(book))
    out = C.load_recipe(pg, name)
    values = dict(zip(C.KEYS, out[:len(C.KEYS)]))
    _grid, plot, status, record, _slider, experts, _result = out[len(C.KEYS):]
    assert values["sym_on"] and values["sym_w"] == 0.05 and status.startswith("Cached result of this recipe")
    assert [e["name"] for e in experts if e["on"]] == [n.split(" (w")[0] for n in plot.colors_in_legend[:-1]]
    assert C.load_recipe(pg, name)[len(C.KEYS) + 3] == record  # computed once, then kept
    assert P.scrub(pg, record, 0)[1].startswith("frame 1 of")  # and scrubbed like any run
    with pytest.raises(EBMError, match="unknown recipe"):
        C.load_recipe(pg, "pizza")


def test_every_recipe_builds_a_finite_energy(pg):
    for name, v in C.recipes(pg).items():
        job = C._job(pg, None, C.to_spec(*(v[k] for k in C.ROWS)), None, "langevin", 1, None, None, None, 2, 0, 2,
                     None, None, None)
        assert torch.isfinite(job.energy(torch.zeros(2, 1, 28, 28))).all(), name


def test_only_gradient_samplers_are_offered(pg):
    sampler, steps, *knobs = C.compose_knobs(pg, "hmc", None)
    assert [c[0] for c in sampler.choices] == C.SAMPLERS and "gibbs" not in C.SAMPLERS
    want = settings.resolve(C.COMPOSED, "hmc")
    assert knobs[3].visible and knobs[3].value == want.options["leapfrog"] and steps == want.steps
    with pytest.raises(EBMError, match="need a gradient sampler.*not 'gibbs'"):
        list(C.compose(pg, None, [{"expert": "symmetry"}], None, "gibbs", 5))
    with pytest.raises(EBMError, match="too much work"):
        list(C.compose(pg, None, [{"expert": "model"}, {"expert": "model"}], None, "langevin", 5000, chains=40))


# --- through the server ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_composition_with_a_negative_weight_streams_and_downloads(client, app):
    jem = "mnist-jem" in app.playground.models
    experts = ([{"expert": "class", "label": 3, "weight": 1.0}, {"expert": "class", "label": 8, "weight": -0.3},
                {"expert": "model", "model": "mnist-jem", "weight": 0.3}] if jem else
               [{"expert": "model", "weight": 1.0}, {"expert": "symmetry", "weight": -0.5}])
    job = client.submit(None, experts, None, "langevin", 150, chains=8, seed=1, frames=10, api_name="/compose")
    image, plot, result = job.result(timeout=50)
    assert len(job.outputs()) >= 2 and plot is not None
    assert result["steps_done"] == 150 and len(result["energy"]) == 8 and all(map(math.isfinite, result["energy"]))
    assert [e["weight"] for e in result["experts"]] == [e["weight"] for e in experts]
    assert set(result["terms"]) == {e["name"] for e in result["experts"]}
    assert Image.open(image).size[0] > 100
    gif, _mp4, _png, npz = client.predict(result["record"], 10, api_name="/sample_files")
    assert Image.open(gif).n_frames == 10
    with np.load(npz) as z:
        assert {"term_" + "".join(c if c.isalnum() else "_" for c in n) for n in result["terms"]} <= set(z.files)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_compose_with_a_sketch_and_each_gradient_sampler(client, tmp_path):
    sketch = np.zeros((56, 56), np.uint8)
    sketch[10:46, 26:30] = 255  # a vertical bar: "a 1"
    path = tmp_path / "sketch.png"
    Image.fromarray(sketch).save(path)
    experts = [{"expert": "sketch", "weight": 1.0}, {"expert": "ink", "target": 0.1, "weight": 0.5}]
    for sampler in ("langevin", "ula", "mala", "hmc", "annealed"):
        _image, _plot, result = client.predict(None, experts, handle_file(str(path)), sampler, 4, chains=2,
                                               frames=3, leapfrog=2, api_name="/compose")
        assert result["sampler"] == sampler and result["steps_done"] == 4
        assert (result["accept_rate"] is not None) == (sampler in ("mala", "hmc"))


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_compose_checks_its_inputs_on_the_server(client):
    with pytest.raises(AppError, match="need a gradient sampler.*not .gibbs"):
        client.predict(None, [{"expert": "symmetry", "weight": 1}], None, "gibbs", 5, api_name="/compose")
    with pytest.raises(AppError, match="weight must be between"):
        client.predict(None, [{"expert": "symmetry", "weight": -11}], None, "langevin", 5, api_name="/compose")
    with pytest.raises(AppError, match="non-empty list"):
        client.predict(None, None, None, "langevin", 5, api_name="/compose")
    with pytest.raises(AppError, match="experts must be a JSON list"):
        client.predict(None, "not json", None, "langevin", 5, api_name="/compose")


def test_the_recipe_buttons_are_the_engines_checked_recipes(pg):
    """Issue #21: the page's recipes are composition.RECIPES (each promise checked on 64 chains in
    tests/test_composition.py), row for row: the same experts, labels (a set for "symmetric digits")
    and weights, with the unconditional model as the prior."""
    from ebm_play import composition

    book = C.recipes(pg)
    assert set(book) == set(composition.recipes(pg.models))
    for name, v in book.items():
        rows = C.to_spec(*(C.ROW_SPECS[k](k, v[k]) for k in C.ROWS))
        page = [{k: e[k] for k in ("expert", "model", "label", "weight", "target") if k in e} for e in rows if e["on"]]
        engine = [{k: e[k] for k in ("expert", "model", "label", "weight", "target") if k in e}
                  for e in composition.RECIPES[name].experts]
        key = lambda e: (e["expert"], str(e.get("label")))  # noqa: E731
        assert sorted(page, key=key) == sorted(engine, key=key), name
        assert v["sampler"] == composition.RECIPES[name].sampler and v["steps"] == composition.RECIPES[name].steps
