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

from ebm_play import EBMError, ood
from ebm_play.runtime import job_threads

from . import draw
from .common import user_errors
from .ood_tab import MIN_TPR, check_tpr
from .sessions import Registry

DEFAULT_JEM = "mnist-ood"  # three JEMs averaged: accuracy 0.993 and a far sharper energy; says "I don't
# know" to 69% of the letters at TPR 0.95 against mnist-jem's 29% (weights/README.md)


def jem_model(registry: Registry, session) -> tuple[object, str]:
    """The session's current model if it is a JEM, else the shipped JEM (else any loaded JEM)."""
    model, label = registry.current_model(session)
    if getattr(model, "has_classes", False):
        return model, label
    names = [DEFAULT_JEM] if DEFAULT_JEM in registry.models else []
    names += [k for k, m in registry.models.items() if getattr(m, "has_classes", False) and k != DEFAULT_JEM]
    if not names:
        raise EBMError("classification needs a JEM model (classifier + energy); none is loaded: train one "
                       "with kind 'jem' in the Train tab and press 'Use this model'")
    return registry.models[names[0]], names[0]


def create_tab(registry: Registry, session: gr.BrowserState, page: gr.Tab | None = None) -> dict:
    gr.Markdown("A **JEM** is a classifier whose logits f(x) also give an energy **E(x) = −logsumexp f(x)**. "
                "The classifier is often confident about anything, scribbles included; the energy tells "
                "whether the picture looks like a digit at all. Draw something that is *not* a digit and watch. "
                "(The default, `mnist-ood`, averages three JEMs: its energy is the mean of theirs, each "
                "standardised on training digits.)")
    with gr.Row():
        panel = draw.input_panel("classify")
        with gr.Column(scale=1, min_width=300):
            tpr = gr.Slider(MIN_TPR, 0.999, ood.DEFAULT_TPR, step=0.001, label="True-positive rate on test digits",
                            info="the energy threshold accepts this share of real test digits", elem_id="classify-tpr")
            run_btn = gr.Button("Classify", variant="primary", elem_id="classify-run")
            answer_md = gr.Markdown("", label="answer", elem_id="classify-answer")
        probs_plot = gr.BarPlot(x="digit", y="p(y|x)", y_lim=[0, 1], label="p(y|x)", sort="x",
                                x_title="digit", y_title="p(y | x)", elem_id="classify-probs")
    with gr.Accordion("Result (JSON, as /classify returns it)", open=False):
        result_json = gr.JSON(label="result", elem_id="classify-result")

    @user_errors
    def classify(session=None, image=None, digit=None, tpr=ood.DEFAULT_TPR):
        """p(y|x) of a JEM for a drawing (or test digit ``digit``), its energy and the answer: the class,
        or "I don't know" when the energy is above the threshold that accepts ``tpr`` of test digits."""
        x, source = draw.model_input(panel.api_image, image, digit)
        tpr = check_tpr(tpr)
        model, label = jem_model(registry, session)
        with job_threads(1):
            r = ood.classify(model, x, tpr, scorer=ood.scorer_for(model))
        df = pd.DataFrame({"digit": [str(i) for i in range(10)], "p(y|x)": r["probabilities"]})
        why = r["explanation"]
        formula = "mean_i (E_i(x) − μ_i)/σ_i" if model.kind == "jem-ensemble" else "−logsumexp f(x)"
        text = (f"# {r['answer']}\n{why[:1].upper() + why[1:]}.  \n"
                f"Top class **{r['prediction']}** with p = {r['confidence']:.3f} · energy E(x) = {formula} = "
                f"**{r['energy']:.4g}** (higher than {r['percentile']:.1f}% of test digits; threshold at TPR "
                f"{tpr:.1%}: {r['threshold']:.4g}).  \nModel: {label} · input: {source}.")
        result = {"model": label, "input": source,
                  **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items() if k != "probabilities"},
                  "probabilities": [round(p, 6) for p in r["probabilities"]]}
        return df, text, result

    draw.wire_run(run_btn, classify, [session, panel.pad, panel.digit, tpr], [probs_plot, answer_md, result_json],
                  "classify", {panel.pad: panel.api_image}, concurrency_limit=2, concurrency_id="compute",
                  preprocess=False)
    return {"panel": panel}
