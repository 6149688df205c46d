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

from ebm_play import EBMError, ood
from ebm_play.images import grid, load_batch
from ebm_play.playground import Playground
from ebm_play.runtime import job_threads

from . import draw
from .boundary import AnySession, Choice, File, Number, Picture, Spec, Text, endpoint, on
from .common import fmt, histogram_frame, picture, thin

DEFAULT_OOD_MODEL = "mnist-ood"  # the scorer the tab starts with: the best OOD AUROC figures (weights/README.md)
CURRENT = "current model"
TEST = "MNIST test digits"
ME, CUT = "this image", "threshold"  # series names stay the same from check to check; the figures go in the title
MAX_FILES = 256
MAX_IMAGES = 2048
MIN_TPR, MAX_TPR = 0.5, 1.0
PALETTE = ["#f59e0b", "#10b981", "#a855f7", "#0ea5e9", "#84cc16", "#64748b", "#e11d48", "#14b8a6"]
# the sets of ebm_play.metrics.ood_sets (a test checks that they match)
BUILTIN = ["uniform noise", "gaussian noise", "inverted digits", "rotated digits", "letters", "constant"]
MNIST_SET = "MNIST digits"  # a set for a model of a person's own images (whose other sets are made from them)
COLORS = {TEST: "#2563eb", ME: "#dc2626", CUT: "#111827", MNIST_SET: "#be185d",
          **{name: PALETTE[i % len(PALETTE)] for i, name in enumerate(BUILTIN)},
          **{name.replace(" digits", " images"): PALETTE[i % len(PALETTE)] for i, name in enumerate(BUILTIN)}}
TPR = Number(MIN_TPR, MAX_TPR).named("true-positive rate")
MODEL = Text(200).named("model")


class Files(Spec):
    """Uploaded files (gradio's file data, paths checked by gradio) → [(server path, uploaded name)]."""

    def __init__(self, max_files: int):
        super().__init__(optional=True)
        self.max_files = max_files

    def check(self, name, v):
        files = [v] if isinstance(v, dict) else v
        if not isinstance(files, list):
            raise EBMError(f"{name} must be a list of uploaded files")
        if len(files) > self.max_files:
            raise EBMError(f"too many files: {len(files)}, at most {self.max_files}")
        paths = [File(draw.MAX_UPLOAD_BYTES)(name, f) for f in files]
        return [(p, (f.get("orig_name") if isinstance(f, dict) else None) or Path(p).name)
                for p, f in zip(paths, files)]


def scoring_model(pg: Playground, session, name: str) -> tuple:
    """A loaded model by name, or the session's current model (also when the default scorer is not shipped)."""
    if name in ("", CURRENT) or (name == DEFAULT_OOD_MODEL and name not in pg.models):
        return pg.current_model(session)
    return pg.named_model(session, name)


def scorer(model) -> ood.OODScorer:
    with job_threads(1):
        return ood.scorer_for(model)


def reference_of(sc: ood.OODScorer) -> str:
    """What percentiles are among: the MNIST test digits, or a model of other data's held-out images."""
    return TEST if sc.reference_name == "test digits" else sc.reference_name


def builtin_name(sc: ood.OODScorer, name: str) -> str:
    """A built-in set's name for this scorer: a model of other data has its own images inverted and rotated."""
    sets = sc.sets()
    for candidate in (name, name.replace(" digits", " images")):
        if candidate in sets:
            return candidate
    raise EBMError(f"the set {name!r} is for a model of other data; choose one of: {', '.join(sets)}")


def near(groups: dict[str, np.ndarray], ref: np.ndarray, key: str = TEST) -> tuple[str, ...]:
    """The groups to size the histogram's axis on: the reference and any set overlapping it."""
    q1, q99 = np.percentile(ref, [1, 99])
    spread = max(q99 - q1, 1e-6)
    return (key, *[k for k, v in groups.items() if k != key and q1 - spread <= np.median(v) <= q99 + spread])


def histogram(sc: ood.OODScorer, v: ood.Verdict, title: str) -> gr.LinePlot:
    """Test digits and built-in sets as step histograms, with this image and the threshold as lines."""
    key = reference_of(sc)
    groups = {key: sc.reference, **sc.builtin()}
    df = histogram_frame(groups, focus=near(groups, sc.reference, key))
    df["source"] = df["source"].str.replace(r" \(at .*\)$", " (off the axis)", regex=True)
    lo, hi = float(df["energy"].min()), float(df["energy"].max())
    top = float(df["fraction"].max()) * 1.05 or 1.0
    at = min(max(v.energy, lo), hi)  # an energy off the axis sits at its edge
    lines = [(at, 0.0, ME), (at, top, ME)]
    if lo <= v.threshold <= hi:
        lines += [(v.threshold, 0.0, CUT), (v.threshold, top, CUT)]
    df = pd.concat([df, pd.DataFrame(lines, columns=df.columns)], ignore_index=True)
    colors = {name: COLORS.get(name.removesuffix(" (off the axis)"), "#94a3b8") for name in df["source"].unique()}
    colors[key] = COLORS[TEST]
    off = " (off the axis →)" if v.energy > hi else " (off the axis ←)" if v.energy < lo else ""
    return gr.LinePlot(value=df, color_map=colors,
                       label=f"{title}: E = {fmt(v.energy)}{off}, threshold {fmt(v.threshold)} at TPR {v.tpr:.1%}")


@endpoint(session=AnySession(), image=Picture(), digit=draw.DIGIT, model=MODEL, tpr=TPR)
def ood_score(pg: Playground, session=None, image=None, digit=None, model=DEFAULT_OOD_MODEL, tpr=ood.DEFAULT_TPR):
    """Energy of a drawing (or test digit ``digit``), its percentile among MNIST test digits and an
    in/out-of-distribution verdict at a threshold accepting ``tpr`` of the test digits."""
    x, source = draw.model_input(image, digit)
    m, label = scoring_model(pg, session, model)
    sc = scorer(m)
    with job_threads(1):
        v = sc.judge(x, tpr)
        sc.builtin()
    key = reference_of(sc)
    known, ref = ("digits", "test digits") if key == TEST else ("images", "held-out images")
    head = (f'<span class="ebm-dot ebm-running">●</span> **In-distribution**: like the {known} the model knows'
            if v.in_distribution else
            f'<span class="ebm-dot ebm-failed">●</span> **Out-of-distribution**: not like the {known} the model knows')
    text = (f"### {head}\nEnergy **{fmt(v.energy)}**, higher than **{v.percentile:.1f}%** of {key}. "
            f"Threshold at TPR {tpr:.1%}: {fmt(v.threshold)} ({ref} above it are flagged too: "
            f"{1 - ood.accepted(sc.reference, v.threshold):.1%}).  \nModel: {label} · input: {source}.")
    result = draw.tidy({"model": label, "input": source, **v.as_dict()})
    return histogram(sc, v, f"{source} under {label}"), text, result


ood_score_page = draw.page_twin(ood_score, image=draw.Pad())


@endpoint(session=AnySession(), files=Files(MAX_FILES), builtin=Choice(["", *BUILTIN, MNIST_SET]).named("built-in set"),
          model=MODEL, tpr=TPR)
def ood_batch(pg: Playground, session=None, files=None, builtin="letters", model=DEFAULT_OOD_MODEL,
              tpr=ood.DEFAULT_TPR):
    """AUROC of the energy for a batch of images (uploaded files, else built-in set ``builtin``)
    against the MNIST test digits, with the ROC curve and the false-positive rate at ``tpr``."""
    m, label = scoring_model(pg, session, model)
    sc = scorer(m)
    if files:
        x = load_batch([p for p, _ in files], [n for _, n in files], MAX_IMAGES, draw.MAX_UPLOAD_BYTES)
        what = f"{len(x)} uploaded image{'s' if len(x) != 1 else ''}"
        with job_threads(1):
            rep = sc.compare_images(x, tpr)
    elif builtin:
        builtin = builtin_name(sc, builtin)
        x = sc.sets()[builtin]
        what = f"built-in set '{builtin}' ({len(x)} images)"
        with job_threads(1):
            rep = sc.compare(sc.builtin()[builtin], tpr)
    else:
        raise EBMError("upload some images or pick a built-in set")
    curve = "energy as the score"
    df = pd.DataFrame([(float(a), float(b), curve) for a, b in zip(thin(list(rep.roc_fpr), 400),
                                                                     thin(list(rep.roc_tpr), 400))] +
                      [(0.0, 0.0, "chance"), (1.0, 1.0, "chance")],
                      columns=["false positive rate", "true positive rate", "curve"])
    key = reference_of(sc)
    ref, known = ("test digits", "digits") if key == TEST else ("held-out images", "the model's data")
    text = (f"**AUROC {rep.auroc:.4f}** for {what} against {sc.n:,} {key} (1 = every image above "
            f"every one of them in energy, 0.5 = chance).  \nAt the threshold accepting {tpr:.1%} of {ref} "
            f"({fmt(rep.threshold)}), **{rep.fpr_at_tpr:.1%}** of the batch passes as {known}.  \nModel: {label}.")
    roc = gr.LinePlot(value=df, color_map={curve: "#4f46e5", "chance": "#94a3b8"},
                      label=f"ROC of {what} under {label}: AUROC {rep.auroc:.3f}")
    result = draw.tidy({"model": label, "batch": what, **rep.as_dict()})
    return picture(grid(x[:64], nrow=8, scale=2)), roc, text, result


def create_tab(pg: Playground, session: gr.BrowserState, page: gr.Tab | None = None) -> dict:
    gr.Markdown("Low energy = digit-like. The energy of any picture is compared with the energies the same "
                "model gives the 2,000 MNIST test digits: the **threshold** accepts the chosen share (the "
                "true-positive rate) of real test digits, and anything above it is flagged out-of-distribution. "
                "A model trained on your own images (Train tab) is judged against its own held-out images instead.")
    with gr.Row():
        panel = draw.input_panel(pg, "ood")
        with gr.Column(scale=1, min_width=280):
            model_dd = gr.Dropdown([CURRENT, *pg.models], value=DEFAULT_OOD_MODEL if DEFAULT_OOD_MODEL in pg.models
                                   else CURRENT, label="Score with", elem_id="ood-model",
                                   info=f"'{CURRENT}': the session's (Sample/Train tabs)")
            tpr = gr.Slider(MIN_TPR, 0.999, ood.DEFAULT_TPR, step=0.001, label="True-positive rate on test digits",
                            info="share of real test digits the threshold accepts", elem_id="ood-tpr")
            run_btn = gr.Button("Check", variant="primary", elem_id="ood-run")
            verdict_md = gr.Markdown("", elem_id="ood-verdict")
    hist_plot = gr.LinePlot(x="energy", y="fraction", color="source", color_title="", color_map=COLORS,
                            label="Where this image falls: energies of test digits and of built-in OOD sets",
                            elem_id="ood-hist")
    with gr.Accordion("Result (JSON, as /ood_score returns it)", open=False):
        score_json = gr.JSON(label="result", elem_id="ood-result")
    gr.Markdown("### Batch: how well does the energy separate a set of images from the test digits?")
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            files = gr.File(label=f"Upload images (or .npz, key x), up to {MAX_FILES}", file_count="multiple",
                            file_types=["image", ".npz"], elem_id="ood-files", height=160)
            builtin = gr.Dropdown(["", *BUILTIN, MNIST_SET], value="letters", elem_id="ood-builtin",
                                  label="…or a built-in OOD set (used when no files are uploaded)",
                                  info=f"a model of your own images: '{MNIST_SET}', and the others made from its images")
            batch_btn = gr.Button("Compare with test digits", variant="primary", elem_id="ood-batch-run")
            batch_md = gr.Markdown("", elem_id="ood-batch-summary")
        with gr.Column(scale=1, min_width=280):
            batch_img = draw.image_box("The batch as the model sees it (first 64)", "ood-batch-grid", height=300)
        roc_plot = gr.LinePlot(x="false positive rate", y="true positive rate", color="curve", color_title="",
                               label="ROC: test digits accepted vs batch accepted", elem_id="ood-roc",
                               x_lim=[0, 1], y_lim=[0, 1])
    with gr.Accordion("Result (JSON, as /ood_batch returns it)", open=False):
        batch_json = gr.JSON(label="result", elem_id="ood-batch-result")
    draw.wire_run(pg, run_btn, (ood_score, ood_score_page), [session, panel.pad, panel.digit, model_dd, tpr],
                  [session, panel.api_image, panel.digit, model_dd, tpr], [hist_plot, verdict_md, score_json],
                  "ood_score")
    on(batch_btn.click, ood_batch, pg, [session, files, builtin, model_dd, tpr],
       [batch_img, roc_plot, batch_md, batch_json], api_name="ood_batch", concurrency_limit=2,
       concurrency_id="compute")
    return {"panel": panel}
