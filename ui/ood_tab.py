"""OOD check tab: is this image something the model knows? Energy as an out-of-distribution score.

One image: its energy, its percentile among the MNIST test digits, a verdict against a threshold set
at a chosen true-positive rate (TPR) on those digits, and its place on a histogram of test-digit
energies and of the built-in OOD sets. A batch (uploaded images or a built-in set): the AUROC
against the test digits and the ROC curve. The figures come from :mod:`ebm_play.ood`.

Endpoints: ``/ood_score`` (session, image, digit, model, tpr) → histogram, verdict (Markdown),
result (JSON: energy, percentile, threshold, verdict); ``/ood_batch`` (session, files, builtin,
model, tpr) → the batch as the model sees it, ROC curve, summary (Markdown), result (JSON: auroc …).
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import torch

import ebm_play
from ebm_play import EBMError, ood
from ebm_play.images import load_images
from ebm_play.runtime import job_threads

from . import draw
from .common import histogram_frame, number, thin, upload_path, user_errors
from .sessions import Registry

DEFAULT_OOD_MODEL = "mnist-ood"  # the scorer the tab starts with: the best OOD AUROC figures (weights/README.md)
CURRENT = "current model"
TEST = "MNIST test digits"
MAX_FILES = 256
MAX_IMAGES = 2048
MIN_TPR, MAX_TPR = 0.5, 1.0
PALETTE = ["#f59e0b", "#10b981", "#a855f7", "#0ea5e9", "#84cc16", "#64748b", "#e11d48", "#14b8a6"]
COLORS = {TEST: "#2563eb"}
IMAGE_COLOR, THRESHOLD_COLOR = "#dc2626", "#111827"
# the sets of ebm_play.metrics.ood_sets (a test checks that they match)
BUILTIN = ["uniform noise", "gaussian noise", "inverted digits", "rotated digits", "letters", "constant"]


def model_choices(registry: Registry) -> list[str]:
    return [CURRENT, *registry.models]


def default_model(registry: Registry) -> str:
    return DEFAULT_OOD_MODEL if DEFAULT_OOD_MODEL in registry.models else CURRENT


def scoring_model(registry: Registry, session, name) -> tuple[torch.nn.Module, str]:
    """The model to score with: a loaded model by name, or the session's current model (also when the
    default scorer is not shipped)."""
    if name in (None, "", CURRENT) or (name == DEFAULT_OOD_MODEL and name not in registry.models):
        return registry.current_model(session)
    if name in registry.models:
        return registry.models[name], name
    raise EBMError(f"unknown model {name!r}; choose one of: {', '.join(model_choices(registry))}")


def check_tpr(tpr) -> float:
    return number("true-positive rate", tpr, MIN_TPR, MAX_TPR)


def scorer(model) -> ood.OODScorer:
    with job_threads(1):
        return ood.scorer_for(model)


def near(groups: dict[str, np.ndarray], ref: np.ndarray) -> tuple[str, ...]:
    """The groups to size the histogram's axis on: the test digits and any set overlapping them."""
    q1, q99 = np.percentile(ref, [1, 99])
    spread = max(q99 - q1, 1e-6)
    return (TEST, *[k for k, v in groups.items() if k != TEST and q1 - spread <= np.median(v) <= q99 + spread])


def histogram(sc: ood.OODScorer, energy: float, threshold: float, tpr: float) -> gr.LinePlot:
    """Test digits and built-in sets as step histograms, with this image and the threshold as lines."""
    groups = {TEST: sc.reference, **sc.builtin()}
    df = histogram_frame(groups, focus=near(groups, sc.reference))
    lo, hi = float(df["energy"].min()), float(df["energy"].max())
    top = float(df["fraction"].max()) * 1.05 or 1.0
    at = min(max(energy, lo), hi)
    off = " →" if energy > hi else " ←" if energy < lo else ""
    me = f"this image (E = {energy:.4g}){off}"
    cut = f"threshold at TPR {tpr:.0%}"
    lines = [(at, 0.0, me), (at, top, me)]
    if lo <= threshold <= hi:
        lines += [(threshold, 0.0, cut), (threshold, top, cut)]
    df = pd.concat([df, pd.DataFrame(lines, columns=df.columns)], ignore_index=True)
    colors, i = {}, 0
    for name in df["source"].unique():
        if name == TEST:
            colors[name] = COLORS[TEST]
        elif name == me:
            colors[name] = IMAGE_COLOR
        elif name == cut:
            colors[name] = THRESHOLD_COLOR
        else:
            colors[name], i = PALETTE[i % len(PALETTE)], i + 1
    return gr.LinePlot(value=df, color_map=colors)


def read_batch(files) -> tuple[torch.Tensor, list[str]]:
    """Uploaded files (pictures, or .npz with key x) → N×1×28×28, with a clear message naming a bad file."""
    if isinstance(files, (dict, str)):
        files = [files]
    if not files:
        raise EBMError("upload some images (or pick a built-in set)")
    if len(files) > MAX_FILES:
        raise EBMError(f"too many files: {len(files)}, at most {MAX_FILES}")
    xs, names = [], []
    for f in files:
        path = upload_path(f)
        if not path:
            raise EBMError("a file in the batch has no path")
        name = (f.get("orig_name") if isinstance(f, dict) else None) or Path(path).name
        try:
            if Path(path).stat().st_size > draw.MAX_UPLOAD_BYTES:
                raise EBMError(f"file is larger than {draw.MAX_UPLOAD_BYTES // 2**20} MB")
            x = load_images(path) if name.lower().endswith(".npz") or str(path).lower().endswith(".npz") \
                else ebm_play.preprocess(path)
        except EBMError as e:
            raise EBMError(f"{name}: {e}") from None
        xs.append(x)
        names += [name] * len(x)
        if len(names) > MAX_IMAGES:
            raise EBMError(f"too many images: more than {MAX_IMAGES:,} in the batch")
    return torch.cat(xs), names


def create_tab(registry: Registry, session: gr.BrowserState, page: gr.Tab | None = None) -> dict:
    gr.Markdown("Low energy = digit-like. The energy of any picture is compared with the energies the same "
                "model gives the 2,000 MNIST test digits: the **threshold** accepts the chosen share (the "
                "true-positive rate) of real test digits, and anything above it is flagged out-of-distribution.")
    with gr.Row():
        panel = draw.input_panel("ood")
        with gr.Column(scale=1, min_width=280):
            model_dd = gr.Dropdown(model_choices(registry), value=default_model(registry), label="Score with",
                                   info=f"'{CURRENT}': the session's (Sample/Train tabs)", elem_id="ood-model")
            tpr = gr.Slider(MIN_TPR, 0.999, ood.DEFAULT_TPR, step=0.001, label="True-positive rate on test digits",
                            info="share of real test digits the threshold accepts", elem_id="ood-tpr")
            run_btn = gr.Button("Check", variant="primary", elem_id="ood-run")
            verdict_md = gr.Markdown("", label="verdict", elem_id="ood-verdict")
    hist_plot = gr.LinePlot(x="energy", y="fraction", color="source", color_title="",
                            label="Where this image falls: energies of test digits and of built-in OOD sets",
                            elem_id="ood-hist")
    with gr.Accordion("Result (JSON, as /ood_score returns it)", open=False):
        score_json = gr.JSON(label="result", elem_id="ood-result")

    gr.Markdown("### Batch: how well does the energy separate a set of images from the test digits?")
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            files = gr.File(label=f"Upload images (or .npz, key x), up to {MAX_FILES}", file_count="multiple",
                            file_types=["image", ".npz"], elem_id="ood-files", height=160)
            builtin = gr.Dropdown(["", *BUILTIN], value="letters",
                                  label="…or a built-in OOD set (used when no files are uploaded)",
                                  elem_id="ood-builtin")
            batch_btn = gr.Button("Compare with test digits", variant="primary", elem_id="ood-batch-run")
            batch_md = gr.Markdown("", label="summary", elem_id="ood-batch-summary")
        batch_img = gr.Image(label="The batch as the model sees it (first 64)", type="pil", format="png", height=300,
                             interactive=False, elem_classes="ebm-grid", elem_id="ood-batch-grid")
        roc_plot = gr.LinePlot(x="false positive rate", y="true positive rate", color="curve", color_title="",
                               label="ROC: test digits accepted vs batch accepted", elem_id="ood-roc",
                               x_lim=[0, 1], y_lim=[0, 1])
    with gr.Accordion("Result (JSON, as /ood_batch returns it)", open=False):
        batch_json = gr.JSON(label="result", elem_id="ood-batch-result")

    @user_errors
    def ood_score(session=None, image=None, digit=None, model=DEFAULT_OOD_MODEL, tpr=ood.DEFAULT_TPR):
        """Energy of a drawing (or test digit ``digit``), its percentile among MNIST test digits and an
        in/out-of-distribution verdict at a threshold accepting ``tpr`` of the test digits."""
        x, source = draw.model_input(panel.api_image, image, digit)
        tpr = check_tpr(tpr)
        m, label = scoring_model(registry, session, model)
        sc = scorer(m)
        with job_threads(1):
            v = sc.judge(x, tpr)
            sc.builtin()
        head = ('<span class="ebm-dot ebm-running">●</span> **In-distribution**: like the digits the model knows'
                if v.in_distribution else
                '<span class="ebm-dot ebm-failed">●</span> **Out-of-distribution**: not like the digits the model knows')
        text = (f"### {head}\nEnergy **{v.energy:.4g}**, higher than **{v.percentile:.1f}%** of MNIST test "
                f"digits. Threshold at TPR {tpr:.1%}: {v.threshold:.4g} (test digits above it are flagged too: "
                f"{1 - ood.accepted(sc.reference, v.threshold):.1%}).  \nModel: {label} · input: {source}.")
        result = {"model": label, "input": source, **{k: (round(val, 6) if isinstance(val, float) else val)
                                                       for k, val in v.as_dict().items()}}
        return histogram(sc, v.energy, v.threshold, tpr), text, result

    @user_errors
    def ood_batch(session=None, files=None, builtin="letters", model=DEFAULT_OOD_MODEL, tpr=ood.DEFAULT_TPR):
        """AUROC of the energy for a batch of images (uploaded files, else built-in set ``builtin``)
        against the MNIST test digits, with the ROC curve and the false-positive rate at ``tpr``."""
        tpr = check_tpr(tpr)
        m, label = scoring_model(registry, session, model)
        sc = scorer(m)
        if files:
            x, _names = read_batch(files)
            what = f"{len(x)} uploaded image{'s' if len(x) != 1 else ''}"
            with job_threads(1):
                rep = sc.compare_images(x, tpr)
        elif builtin:
            if builtin not in BUILTIN:
                raise EBMError(f"unknown built-in set {builtin!r}; choose one of: {', '.join(BUILTIN)}")
            x = ood.builtin_sets()[builtin]
            what = f"built-in set '{builtin}' ({len(x)} images)"
            with job_threads(1):
                rep = sc.compare(sc.builtin()[builtin], tpr)
        else:
            raise EBMError("upload some images or pick a built-in set")
        fpr, tp = thin(list(rep.roc_fpr), 400), thin(list(rep.roc_tpr), 400)
        curve = f"energy (AUROC {rep.auroc:.3f})"
        df = pd.DataFrame([(float(a), float(b), curve) for a, b in zip(fpr, tp)] +
                          [(0.0, 0.0, "chance"), (1.0, 1.0, "chance")],
                          columns=["false positive rate", "true positive rate", "curve"])
        text = (f"**AUROC {rep.auroc:.4f}** for {what} against {sc.n:,} MNIST test digits (1 = every image above "
                f"every digit in energy, 0.5 = chance).  \nAt the threshold accepting {tpr:.1%} of test digits "
                f"({rep.threshold:.4g}), **{rep.fpr_at_tpr:.1%}** of the batch passes as digits.  \nModel: {label}.")
        result = {"model": label, "batch": what, **{k: (round(v, 6) if isinstance(v, float) else v)
                                                    for k, v in rep.as_dict().items()}}
        roc = gr.LinePlot(value=df, color_map={curve: "#4f46e5", "chance": "#94a3b8"})
        return ebm_play.images.grid(x[:64], nrow=8, scale=2), roc, text, result

    draw.wire_run(run_btn, ood_score, [session, panel.pad, panel.digit, model_dd, tpr],
                  [hist_plot, verdict_md, score_json], "ood_score", {panel.pad: panel.api_image},
                  concurrency_limit=2, concurrency_id="compute", preprocess=False)
    batch_btn.click(ood_batch, [session, files, builtin, model_dd, tpr], [batch_img, roc_plot, batch_md, batch_json],
                    api_name="ood_batch", concurrency_limit=2, concurrency_id="compute", preprocess=False)
    return {"model": model_dd, "panel": panel}

