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
                     seed: int = 0, log=print, n_classes: int = 10) -> DigitClassifier:
    """Supervised training of the evaluation classifier, with small random shifts for robustness."""
    torch.manual_seed(seed)
    g = make_generator(seed, torch.device("cpu"))
    model = DigitClassifier(n_classes=n_classes)
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
    """Confident fraction and class coverage (entropy of the predicted classes / log K) from the
    classifier's probabilities (N×K, K = 10 for digits)."""
    conf, pred = probs.max(1)
    k = probs.shape[1]
    hist = torch.bincount(pred, minlength=k).double() / len(pred)
    entropy = max(0.0, -(hist[hist > 0] * hist[hist > 0].log()).sum().item())  # one class: 0, not -0
    return {"confident": conf.gt(0.9).float().mean().item(), "coverage": entropy / math.log(k), "n": len(probs)}


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


COPY_QUANTILE = 0.05  # a sample nearer a training image than this quantile of training NN distances is a copy
MAX_NN_REFERENCE = 5000  # training images the nearest-neighbour figures compare against
CLASSIFIER_UPDATES = 1500  # batches a data set's feature classifier trains for (3 epochs of MNIST's size)


def nearest_distances(x: torch.Tensor, ref: torch.Tensor, exclude_self: bool = False, batch: int = 256) -> torch.Tensor:
    """Each image's Euclidean pixel distance to its nearest image of ``ref`` (with ``exclude_self``,
    ``x`` being ``ref``: to its nearest *other* image). float32: an image's distance to itself comes out
    at about 0.01, against typical neighbour distances of 3 to 10 in [−1, 1] pixels."""
    a, b = x.flatten(1).float(), ref.flatten(1).float()
    bb = b.pow(2).sum(1)
    out = []
    for i in range(0, len(a), batch):
        ai = a[i: i + batch]
        d2 = ai.pow(2).sum(1, keepdim=True) + bb - 2 * ai @ b.T
        if exclude_self:
            d2[torch.arange(len(ai)), torch.arange(i, i + len(ai))] = math.inf
        out.append(d2.min(1).values.clamp_min(0).sqrt())
    return torch.cat(out)


def copy_rate(samples: torch.Tensor, train: torch.Tensor, held_out: torch.Tensor | None = None,
              quantile: float = COPY_QUANTILE, max_reference: int = MAX_NN_REFERENCE, seed: int = 0) -> dict:
    """Memorisation: the share of samples closer to a training image than the training images are
    to each other, i.e. at most the ``quantile`` of the training images' distances to their nearest
    other training image. Fresh real images (``held_out``) score about ``quantile`` by construction;
    a model that copies its training images scores near 1. Medians of the distances come along."""
    g = make_generator(seed, torch.device("cpu"))
    ref = train if len(train) <= max_reference else train[torch.randperm(len(train), generator=g)[:max_reference]]
    if len(ref) < 2:
        raise ValueError("the copy rate needs at least 2 training images")
    d_train = nearest_distances(ref, ref, exclude_self=True)
    tau = torch.quantile(d_train.double(), quantile).item()
    d = nearest_distances(samples, ref)
    r = {"threshold": tau, "quantile": quantile, "n_reference": len(ref), "train_nn_median": d_train.median().item(),
         "samples": (d <= tau).float().mean().item(), "samples_nn_median": d.median().item()}
    if held_out is not None and len(held_out):
        dh = nearest_distances(held_out, ref)
        r.update(held_out=(dh <= tau).float().mean().item(), held_out_nn_median=dh.median().item())
    return r


def data_ood_sets(held_out: torch.Tensor, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """OOD sets for a model of other data: MNIST test digits, and the built-in sets made from the
    data's own held-out images (inverted, rotated) or from nothing (noise, letters, constant)."""
    from .data import sample_digits

    sets = ood_sets(held_out, n, seed)
    return {"MNIST digits": sample_digits(False).x[:n], **{k.replace(" digits", " images"): v for k, v in sets.items()}}
