"""How good is a model? Sample quality judged by an evaluation classifier, and OOD detection.

- Fréchet digit distance (FDD): the Fréchet distance between Gaussians fitted to the evaluation
  classifier's 128-d features of samples and of MNIST test digits (FID with a digit classifier).
- Confident fraction: share of samples the classifier labels with p > 0.9.
- Class coverage: entropy of the predicted-class histogram / log 10 (1 = all digits equally).
- OOD AUROC: how well the energy ranks MNIST test digits below an out-of-distribution set
  (1 = perfectly, 0.5 = chance); lower energy = in-distribution.
"""

from __future__ import annotations

import math
import string
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from .data import Digits
from .images import preprocess
from .models import DigitClassifier
from .runtime import make_generator


def train_classifier(train: Digits, epochs: int = 3, batch_size: int = 128, lr: float = 1e-3,
                     seed: int = 0, log=print) -> DigitClassifier:
    """Supervised training of the evaluation classifier, with small random shifts for robustness."""
    torch.manual_seed(seed)
    g = make_generator(seed, torch.device("cpu"))
    model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * math.ceil(len(train.x) / batch_size))
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(train.x), generator=g)
        t0 = time.time()
        for i in range(0, len(order), batch_size):
            idx = order[i: i + batch_size]
            x = train.x[idx]
            dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(x), train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        log(f"classifier epoch {epoch + 1}/{epochs}: loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
    return model.eval()


@torch.no_grad()
def classify(classifier: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(features N×128, probabilities N×10)."""
    classifier.eval()
    feats, probs = [], []
    for i in range(0, len(x), batch_size):
        f = classifier.features(x[i: i + batch_size])
        feats.append(f)
        probs.append(torch.softmax(classifier.head(f), 1))
    return torch.cat(feats), torch.cat(probs)


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2(Σ1^½ Σ2 Σ1^½)^½), in float64."""
    a, b = f1.double().numpy(), f2.double().numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    r = _sqrtm_psd(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)


def label_quality(probs: torch.Tensor) -> dict:
    """Confident fraction and class coverage from the classifier's probabilities (N×10)."""
    conf, pred = probs.max(1)
    hist = torch.bincount(pred, minlength=10).double() / len(pred)
    entropy = max(0.0, -(hist[hist > 0] * hist[hist > 0].log()).sum().item())  # one class: 0, not -0
    return {"confident": conf.gt(0.9).float().mean().item(), "coverage": entropy / math.log(10), "n": len(probs)}


def sample_quality(classifier: nn.Module, x: torch.Tensor, reference_features: torch.Tensor) -> dict:
    feats, probs = classify(classifier, x)
    return {"fdd": frechet_distance(feats, reference_features), **label_quality(probs)}


def auroc(in_scores: torch.Tensor, out_scores: torch.Tensor) -> float:
    """P(E_out > E_in) with ties counted half (Mann–Whitney), i.e. the area under the ROC curve
    of the energy as a detector of out-of-distribution inputs."""
    s = torch.cat([in_scores, out_scores]).double()
    ranks = _average_ranks(s)
    n_in, n_out = len(in_scores), len(out_scores)
    r_out = ranks[n_in:].sum().item()
    return (r_out - n_out * (n_out + 1) / 2) / (n_in * n_out)


def _average_ranks(s: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(s)
    sorted_s = s[order]
    ranks = torch.empty_like(s)
    i = 0
    n = len(s)
    while i < n:
        j = i
        while j + 1 < n and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i: j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def roc_curve(in_scores: torch.Tensor, out_scores: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) with OOD as the positive class, for plotting."""
    s = torch.cat([in_scores, out_scores]).numpy()
    lab = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    order = np.argsort(-s, kind="stable")
    tp = np.cumsum(lab[order])
    fp = np.cumsum(1 - lab[order])
    return np.r_[0, fp / max(fp[-1], 1)], np.r_[0, tp / max(tp[-1], 1)]


def blur(x: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Gaussian blur, the "blurred real digits" yardstick for sample quality."""
    r = int(math.ceil(3 * sigma))
    k = torch.exp(-torch.arange(-r, r + 1).float().pow(2) / (2 * sigma**2))
    k = k / k.sum()
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def render_letters(size: int = 26) -> torch.Tensor:
    """Letters A–Z and a–z rendered with PIL's built-in font, made MNIST-like by ``preprocess``."""
    try:
        font = ImageFont.load_default(size=40)
    except TypeError:  # Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    out = []
    for ch in (string.ascii_uppercase + string.ascii_lowercase)[: 2 * size]:
        img = Image.new("L", (64, 64), 0)
        ImageDraw.Draw(img).text((12, 4), ch, fill=255, font=font)
        out.append(preprocess(img))
    return torch.cat(out)


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 24) -> list[tuple[float, float]]:
    return [(cx + rx * math.cos(math.radians(a0 + (a1 - a0) * i / n)), cy + ry * math.sin(math.radians(a0 + (a1 - a0) * i / n)))
            for i in range(n + 1)]


# Each digit as mouse strokes on the app's 280×280 drawing pad: polylines through these points.
_STROKES = {
    0: [_arc(140, 140, 60, 95, 0, 360)],
    1: [[(150, 45), (140, 235)]],
    2: [_arc(140, 100, 55, 50, 200, 380) + [(95, 230), (200, 230)]],
    3: [_arc(135, 95, 50, 45, 210, 450), _arc(135, 185, 55, 50, 270, 510)],
    4: [[(130, 45), (85, 160), (200, 160)], [(170, 90), (165, 240)]],
    5: [[(195, 50), (110, 50), (100, 130)] + _arc(135, 175, 60, 55, 230, 480)],
    6: [[(170, 45)] + _arc(135, 180, 55, 55, 200, 560)],
    7: [[(85, 55), (200, 55), (120, 235)]],
    8: [_arc(140, 95, 45, 45, 0, 360), _arc(140, 190, 55, 50, 0, 360)],
    9: [_arc(140, 100, 50, 50, 0, 360), [(188, 100), (170, 240)]],
}


def render_drawn_digits(per_class: int = 5, widths: tuple[int, ...] = (13, 26), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits drawn the way a user draws on the app's pad (round-capped strokes of each width, each
    drawing randomly widened or narrowed, sheared and jittered by 2 px), made MNIST-like by
    ``preprocess``. Images (10·per_class·len(widths)) and labels: a scorer should accept them as digits."""
    rng = np.random.default_rng(seed)
    out, labels = [], []
    for width in widths:
        for digit, strokes in _STROKES.items():
            for _ in range(per_class):
                img = Image.new("L", (280, 280), 0)
                draw = ImageDraw.Draw(img)
                sx, shear = rng.uniform(0.85, 1.1), rng.uniform(-0.15, 0.15)
                for stroke in strokes:
                    pts = [(140 + (x - 140) * sx + (y - 140) * shear + rng.normal(0, 2), y + rng.normal(0, 2)) for x, y in stroke]
                    draw.line(pts, fill=255, width=width, joint="curve")
                    for x, y in (pts[0], pts[-1]):
                        draw.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=255)
                out.append(preprocess(img))
                labels.append(digit)
    return torch.cat(out), torch.tensor(labels)


def ood_sets(test: torch.Tensor, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The built-in out-of-distribution sets, each of n images (letters repeat the 52 glyphs)."""
    g = make_generator(seed, torch.device("cpu"))
    d = test[:n]
    letters = render_letters()
    return {
        "uniform noise": torch.rand((n, 1, 28, 28), generator=g) * 2 - 1,
        "gaussian noise": (torch.randn((n, 1, 28, 28), generator=g) * 0.5).clamp(-1, 1),
        "inverted digits": -d,
        "rotated digits": torch.rot90(d, 1, dims=(2, 3)),
        "letters": letters[torch.arange(n) % len(letters)],
        "constant": (torch.rand((n, 1, 1, 1), generator=g) * 2 - 1).expand(n, 1, 28, 28).contiguous(),
    }


def _samples(model, n: int, sampler: str | None, steps: int | None, seed: int, batch: int = 250, label=None):
    """n samples from fresh uniform-noise chains with the model's recommended settings."""
    from .api import default_sampler, sample
    from .composition import ClassEnergy

    energy = model if label is None else ClassEnergy(model, label)
    if label is not None:
        energy.info = getattr(model, "info", {})
    sampler = sampler or ("gibbs" if model.kind == "rbm" else default_sampler(model))
    out = [sample(energy, min(batch, n - i), steps, sampler, seed=seed + i) for i in range(0, n, batch)]
    return torch.cat(out), sampler


def evaluate(model: nn.Module, classifier: nn.Module, test: Digits, n_samples: int = 1000,
             sampler: str | None = None, steps: int | None = None, seed: int = 0, log=print) -> dict:
    """Every figure of the model card: sample quality (with held-out and blurred real digits for
    scale), OOD AUROC against each built-in set, and for JEM accuracy and class-conditional match."""
    from .api import default_sampler_settings, score
    from .ood import DEFAULT_TPR, threshold

    t0 = time.time()
    n_ref = min(5000, len(test.x) - n_samples)
    if n_ref < 100:
        raise ValueError(f"need at least {n_samples + 100} test digits, have {len(test.x)}")
    ref, held_out = test.x[:n_ref], test.x[-n_samples:]
    ref_feats, _ = classify(classifier, ref)
    report: dict = {"model": getattr(model, "source", model.kind), "kind": model.kind, "test_data": test.source,
                    "n_samples": n_samples, "n_reference": n_ref}
    report["held_out"] = sample_quality(classifier, held_out, ref_feats)
    report["blurred"] = sample_quality(classifier, blur(held_out), ref_feats)
    x, sampler = _samples(model, n_samples, sampler, steps, seed)
    settings = default_sampler_settings(model, sampler)
    report["sampler"] = {"name": sampler, **settings, **({"steps": steps} if steps else {})}
    report["samples"] = sample_quality(classifier, x, ref_feats)
    log(f"samples done ({time.time() - t0:.0f}s)")
    e_in = score(model, ref[:n_samples])
    report["ood_auroc"] = {name: auroc(e_in, score(model, o)) for name, o in ood_sets(held_out, n_samples, seed).items()}
    report["drawn_accepted"] = (score(model, render_drawn_digits()[0]) <= threshold(e_in, DEFAULT_TPR)).float().mean().item()
    if model.has_classes:
        with torch.no_grad():
            pred = torch.cat([model.classify(test.x[i: i + 1000]).argmax(1) for i in range(0, len(test.x), 1000)])
        report["accuracy"] = (pred == test.y).float().mean().item()
        per = max(1, n_samples // 10)
        matches = []
        for label in range(10):
            xc, _ = _samples(model, per, sampler, steps, seed + 1000 * label, label=label)
            matches.append((classify(classifier, xc)[1].argmax(1) == label).float())
        report["conditional_match"] = torch.cat(matches).mean().item()
    report["seconds"] = round(time.time() - t0, 1)
    return report


def format_report(r: dict) -> str:
    """The report as the plain-text table printed by ``python -m ebm_play evaluate``."""
    s = r["sampler"]
    opts = ", ".join(f"{k} {v}" for k, v in s.items() if k != "name")
    lines = [f"model {r['model']} ({r['kind']}); test data: {r['test_data']}",
             f"sampler {s['name']} ({opts}), {r['n_samples']} fresh chains from uniform noise",
             "", f"{'':24}{'FDD':>10}{'confident':>11}{'coverage':>10}"]
    for name, key in (("samples", "samples"), ("held-out real digits", "held_out"), ("blurred real digits", "blurred")):
        q = r[key]
        lines.append(f"{name:24}{q['fdd']:>10.3f}{q['confident']:>11.3f}{q['coverage']:>10.3f}")
    lines += ["", "OOD AUROC (energy, MNIST test digits vs …)"]
    lines += [f"  {k:22}{v:.4f}" for k, v in r["ood_auroc"].items()]
    lines.append(f"pad-drawn digits accepted at the energy threshold that accepts 95% of test digits: {r['drawn_accepted']:.2f}")
    if "accuracy" in r:
        lines += ["", f"test accuracy            {r['accuracy']:.4f}",
                  f"conditional samples whose label matches the class  {r['conditional_match']:.3f}"]
    lines.append(f"\n({r['seconds']:.0f}s)")
    return "\n".join(lines)
