"""The model card's figures: one report per model, from the measures of :mod:`ebm_play.metrics`.

:func:`evaluate` judges a digit model (sample quality under the evaluation classifier, OOD AUROC
per built-in set, pad-drawn digits accepted, and for JEM accuracy and class-conditional match);
:func:`evaluate_data` judges a model trained on other data against its own held-out part.
``python -m ebm_play evaluate`` prints either.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from . import settings
from .api import sample, score
from .composition import ClassEnergy
from .data import Digits
from .metrics import (
    CLASSIFIER_UPDATES,
    auroc,
    blur,
    classify,
    copy_rate,
    data_ood_sets,
    ood_sets,
    render_drawn_digits,
    sample_quality,
    train_classifier,
)
from .ood import DEFAULT_TPR, threshold


def _samples(model, n: int, sampler: str | None, steps: int | None, seed: int, batch: int = 250, label=None):
    """n samples from fresh uniform-noise chains with the model's recommended settings."""
    energy = model if label is None else ClassEnergy(model, label)
    if label is not None:
        energy.info = getattr(model, "info", {})
    sampler = sampler or ("gibbs" if model.kind == "rbm" else settings.default_sampler(model))
    out = [sample(energy, min(batch, n - i), steps, sampler, seed=seed + i) for i in range(0, n, batch)]
    return torch.cat(out), sampler


def _sampler_report(model, sampler: str, steps: int | None) -> dict:

    chosen = settings.resolve(model, sampler, steps)
    return {"name": sampler, "steps": chosen.steps, **chosen.options}


def evaluate(model: nn.Module, classifier: nn.Module, test: Digits, n_samples: int = 1000,
             sampler: str | None = None, steps: int | None = None, seed: int = 0, log=print) -> dict:
    """Every figure of the model card: sample quality (with held-out and blurred real digits for
    scale), OOD AUROC against each built-in set, and for JEM accuracy and class-conditional match."""

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
    report["sampler"] = _sampler_report(model, sampler, steps)
    report["samples"] = sample_quality(classifier, x, ref_feats)
    log(f"samples done ({time.time() - t0:.0f}s)")
    e_in = score(model, ref[:n_samples])
    report["ood_auroc"] = {name: auroc(e_in, score(model, o)) for name, o in ood_sets(held_out, n_samples, seed).items()}
    report["drawn_accepted"] = (score(model, render_drawn_digits()[0]) <= threshold(e_in, DEFAULT_TPR)).float().mean().item()
    if model.has_classes:
        report.update(_class_figures(model, classifier, test, n_samples, sampler, steps, seed))
    report["seconds"] = round(time.time() - t0, 1)
    return report


def _class_figures(model, classifier, test: Digits, n_samples: int, sampler: str, steps: int | None, seed: int,
                   k: int = 10) -> dict:
    """A JEM's test accuracy, and how often the classifier gives its class-conditional samples
    (n_samples/k per class) the class they were drawn for."""
    with torch.no_grad():
        pred = torch.cat([model.classify(test.x[i: i + 1000]).argmax(1) for i in range(0, len(test.x), 1000)])
    per = max(1, n_samples // k)
    matches = []
    for label in range(k):
        xc, _ = _samples(model, per, sampler, steps, seed + 1000 * label, label=label)
        matches.append((classify(classifier, xc)[1].argmax(1) == label).float())
    return {"accuracy": (pred == test.y).float().mean().item(), "conditional_match": torch.cat(matches).mean().item()}


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


# --- any other data set, judged against its own held-out part ---------------------------------------
def _data_quality(model, data, x: torch.Tensor, sampler: str, steps: int | None, seed: int, updates: int, log) -> dict:
    """With labels: a small classifier trained on the data's training part, whose features give
    the Fréchet distance of samples, held-out and blurred held-out images to the training images."""
    k = len(data.classes)
    epochs = max(1, math.ceil(updates / math.ceil(len(data.train.x) / 128)))  # whole epochs, about `updates` batches
    clf = train_classifier(data.train, epochs=epochs, seed=seed, log=log, n_classes=k)
    ref_feats, _ = classify(clf, data.train.x[:5000])
    held = data.test
    r = {"classifier": {"classes": k, "epochs": epochs,
                        "held_out_accuracy": (classify(clf, held.x)[1].argmax(1) == held.y).float().mean().item()},
         "held_out": sample_quality(clf, held.x, ref_feats), "blurred": sample_quality(clf, blur(held.x), ref_feats),
         "samples": sample_quality(clf, x, ref_feats)}
    if model.has_classes and getattr(model, "config", {}).get("n_classes", 10) == k:
        r.update(_class_figures(model, clf, held, len(x), sampler, steps, seed, k))
    return r


def evaluate_data(model: nn.Module, data, n_samples: int = 1000, sampler: str | None = None,
                  steps: int | None = None, seed: int = 0, log=print, classifier_updates: int = CLASSIFIER_UPDATES) -> dict:
    """The model card of a model trained on ``data`` (an ``ebm_play.data.Dataset``), judged against
    its held-out part: samples' nearest-neighbour distances and copy rate (held-out images for
    scale), with labels the Fréchet distance, confident fraction and coverage under a classifier
    trained on the data (and for JEM, accuracy and class match), and OOD AUROC of the energy,
    held-out images against MNIST digits and the built-in sets."""

    t0 = time.time()
    report: dict = {"model": getattr(model, "source", model.kind), "kind": model.kind, "data": data.summary(),
                    "dataset": {k: v for k, v in data.info().items() if k != "classes"}, "n_samples": n_samples}
    x, sampler = _samples(model, n_samples, sampler, steps, seed)
    report["sampler"] = _sampler_report(model, sampler, steps)
    log(f"samples done ({time.time() - t0:.0f}s)")
    report["copy"] = copy_rate(x, data.train.x, data.test.x, seed=seed)
    if data.labelled:
        report.update(_data_quality(model, data, x, sampler, steps, seed, classifier_updates, log))
    e_in = score(model, data.test.x)
    report["ood_auroc"] = {k: auroc(e_in, score(model, o)) for k, o in data_ood_sets(data.test.x, n_samples, seed).items()}
    report["seconds"] = round(time.time() - t0, 1)
    return report


def format_data_report(r: dict) -> str:
    """:func:`evaluate_data`'s report as the plain text ``python -m ebm_play evaluate`` prints."""
    s, c = r["sampler"], r["copy"]
    opts = ", ".join(f"{k} {v}" for k, v in s.items() if k != "name")
    lines = [f"model {r['model']} ({r['kind']}); data {r['data']}",
             f"sampler {s['name']} ({opts}), {r['n_samples']} fresh chains from uniform noise", "",
             f"nearest training image (pixel distance, median): samples {c['samples_nn_median']:.3f}, "
             f"held-out images {c.get('held_out_nn_median', float('nan')):.3f}, training images {c['train_nn_median']:.3f}",
             f"copy rate (nearer a training image than {c['quantile']:.0%} of training images are to each other, "
             f"≤ {c['threshold']:.3f}): samples {c['samples']:.3f}, held-out images {c.get('held_out', float('nan')):.3f}"]
    if "samples" in r:
        k = r["classifier"]
        lines += ["", f"features of a classifier trained on the data ({k['classes']} classes, {k['epochs']} epochs, "
                      f"held-out accuracy {k['held_out_accuracy']:.3f})",
                  f"{'':24}{'FDD':>10}{'confident':>11}{'coverage':>10}"]
        for name, key in (("samples", "samples"), ("held-out images", "held_out"), ("blurred held-out", "blurred")):
            q = r[key]
            lines.append(f"{name:24}{q['fdd']:>10.3f}{q['confident']:>11.3f}{q['coverage']:>10.3f}")
    lines += ["", "OOD AUROC (energy, held-out images vs …)"]
    lines += [f"  {k:22}{v:.4f}" for k, v in r["ood_auroc"].items()]
    if "accuracy" in r:
        lines += ["", f"held-out accuracy        {r['accuracy']:.4f}",
                  f"conditional samples whose label matches the class  {r['conditional_match']:.3f}"]
    lines.append(f"\n({r['seconds']:.0f}s)")
    return "\n".join(lines)
