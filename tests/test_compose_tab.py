"""The Compose tab: building composed energies from expert lists, the recipes, and /compose through
a real server (conftest) driven by gradio_client."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import ebm_play
from ui import chains as C
from ui import compose_tab


def test_experts_list_builds_the_weighted_sum(app):
    reg = app.registry
    energy, spec = compose_tab.build_energy(reg, None, [
        {"expert": "model", "weight": 1.0},
        {"expert": "symmetry", "weight": -0.5},
        {"expert": "ink", "target": 0.2, "weight": 2.0, "on": False},
        {"expert": "symmetry", "weight": 0.25},
    ])
    assert [e["name"] for e in spec][1:] == ["symmetry", "ink 0.2", "symmetry #2"]
    x = ebm_play.sample_digits(train=False).x[:3]
    model = reg.models[reg.default_model]
    sym = ebm_play.SymmetryEnergy()(x)
    with torch.no_grad():
        want = model(x) - 0.5 * sym + 0.25 * sym  # the switched-off ink expert does not count
        assert torch.allclose(energy(x), want, atol=1e-5)
    assert set(energy.terms(x)) == {spec[0]["name"], "symmetry", "symmetry #2"}


@pytest.mark.parametrize("experts,message", [
    ([], "non-empty list"),
    ("not json", "JSON list"),
    ([{"expert": "unicorn", "weight": 1}], "unknown kind 'unicorn'"),
    ([{"expert": "symmetry", "weight": 50}], "weight must be between -10 and 10"),
    ([{"expert": "symmetry", "weight": float("inf")}], "weight must be a (finite )?number"),
    ([{"expert": "symmetry", "weight": 1, "on": "yes"}], "'on' must be true or false"),
    ([{"expert": "ink", "target": 2, "weight": 1}], "ink target must be between 0 and 1"),
    ([{"expert": "class", "label": 11, "weight": 1}], "class must be between 0 and 9"),
    ([{"expert": "sketch", "weight": 1}], "the sketch expert needs a sketch"),
    ([{"expert": "symmetry", "weight": 1, "on": False}], "switched off or has weight 0"),
    ([{"expert": "model", "model": "nope", "weight": 1}], "unknown model 'nope'"),
    ([{"expert": "symmetry", "weight": 1}] * 9, "at most 8 experts"),
])
def test_bad_expert_lists_say_what_is_wrong(app, experts, message):
    with pytest.raises(ebm_play.EBMError, match=message):
        compose_tab.build_energy(app.registry, None, experts)


def test_every_recipe_builds(app):
    reg = app.registry
    book = dict(compose_tab.recipes(reg))
    if "mnist" in reg.models and "mnist-jem" in reg.models:
        assert set(book) == {"3 AND 8", "3 but not 8", "any digit but 1", "symmetric digits", "thick 0"}
    assert any(r[k] < 0 for r in book.values() for k in ("a_w", "b_w") if k in r and r.get(k[0] + "_on")) or \
        "3 but not 8" not in book
    jems = compose_tab.jem_names(reg)
    for name, r in book.items():
        row = {"m1_on": False, "m1": reg.default_model, "m1_w": 1.0, "m2_on": False, "m2": reg.default_model,
               "m2_w": 1.0, "a_on": False, "a_label": 3, "a_w": 1.0, "b_on": False, "b_label": 8, "b_w": 1.0,
               "ink_on": False, "ink_t": 0.25, "ink_w": 0.3, "sym_on": False, "sym_w": 0.05, "sk_on": False,
               "sk_w": 1.0, "jem": jems[0] if jems else None, **r}
        spec = compose_tab.to_spec(*(row[k] for k in ("m1_on", "m1", "m1_w", "m2_on", "m2", "m2_w", "a_on", "a_label",
                                                      "a_w", "b_on", "b_label", "b_w", "ink_on", "ink_t", "ink_w",
                                                      "sym_on", "sym_w", "sk_on", "sk_w", "jem")))
        energy, _ = compose_tab.build_energy(reg, None, spec)
        assert torch.isfinite(energy(torch.zeros(2, 1, 28, 28))).all(), name


def test_terms_plot_has_one_line_per_expert_and_the_total():
    r = ebm_play.compose((ebm_play.SymmetryEnergy(), 1.0), (ebm_play.InkEnergy(0.2), -0.5), names=["sym", "ink"])
    rec_ = C.Recorder(10, 3, 4, terms=r.terms)
    res = ebm_play.sample_chains(r, 3, 10, "ula", seed=0, callback=rec_, temperature=1e-3, step_size=1e-4)
    rec = rec_.finish(res.x)
    df, cmap = C.terms_plot_data(rec, {"sym": 1.0, "ink": -0.5})
    assert set(df["series"]) == {"sym (w +1)", "ink (w -0.5)", "total E"} and set(cmap) == set(df["series"])
    total = df[df["series"] == "total E"]["value"].iloc[-1]
    parts = df[(df["step"] == 10) & (df["series"] != "total E")]["value"].sum()
    assert math.isclose(total, parts, rel_tol=1e-4, abs_tol=1e-4)  # the weighted terms add up to E


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_composition_with_a_negative_weight_streams_and_downloads(client, app):
    jem = "mnist-jem" in app.registry.models
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
    with pytest.raises(AppError, match="too much work"):
        client.predict(None, [{"expert": "model", "weight": 1}], None, "langevin", 5000, chains=256,
                       api_name="/compose")
    with pytest.raises(AppError, match="non-empty list"):
        client.predict(None, None, None, "langevin", 5, api_name="/compose")
