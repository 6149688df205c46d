"""Result quality at the defaults, judged by the evaluation classifier (issue #21's "results that disappoint").

    python benchmarks/quality.py [--part samplers denoise inpaint roundtrip compose] [--n 100] [--images DIR]

Uses only the public API that the previous main had too, so the same script measures before and after
(run it from an older checkout for the "before" column). Figures, all with fixed seeds:

- samplers: 32 chains from uniform noise per (shipped model, sampler) at the model's defaults: share the
  classifier is > 0.9 sure of, the classes among those, speckle (mean |x − 3×3 median|/2; test digits 0.015,
  noise 0.22), acceptance and the step size used after the warm-up;
- denoise: ``denoise(mnist, noisy)`` on ``--n`` test digits under Gaussian σ 0.3 and 0.5 and salt and pepper
  0.2: accuracy on the true label and mean L2 distance to the clean digit (the noisy input's beside it);
- inpaint: ``inpaint(mnist, digit, keep_half(h), n=2)`` on ``--n`` test digits: the fills' accuracy;
- roundtrip: each test digit saved by ``save_images`` as a PNG and read back by ``load_images``: mean |Δ|,
  and the accuracy of its fills (top half kept) against the original's;
- compose: 64 chains of each recipe (``composition.RECIPES`` where it exists, else the app's old recipes).
"""

import argparse
import json
import tempfile
from pathlib import Path

import _repo  # noqa: F401
import torch
import torch.nn.functional as F

import ebm_play
from ebm_play import metrics
from ebm_play.corruptions import corrupt
from ebm_play.masks import keep_half

torch.set_num_threads(1)
CLF = ebm_play.load_model("mnist-classifier")
TEST = ebm_play.sample_digits(False)


def speckle(x):
    p = F.pad(x, (1, 1, 1, 1), mode="replicate").unfold(2, 3, 1).unfold(3, 3, 1).reshape(*x.shape, 9)
    return ((x - p.median(-1).values).abs() / 2).flatten(1).mean(1)


def predict(x):
    _, p = metrics.classify(CLF, x)
    return p.max(1).values, p.argmax(1)


def show(row, out=None, x=None, name=None):
    print(json.dumps(row), flush=True)
    if out and x is not None:
        ebm_play.images.grid(x[:16], nrow=16).save(Path(out) / f"{name}.png")


def samplers(out):
    for name in ("mnist", "mnist-jem", "mnist-ood", "mnist-rbm"):
        m = ebm_play.load_model(name)
        for s in ("gibbs",) if name == "mnist-rbm" else ("langevin", "ula", "mala", "hmc", "annealed"):
            r = ebm_play.sample_chains(m, 32, None, s, seed=0)
            conf, pred = predict(r.x)
            sure = conf > 0.9
            show({"model": name, "sampler": s, "steps": r.steps[-1], "confident": round(sure.float().mean().item(), 3),
                  "classes": len(set(pred[sure].tolist())), "speckle": round(speckle(r.x).mean().item(), 4),
                  "accept": r.accept_rate and round(r.accept_rate, 2),
                  "step": getattr(r, "step_size", None) and float(f"{r.step_size:.2g}")}, out, r.x, f"{name}-{s}")


def denoise(n, out):
    m, clean, labels = ebm_play.load_model("mnist"), TEST.x[:n], TEST.y[:n]
    for kind, strength in (("gaussian", 0.3), ("gaussian", 0.5), ("salt_pepper", 0.2)):
        noisy = corrupt(clean, kind, strength, seed=1)
        x = ebm_play.denoise(m, noisy, seed=0).x
        dist = lambda y: round((y - clean).flatten(1).norm(dim=1).mean().item(), 2)  # noqa: E731
        acc = lambda y: round((predict(y)[1] == labels).float().mean().item(), 3)  # noqa: E731
        show({"noise": f"{kind} {strength}", "noisy acc": acc(noisy), "noisy dist": dist(noisy),
              "restored acc": acc(x), "restored dist": dist(x)}, out, torch.cat([noisy[:8], x[:8]]), f"denoise-{kind}{strength}")


def inpaint(n):
    m = ebm_play.load_model("mnist")
    for half in ("left", "top", "bottom", "right"):
        keep = keep_half(half)
        fills = torch.cat([ebm_play.inpaint(m, TEST.x[i:i + 1], keep, n=2, seed=i).x for i in range(n)])
        erased = torch.where(keep > 0.5, TEST.x[:n], torch.full_like(TEST.x[:n], -1.0))
        show({"kept": half, "erased acc": round((predict(erased)[1] == TEST.y[:n]).float().mean().item(), 3),
              "fills acc": round((predict(fills)[1] == TEST.y[:n].repeat_interleave(2)).float().mean().item(), 3)})


def roundtrip(n):
    m, keep = ebm_play.load_model("mnist"), keep_half("top")
    back = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            back.append(ebm_play.load_images(ebm_play.save_images(TEST.x[i:i + 1], Path(tmp) / "d.png")))
    back = torch.cat(back)
    acc = {}
    for what, x in (("original", TEST.x[:n]), ("read back", back)):
        fills = torch.cat([ebm_play.inpaint(m, x[i:i + 1], keep, n=2, seed=i).x for i in range(n)])
        acc[what] = round((predict(fills)[1] == TEST.y[:n].repeat_interleave(2)).float().mean().item(), 3)
    show({"mean |Δ| after save + load": round((back - TEST.x[:n]).abs().mean().item(), 4),
          "fills acc (top kept) original / read back": [acc["original"], acc["read back"]]})


def old_recipes(models):
    C, cnn, jem = ebm_play, models["mnist"], models["mnist-jem"]
    return {"3 AND 8": C.compose((C.ClassEnergy(jem, 3), 1.0), (C.ClassEnergy(jem, 8), 1.0)),
            "3 but not 8": C.compose((C.ClassEnergy(jem, 3), 1.0), (C.ClassEnergy(jem, 8), -0.3), (jem, 0.3)),
            "any digit but 1": C.compose((cnn, 1.0), (C.ClassEnergy(jem, 1), -0.03)),
            "symmetric digits": C.compose((cnn, 1.0), (C.SymmetryEnergy(), 0.05)),
            "thick 0": C.compose((cnn, 1.0), (C.ClassEnergy(jem, 0), 1.0), (C.InkEnergy(0.25), 0.3))}


def compose(out):
    models = {k: ebm_play.load_model(k) for k in ("mnist", "mnist-jem")}
    recipes = getattr(ebm_play.composition, "RECIPES", None)
    energies = {k: r.energy(models) for k, r in recipes.items()} if recipes else old_recipes(models)
    for name, e in energies.items():
        x = ebm_play.sample(e, 64, 100, "langevin", seed=0)
        conf, pred = predict(x)
        asym = ((x - torch.flip(x, dims=[-1])).abs() / 2).flatten(1).mean(1).mean().item()
        show({"recipe": name, "classes": torch.bincount(pred, minlength=10).tolist(),
              "confident": round((conf > 0.9).float().mean().item(), 3), "speckle": round(speckle(x).mean().item(), 4),
              "ink": round(((x + 1) / 2).mean().item(), 3), "asymmetry": round(asym, 3)}, out, x,
             "compose-" + name.replace(" ", "_"))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", nargs="+", default=["samplers", "denoise", "inpaint", "roundtrip", "compose"])
    ap.add_argument("--n", type=int, default=100, help="test digits for denoise, inpaint and roundtrip")
    ap.add_argument("--images", default=None, help="folder for a 16-image grid per row")
    a = ap.parse_args()
    if a.images:
        Path(a.images).mkdir(parents=True, exist_ok=True)
    for part in a.part:
        print(f"# {part}", flush=True)
        {"samplers": lambda: samplers(a.images), "denoise": lambda: denoise(a.n, a.images), "inpaint": lambda: inpaint(a.n),
         "roundtrip": lambda: roundtrip(a.n), "compose": lambda: compose(a.images)}[part]()
