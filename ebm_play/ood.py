"""Energy as an out-of-distribution (OOD) score, measured against MNIST test digits.

A model's energies of the 2,000 bundled MNIST test digits are the reference. For a new image:

- its **percentile**: the share of test digits with a lower energy (ties count half), in percent;
  a digit-like image sits in the middle, noise far above 99;
- a **threshold** at a chosen **true-positive rate** (TPR): with the test digits as the positive
  ("in-distribution") class, threshold(tpr) is the smallest reference energy t such that at least
  ``tpr`` of the test digits have E ≤ t: the k-th smallest of n energies with k = ⌈tpr·n⌉. An
  image is **in-distribution** when E ≤ t, otherwise **out-of-distribution**; at TPR 95 %, 5 % of
  real test digits are (wrongly) flagged;
- for a batch: the **AUROC** of the energy against the test digits (1 = every image above every
  digit, 0.5 = chance; :func:`ebm_play.metrics.auroc`), the ROC curve and the false-positive rate
  (share of the batch accepted as digits) at the chosen TPR.

The built-in OOD sets (noise, inverted, rotated, letters …) come from :func:`ebm_play.metrics.ood_sets`.
Lower energy = more data-like, as everywhere in ebm_play.
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .api import score
from .data import Dataset, dataset_of, sample_digits
from .errors import EBMError
from .metrics import auroc, data_ood_sets, ood_sets, roc_curve

DEFAULT_TPR = 0.95
CONFIDENT = 0.9  # p(y|x) above this counts as a confident class
N_BUILTIN = 500  # images per built-in OOD set
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → OODScorer
_references: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → its data (set_reference)
_cache_lock = threading.Lock()


def _energies(e) -> np.ndarray:
    a = np.asarray(e.detach().cpu().double().numpy() if isinstance(e, torch.Tensor) else e, dtype=np.float64)
    return a.reshape(-1)


def check_tpr(tpr) -> float:
    if isinstance(tpr, bool) or not isinstance(tpr, (int, float)) or not math.isfinite(tpr) or not 0 < tpr <= 1:
        raise EBMError(f"true-positive rate must be a number in (0, 1], e.g. 0.95, got {tpr!r}")
    return float(tpr)


def percentile(reference, energy) -> np.ndarray | float:
    """Percent of ``reference`` energies below ``energy`` (ties count half): 0 to 100."""
    ref = np.sort(_energies(reference))
    e = np.asarray(energy, dtype=np.float64)
    below = np.searchsorted(ref, e, side="left")
    upto = np.searchsorted(ref, e, side="right")
    p = 100.0 * (below + 0.5 * (upto - below)) / len(ref)
    return float(p) if p.ndim == 0 else p


def threshold(reference, tpr: float = DEFAULT_TPR) -> float:
    """The k-th smallest reference energy, k = ⌈tpr·n⌉: at least ``tpr`` of the reference has E ≤ it."""
    tpr = check_tpr(tpr)
    ref = np.sort(_energies(reference))
    k = min(len(ref), max(1, math.ceil(tpr * len(ref) - 1e-9)))  # the epsilon absorbs float error in tpr·n
    return float(ref[k - 1])


def accepted(energies, t: float) -> float:
    """The share of ``energies`` at or below the threshold ``t`` (accepted as in-distribution)."""
    e = _energies(energies)
    return float(np.mean(e <= t)) if len(e) else float("nan")


@dataclass
class Verdict:
    energy: float
    percentile: float  # percent of test digits with a lower energy
    threshold: float
    tpr: float
    in_distribution: bool

    @property
    def label(self) -> str:
        return "in-distribution" if self.in_distribution else "out-of-distribution"

    def as_dict(self) -> dict:
        return {**asdict(self), "verdict": self.label}


@dataclass
class BatchReport:
    n: int
    auroc: float  # energy as a detector of the batch against the test digits
    tpr: float
    threshold: float
    fpr_at_tpr: float  # share of the batch accepted as digits at that threshold
    roc_fpr: np.ndarray  # share of the batch accepted, as the threshold rises
    roc_tpr: np.ndarray  # share of test digits accepted
    energies: np.ndarray

    def as_dict(self) -> dict:
        return {"n": self.n, "auroc": self.auroc, "tpr": self.tpr, "threshold": self.threshold,
                "fpr_at_tpr": self.fpr_at_tpr, "mean_energy": float(np.mean(self.energies)),
                "median_energy": float(np.median(self.energies))}


def roc(reference, energies) -> tuple[np.ndarray, np.ndarray]:
    """ROC with the test digits as positives, scored by −E: (FPR = share of ``energies`` accepted,
    TPR = share of ``reference`` accepted) as the threshold rises from −∞."""
    ref, e = torch.from_numpy(_energies(reference)), torch.from_numpy(_energies(energies))
    return roc_curve(-e, -ref)


class OODScorer:
    """A model's energies of reference digits (default: the 2,000 bundled MNIST test digits) and the
    figures above. Build once per model (:func:`scorer_for` caches); scoring is then cheap."""

    def __init__(self, model: nn.Module, reference: torch.Tensor | None = None, seed: int = 0,
                 sets: dict[str, torch.Tensor] | None = None, reference_name: str | None = None):
        self.model = model
        self.reference_images = sample_digits(train=False).x if reference is None else reference
        # what the percentiles are among, for messages: "test digits" or e.g. "held-out glyphs images"
        self.reference_name = reference_name or ("test digits" if reference is None else "reference images")
        self.reference = np.sort(_energies(score(model, self.reference_images)))
        if not np.isfinite(self.reference).all():
            raise EBMError(f"the model gives non-finite energies on the {self.reference_name}: it cannot score OOD")
        self.seed = seed
        self._sets = sets  # OOD sets for builtin(); default: those made from the MNIST test digits
        self._builtin: dict[str, np.ndarray] | None = None
        self._lock = threading.Lock()

    @property
    def n(self) -> int:
        return len(self.reference)

    def energy(self, x: torch.Tensor) -> np.ndarray:
        return _energies(score(self.model, x))

    def percentile(self, energy):
        return percentile(self.reference, energy)

    def threshold(self, tpr: float = DEFAULT_TPR) -> float:
        return threshold(self.reference, tpr)

    def verdict(self, energy: float, tpr: float = DEFAULT_TPR) -> Verdict:
        t = self.threshold(tpr)
        energy = float(energy)
        return Verdict(energy, self.percentile(energy), t, float(tpr), bool(energy <= t))

    def judge(self, x: torch.Tensor, tpr: float = DEFAULT_TPR) -> Verdict:
        """Verdict for one image (1×1×28×28)."""
        return self.verdict(self.energy(x[:1])[0], tpr)

    def compare(self, energies, tpr: float = DEFAULT_TPR) -> BatchReport:
        """How well the energy separates a batch (given by its energies) from the test digits."""
        e = _energies(energies)
        if not len(e):
            raise EBMError("no images in the batch")
        if not np.isfinite(e).all():
            raise EBMError("the model gives non-finite energies on this batch")
        t = self.threshold(tpr)
        fpr, tp = roc(self.reference, e)
        a = auroc(torch.from_numpy(self.reference), torch.from_numpy(e))
        return BatchReport(len(e), float(a), float(tpr), t, accepted(e, t), fpr, tp, e)

    def compare_images(self, x: torch.Tensor, tpr: float = DEFAULT_TPR) -> BatchReport:
        return self.compare(self.energy(x), tpr)

    def sets(self) -> dict[str, torch.Tensor]:
        """The built-in OOD sets' images: made from the test digits, or for a model of other data
        from its held-out images, with MNIST digits among them (:func:`data_scorer`)."""
        return builtin_sets(self.seed) if self._sets is None else self._sets

    def builtin(self) -> dict[str, np.ndarray]:
        """Energies of each built-in OOD set (N_BUILTIN images each), computed once."""
        with self._lock:
            if self._builtin is None:
                self._builtin = {name: self.energy(x) for name, x in self.sets().items()}
            return self._builtin


_sets_lock = threading.Lock()
_sets: dict[tuple[int, int], dict[str, torch.Tensor]] = {}


def builtin_sets(seed: int = 0, n: int = N_BUILTIN) -> dict[str, torch.Tensor]:
    """The built-in OOD sets of :func:`ebm_play.metrics.ood_sets` made from the test digits (cached)."""
    with _sets_lock:
        if (seed, n) not in _sets:
            _sets[(seed, n)] = ood_sets(sample_digits(train=False).x, n, seed)
        return _sets[(seed, n)]


def data_scorer(model: nn.Module, data: Dataset, seed: int = 0) -> OODScorer:
    """A scorer for a model of ``data``: percentiles among the data's own held-out images, and OOD
    sets of MNIST digits and the built-in sets made from those images."""
    held = data.test.x
    if not len(held):
        raise EBMError(f"{data.name} has no held-out images to judge energies against")
    return OODScorer(model, held, seed, sets=data_ood_sets(held, N_BUILTIN, seed),
                     reference_name=f"held-out images of {data.name}")


def set_reference(model: nn.Module, data: Dataset) -> None:
    """Judge ``model`` against ``data``'s held-out images from now on: a model in memory trained on
    data its file cannot name again (a person's upload). Kept while the model lives."""
    with _cache_lock:
        _references[model] = data
        _cache.pop(model, None)


def scorer_for(model: nn.Module, data: Dataset | None = None) -> OODScorer:
    """The cached :class:`OODScorer` of ``model`` (built on first use): against ``data``'s held-out
    part when given (it replaces the cached one), else against the model's own data where its file
    names a set that can be found without reading a path from the file (:func:`ebm_play.data.dataset_of`)
    or :func:`set_reference` gave one,
    else against the MNIST test digits."""
    with _cache_lock:
        s = None if data is not None else _cache.get(model)
        if s is None:
            data = data or _references.get(model) or dataset_of(getattr(model, "info", {}))
            s = _cache[model] = OODScorer(model) if data is None or data.is_mnist else data_scorer(model, data)
        return s


def class_names(model: nn.Module, k: int) -> list[str]:
    """A model's class names from its data (``info["dataset"]["classes"]``), else 0 … k−1."""
    names = (getattr(model, "info", {}).get("dataset") or {}).get("classes")
    return [str(c) for c in names] if isinstance(names, list) and len(names) == k else [str(i) for i in range(k)]


def classify(model: nn.Module, x: torch.Tensor, tpr: float = DEFAULT_TPR, confident: float = CONFIDENT,
             scorer: OODScorer | None = None) -> dict:
    """A JEM's p(y|x) for one image next to its energy E(x) (−logsumexp f(x) for one JEM), with an answer that
    says "I don't know" when the energy flags the image as out-of-distribution, however confident
    the classifier is. Returns probabilities (10), prediction, confidence, the OOD verdict and answer,
    and the class names (``classes``)."""
    if not hasattr(model, "classify"):
        raise EBMError(f"classification needs a JEM model (classifier + energy), not a {getattr(model, 'kind', '?')} model")
    if not 0 < confident <= 1:
        raise EBMError(f"confidence level must be in (0, 1], got {confident}")
    scorer = scorer or scorer_for(model)
    x = x[:1]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            xs = x.to(next(model.parameters()).device)
            # softmax in float64, so the ten probabilities sum to 1 to ~1e-16
            probs = (torch.softmax(model.logits(xs).double(), 1) if hasattr(model, "logits")
                     else model.classify(xs).double())[0].cpu()
            energy = float(model(xs)[0])
    finally:
        model.train(was_training)
    v = scorer.verdict(energy, tpr)
    conf, pred = float(probs.max()), int(probs.argmax())
    classes = class_names(model, len(probs))

    sure = conf >= confident
    if not v.in_distribution:
        answer = "I don't know"
        known = "a digit" if scorer.reference_name == "test digits" else "anything"
        why = (f"the classifier says {classes[pred]} with p = {conf:.2f}, but the energy is higher than "
               f"{v.percentile:.1f}% of {scorer.reference_name} (above the threshold at TPR {v.tpr:.0%}): "
               f"this does not look like {known} the model knows")
    elif sure:
        answer, why = classes[pred], f"confident (p = {conf:.3f}) and the energy is typical of {scorer.reference_name}"
    else:
        second = int(probs.argsort(descending=True)[1])
        answer = f"probably {classes[pred]}"
        like = "digit-like" if scorer.reference_name == "test digits" else "typical"
        why = f"{like} energy, but the classifier is unsure (p = {conf:.2f}; next: {classes[second]})"
    return {"probabilities": [float(p) for p in probs], "prediction": pred, "confidence": conf,
            "confident": sure, **v.as_dict(), "answer": answer, "explanation": why, "classes": classes}
