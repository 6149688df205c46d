"""Classify tab (JEM): p(y|x) for a drawn digit next to its energy, and an honest "I don't know".

A JEM is a classifier whose logits f(x) also define an energy, E(x) = −logsumexp f(x). The
classifier's softmax can be confident about anything, a scribble included; the energy says whether
the image looks like the digits the model was trained on. When the energy is above the threshold
that accepts a chosen share (TPR) of MNIST test digits, the answer is "I don't know", however
confident the class. Computation: :func:`ebm_play.ood.classify`.

Endpoint ``/classify`` (session, image, digit, tpr) → p(y|x) bar chart, answer (Markdown), result
(JSON: probabilities (10), prediction, confidence, energy, percentile, threshold, answer).
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from ebm_play import ood
from ebm_play.playground import Playground
from ebm_play.runtime import job_threads

from . import draw
from .boundary import AnySession, Picture, endpoint
from .common import fmt
from .ood_tab import MIN_TPR, TPR

DEFAULT_JEM = "mnist-ood"  # three JEMs averaged: accuracy 0.993 and a far sharper energy; says "I don't
# know" to 69% of the letters at TPR 0.95 against mnist-jem's 29% (weights/README.md)


@endpoint(session=AnySession(), image=Picture(), digit=draw.DIGIT, tpr=TPR)
def classify(pg: Playground, session=None, image=None, digit=None, tpr=ood.DEFAULT_TPR):
    """p(y|x) of a JEM for a drawing (or test digit ``digit``), its energy and the answer: the class,
    or "I don't know" when the energy is above the threshold that accepts ``tpr`` of test digits."""
    x, source = draw.model_input(image, digit)
    model, label = pg.classifying_model(session, DEFAULT_JEM)
    with job_threads(1):
        r = ood.classify(model, x, tpr)
    classes = r.get("classes") or [str(i) for i in range(len(r["probabilities"]))]
    why = r["explanation"]
    formula = "mean_i (E_i(x) − μ_i)/σ_i" if model.kind == "jem-ensemble" else "−logsumexp f(x)"
    text = (f"# {r['answer']}\n{why[:1].upper() + why[1:]}.  \n"
            f"Top class **{classes[r['prediction']]}** with p = {r['confidence']:.3f} · energy E(x) = {formula} = "
            f"**{fmt(r['energy'])}** (higher than {r['percentile']:.1f}% of test digits; threshold at TPR "
            f"{tpr:.1%}: {fmt(r['threshold'])}).  \nModel: {label} · input: {source}.")
    plot = gr.BarPlot(value=pd.DataFrame({"digit": classes, "p(y|x)": r["probabilities"]}),
                      label=f"p(y|x) of {source} under {label}")
    return plot, text, draw.tidy({"model": label, "input": source, **r})


classify_page = draw.page_twin(classify, image=draw.Pad())


def create_tab(pg: Playground, session: gr.BrowserState, page: gr.Tab | None = None) -> dict:
    gr.Markdown("A **JEM** is a classifier whose logits f(x) also give an energy **E(x) = −logsumexp f(x)**. "
                "The classifier is often confident about anything, scribbles included; the energy tells "
                "whether the picture looks like a digit at all. Draw something that is *not* a digit and watch. "
                "(The default, `mnist-ood`, averages three JEMs: its energy is the mean of theirs, each "
                "standardised on training digits.)")
    with gr.Row():
        panel = draw.input_panel(pg, "classify")
        with gr.Column(scale=1, min_width=300):
            tpr = gr.Slider(MIN_TPR, 0.999, ood.DEFAULT_TPR, step=0.001, label="True-positive rate on test digits",
                            info="the energy threshold accepts this share of real test digits", elem_id="classify-tpr")
            run_btn = gr.Button("Classify", variant="primary", elem_id="classify-run")
            answer_md = gr.Markdown("", elem_id="classify-answer")
        probs_plot = gr.BarPlot(x="digit", y="p(y|x)", y_lim=[0, 1], label="p(y|x)", sort="x",
                                x_title="digit", y_title="p(y | x)", elem_id="classify-probs")
    with gr.Accordion("Result (JSON, as /classify returns it)", open=False):
        result_json = gr.JSON(label="result", elem_id="classify-result")
    draw.wire_run(pg, run_btn, (classify, classify_page), [session, panel.pad, panel.digit, tpr],
                  [session, panel.api_image, panel.digit, tpr], [probs_plot, answer_md, result_json], "classify")
    return {"panel": panel}
