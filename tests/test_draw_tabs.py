"""The drawing tabs through their API (a real server, conftest): /inpaint, /denoise, /ood_score,
/ood_batch, /classify. (Their endpoints without a server: tests/test_<tab>_tab.py; the pads: test_draw.py.)"""

from __future__ import annotations

import math
import secrets

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import ebm_play
from ebm_play.images import grid

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

DRAW_ENDPOINTS = {"/inpaint", "/denoise", "/ood_score", "/ood_batch", "/classify"}
TEST = ebm_play.sample_digits(train=False)


def sid() -> str:
    return "draw-" + secrets.token_hex(6)


def editor(path, layers=()) -> dict:
    """An image-editor value, as an API caller sends one: a picture as background, optional layers."""
    return {"background": handle_file(str(path)), "layers": [handle_file(str(p)) for p in layers], "composite": None}


def png(tmp_path, name: str, img: Image.Image):
    p = tmp_path / name
    img.save(p)
    return p


def noise_png(tmp_path, name="noise.png", seed=0):
    a = (np.random.default_rng(seed).random((100, 100)) * 255).astype(np.uint8)
    return png(tmp_path, name, Image.fromarray(a))


def inpaint_args(session, image=None, digit=None, mask=None, fills=3, steps=30, sampler="auto", seed=0, keep_half=""):
    return (session, image, digit, mask, fills, steps, sampler, seed, None, None, None, keep_half)


def test_every_drawing_action_has_a_named_endpoint(client):
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert DRAW_ENDPOINTS <= set(api)
    names = {k: [p["parameter_name"] for p in api[k]["parameters"]] for k in DRAW_ENDPOINTS}
    assert names["/inpaint"][:4] == ["session", "image", "digit", "mask"] and names["/inpaint"][-1] == "keep_half"
    assert names["/denoise"][:6] == ["session", "image", "digit", "corruption", "strength", "corruption_seed"]
    assert names["/ood_score"] == ["session", "image", "digit", "model", "tpr"]
    assert names["/ood_batch"] == ["session", "files", "builtin", "model", "tpr"]
    assert names["/classify"] == ["session", "image", "digit", "tpr"]


def test_inpaint_keeps_the_unmasked_pixels_exactly(client, tmp_path):
    s = sid()
    job = client.submit(*inpaint_args(s, digit=3, keep_half="top"), api_name="/inpaint")  # keeps the top, as --keep top
    _masked, fills, _plot, strip, result, npz = job.result(timeout=60)
    z = np.load(npz)
    x, keep, image = z["x"], z["keep"], z["image"]
    assert np.array_equal(image, TEST.x[3:4].numpy())  # a test digit is used exactly, not re-preprocessed
    assert x.shape == (3, 1, 28, 28) and keep[0, 0, :14].all() and not keep[0, 0, 14:].any()
    kept = np.broadcast_to(keep, x.shape) > 0.5
    assert np.array_equal(x[kept], np.broadcast_to(image, x.shape)[kept])  # bit for bit
    assert not np.allclose(x[~kept], np.broadcast_to(image, x.shape)[~kept])  # the rest was filled
    assert result["kept_exactly"] and result["erased_pixels"] == 392 and len(result["energy"]) == 3
    assert all(math.isfinite(e) for e in result["energy"])
    assert Image.open(fills).size[0] > 28 and Image.open(strip).size[1] >= 3 * 28

    # a drawing (upload) with a painted mask layer: the right half painted = erased
    img = png(tmp_path, "digit.png", grid(TEST.x[7:8], 1, scale=10, pad=0))
    layer = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    layer.paste((239, 68, 68, 200), (140, 0, 280, 280))
    mask = {"background": None, "layers": [handle_file(str(png(tmp_path, "mask.png", layer)))], "composite": None}
    *_, result, npz = client.predict(*inpaint_args(s, image=editor(img), mask=mask, fills=2), api_name="/inpaint")
    z = np.load(npz)
    assert z["keep"][0, 0, :, :14].all() and not z["keep"][0, 0, :, 14:].any()
    kept = np.broadcast_to(z["keep"], z["x"].shape) > 0.5
    assert np.array_equal(z["x"][kept], np.broadcast_to(z["image"], z["x"].shape)[kept])
    assert result["input"] == "your drawing" and result["kept_exactly"]


def test_denoising_brings_a_test_digit_closer_to_the_clean_one(client):
    out = client.predict(sid(), None, 5, "gaussian", 0.5, 0, 0.01, 60, "langevin", 0, None, None, None,
                         api_name="/denoise")
    trio, _energy, _dist, summary, result, npz = out
    assert result["distance_restored"] < result["distance_noisy"], result
    assert result["energy_restored"] < result["energy_noisy"]
    z = np.load(npz)
    assert np.array_equal(z["clean"], TEST.x[5:6].numpy())
    assert np.linalg.norm(z["restored"] - z["clean"]) == pytest.approx(result["distance_restored"], rel=1e-4)
    assert "closer" in summary and Image.open(trio).size[0] >= 3 * 28
    # salt and pepper is reproducible with its seed
    a = client.predict(sid(), None, 5, "salt_pepper", 0.2, 3, 0.01, 0, "langevin", 0, None, None, None,
                       api_name="/denoise")[4]
    b = client.predict(sid(), None, 5, "salt_pepper", 0.2, 3, 0.01, 0, "langevin", 0, None, None, None,
                       api_name="/denoise")[4]
    assert a["distance_noisy"] == b["distance_noisy"] > 0


def test_ood_scores_rank_a_test_digit_below_noise(client, app, tmp_path):
    s = sid()
    for model in ((), ("current model",)):  # the default scorer, then the session's model
        digit = client.predict(s, None, 0, *model, api_name="/ood_score")[2]
        if not model and "mnist-ood" in app.playground.models:
            assert digit["model"] == "mnist-ood"  # the sharpest shipped detector (weights/README.md)
        noise = client.predict(s, editor(noise_png(tmp_path)), None, *model, api_name="/ood_score")[2]
        assert digit["energy"] < noise["energy"] and digit["percentile"] < noise["percentile"]
        assert noise["verdict"] == "out-of-distribution" and noise["percentile"] > 99
        assert 0 <= digit["percentile"] <= 100 and digit["tpr"] == 0.95


def test_ood_batch_gives_an_auroc_against_test_digits(client, tmp_path):
    _grid, _roc, summary, result = client.predict(sid(), None, "uniform noise", api_name="/ood_batch")
    assert result["auroc"] > 0.9 and result["n"] == 500 and "AUROC" in summary
    npz = tmp_path / "two.npz"
    np.savez(npz, x=TEST.x[:2].numpy())
    files = [handle_file(str(noise_png(tmp_path, f"n{i}.png", i))) for i in range(3)] + [handle_file(str(npz))]
    img, _roc, _summary, result = client.predict(sid(), files, "", api_name="/ood_batch")
    assert result["n"] == 5 and 0 <= result["auroc"] <= 1 and 0 <= result["fpr_at_tpr"] <= 1
    assert Image.open(img).size[0] > 28


def test_classify_returns_ten_probabilities_summing_to_one(client, app):
    if not any(m.has_classes for m in app.playground.models.values()):
        pytest.skip("no JEM model shipped")
    plot, answer, result = client.predict(sid(), None, 1, 0.95, api_name="/classify")
    if result["model"] == "mnist-ood":  # three JEMs averaged: the answer names the energy it uses
        assert "E(x) = mean_i (E_i(x) − μ_i)/σ_i" in answer
    p = result["probabilities"]
    assert len(p) == 10 and all(0 <= v <= 1 for v in p) and sum(p) == pytest.approx(1.0, abs=1e-5)
    assert result["prediction"] == int(np.argmax(p)) and math.isfinite(result["energy"])
    assert result["answer"] in ("I don't know", str(result["prediction"]), f"probably {result['prediction']}")
    assert result["answer"] in answer
    assert [row[0] for row in plot["value"]["data"]] == [str(i) for i in range(10)]  # a plot update, with its label
    assert plot["label"] == f"p(y|x) of {result['input']} under {result['model']}"


def test_bad_images_and_values_give_a_clear_message(client, tmp_path):
    s = sid()
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    huge = png(tmp_path, "huge.png", Image.new("L", (6000, 5000)))  # 30 M pixels, a few kB of PNG
    cases = [  # (endpoint, args, message)
        ("/classify", (s, None, None, 0.95), "drawing is empty"),  # the pad's default: a black canvas
        ("/ood_score", (s, editor(text), None), "not an image"),
        ("/denoise", (s, editor(huge), None), "too large|larger than"),
        ("/inpaint", inpaint_args(s, digit=1), "no mask"),
        ("/inpaint", inpaint_args(s, digit=2000, keep_half="top"), "test digit must be between 0 and 1999"),
        ("/inpaint", inpaint_args(s, digit=1, keep_half="middle"), "keep half: unknown value"),
        ("/inpaint", inpaint_args(s, digit=1, keep_half="top", fills=100), "fills must be between 1 and 16"),
        ("/inpaint", inpaint_args(s, digit=1, keep_half="top", steps=10**6), "steps must be between 0 and"),
        ("/inpaint", inpaint_args(s, digit=1, keep_half="top", seed=-1), "seed must be between"),
        ("/denoise", (s, None, 1, "speckle", 0.1), "unknown noise kind"),
        ("/denoise", (s, None, 1, "occlusion", 2.0), "between 0 and 1"),
        ("/denoise", (s, None, 1, "gaussian", 0.5, 0, -1.0), "λ"),
        ("/denoise", (s, None, 1, "gaussian", 0.5, 0, 0.01, 60, "gibbs"), "gradient sampler"),
        ("/ood_score", (s, None, 1, "no-such-model"), "unknown model"),
        ("/ood_score", (s, None, 1, "current model", 2.0), "true-positive rate must be between"),
        ("/ood_batch", (s, [handle_file(str(text))], ""), "notes.txt: not an image"),
        ("/ood_batch", (s, None, "zebras"), "built-in set: unknown value"),
        ("/ood_batch", (s, None, ""), "upload some images"),
    ]
    for endpoint, args, message in cases:
        with pytest.raises(AppError, match=message):
            client.predict(*args, api_name=endpoint)


def test_a_page_event_never_opens_a_path_it_is_sent(app, url, tmp_path):
    """The page's variants read canvas pads, which have no file data model: gradio hands them whatever a
    hand-made request holds. A path in place of the pad's data URL is refused, never opened."""
    import json

    import httpx

    digit = png(tmp_path, "digit.png", grid(TEST.x[7:8], 1, scale=10, pad=0))
    index = next(i for i, fn in app.fns.items() if fn.name == "classify_page")
    for forged in (str(digit), {"path": str(digit)}, {"path": str(digit), "meta": {"_type": "gradio.FileData"}}):
        session_hash = "forged" + secrets.token_hex(4)
        r = httpx.post(f"{url}gradio_api/queue/join", json={"fn_index": index, "session_hash": session_hash,
                                                            "data": [sid(), forged, None, 0.95]})
        assert r.status_code == 200, r.text
        with httpx.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session_hash},
                          timeout=60) as events:
            for line in events.iter_lines():
                msg = json.loads(line[5:]) if line.startswith("data:") else {}
                if msg.get("msg") == "process_completed":
                    break
        # refused by the pad's spec, or (file data) by gradio itself before any function runs
        assert msg["success"] is False and ("drawing: expected" in str(msg["output"])
                                            or "meta" in forged), (forged, msg)
