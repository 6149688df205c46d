"""Landscape tab: 2-D energy landscapes that people can see and shape.

- **Train**: a small MLP energy learns a 2-D data set (or points clicked onto the canvas) in the
  session's run of kind "landscape" (:class:`ebm_play.runs.Run` with ``LandscapeViews``, which
  publishes the energy grid, the forces of the loss and the particles). Play also applies changed
  settings to a live run; Pause and Step are flags the run's worker reads. A 0.15 s timer, on only
  while the run has something new, renders the newest grid.
- **Sample**: two samplers side by side on a trained or hand-made landscape, streamed, with
  acceptance, mode shares and mode hopping (:class:`ebm_play.landscape_sampling.Comparison`).
- **Compose**: E = Σ wᵢ Eᵢ of landscapes, sampled with annealed MALA.
- **Objectives side by side**: two of cd, dsm and nce trained on the same data and seed, in turns,
  in the session's run of kind "objectives" (:class:`ebm_play.runs.ObjectivesRun`); heat maps with
  score arrows and, at the end, mode shares of fresh samples from each model's own sampler. A 0.5 s
  timer runs only while the comparison does.

Endpoints: ``/landscape_train_start``, ``/landscape_status``, ``/landscape_pause``,
``/landscape_step``, ``/landscape_reset``, ``/landscape_sample``, ``/landscape_compose``,
``/landscape_gif``, ``/landscape_objectives_start``, ``/landscape_objectives_status``,
``/landscape_objectives_stop``. What a session keeps besides its run (clicked points, the composed landscape,
the last comparison for its GIF) lives in its ``choices``.
"""

from __future__ import annotations

import html
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import torch

import ebm_play
from ebm_play import EBMError
from ebm_play import landscapes as L
from ebm_play.data import points_csv, points_from_csv
from ebm_play.landscape_sampling import MAX_CHAINS, MAX_STEPS, Comparison, describe, sampler_options
from ebm_play.playground import Playground
from ebm_play.reproduce import TRAIN_STEPS, train_command
from ebm_play.runs import MAX_COMPARE_STEPS, MAX_PENDING_STEPS, ObjectivesRun, Run
from ebm_play.runtime import job_threads

from . import landscape_view as V
from .boundary import (
    NEWER,
    PRIVATE,
    AnySession,
    Choice,
    Choices,
    Click,
    File,
    Flag,
    Json,
    Kept,
    Number,
    Session,
    Whole,
    api,
    endpoint,
    on,
    on_changes,
)
from .common import fmt, picture

DATASET_CHOICES = [("Two moons", "two_moons"), ("Concentric rings", "rings"), ("Mixture of 8 Gaussians", "gaussians8"),
                   ("Checkerboard", "checkerboard"), ("Spiral", "spiral"), ("My points (clicked or uploaded)", "custom")]
DATASET_NAMES = {v: k for k, v in DATASET_CHOICES}
LANDSCAPE_CHOICES = [("Trained in this session", "trained"), ("Double well", "double_well"), ("Ring", "ring"),
                     ("Mixture of 8 Gaussians", "gmm"), ("Half-plane y > 0", "half_plane_up"),
                     ("Half-plane x > 0", "half_plane_right"), ("Composed (see Compose)", "composed")]
LANDSCAPE_NAMES = {v: k for k, v in LANDSCAPE_CHOICES}
TERM_CHOICES = [("(none)", "none")] + [c for c in LANDSCAPE_CHOICES if c[1] != "composed"]
SAMPLER_CHOICES = [("Langevin, reference form (noise σ)", "langevin"), ("Langevin, textbook (ULA, temperature)", "ula"),
                   ("MALA", "mala"), ("HMC", "hmc"), ("Annealed MALA", "annealed")]
SAMPLER_NAMES = {v: k for k, v in SAMPLER_CHOICES}
SHOW_CHOICES = [("Contours", "contours"), ("Data", "data"), ("Replay buffer", "buffer"),
                ("Fresh chains from noise", "fresh"), ("Force arrows", "arrows")]
SHOW_NAMES = [v for _, v in SHOW_CHOICES]
# 2-D training defaults (ebm_play.landscapes.train_config): two moons fits in ~10 s on one thread.
TRAIN_DEFAULTS = dict(dataset="two_moons", lr=5e-3, sampler_steps=20, step_size=0.002, noise=0.0632, alpha=0.1,
                      reinit=0.05, hidden=64, batch_size=256, seed=0)
SETTINGS = list(TRAIN_DEFAULTS)
LIVE = ("lr", "sampler_steps", "step_size", "noise", "alpha", "reinit", "batch_size")  # Play changes them on the fly
# Sampling presets: what goes wrong, and what helps. (landscape, start, steps, A, B); a side is
# (sampler, step size, noise, temperature).
PRESETS = {
    "anneal": ("double_well", "first_mode", 600, ("mala", 0.005, None, 1.0), ("annealed", 0.005, None, 1.0)),
    "step": ("gmm", "uniform", 400, ("mala", 0.005, None, 1.0), ("mala", 0.1, None, 1.0)),
    "noise": ("gmm", "uniform", 400, ("langevin", 0.002, 0.0632, None), ("langevin", 0.002, 0.002, None)),
    "hmc": ("double_well", "first_mode", 300, ("mala", 0.005, None, 1.0), ("hmc", 0.03, None, 1.0)),
}
PRESET_LABELS = {"anneal": "No annealing: stuck chains", "step": "Too large a step",
                 "noise": "Too little noise: collapse", "hmc": "MALA vs HMC"}
OBJECTIVE_CHOICES = [("Contrastive divergence (cd)", "cd"), ("Denoising score matching (dsm)", "dsm"),
                     ("Noise-contrastive estimation (nce)", "nce")]
OBJECTIVE_NAMES = {v: k for k, v in OBJECTIVE_CHOICES}
COMPARE_UPDATES = 800  # updates of each objective by default: two moons is fitted by then (~30 s for cd + dsm)
COMPARE_POLL_S = 0.5  # the comparison's timer (it publishes twice a second)
MAX_MODE_COLUMNS = 8  # modes shown in the table (hand-drawn points may have many clusters)
POINTS, COMPOSED, SAMPLED = "landscape_points", "landscape_composed", "landscape_sampled"  # session choices
MAX_CUSTOM = 5000  # clicked points per session
IDLE_PAUSE_S = 120.0  # a run nobody watches pauses itself (it would keep a core busy)
POLL_S = 0.15  # the page's timer while something runs
TEXT_EVERY_S = 1.0  # ... which refreshes the status text and the chart only this often
SETTLE_S = 1.0  # ... and keeps ticking this long after the run went quiet (the final picture of a pause)
FRAME_EVERY_S = 0.15  # sampling frames
GRID, SAMPLE_SIZE, N_SHOW = 80, 400, 800

CONFIG_SPECS = dict(
    dataset=Choice(DATASET_NAMES).named("data set"), lr=Number(1e-6, 0.1).named("learning rate"),
    sampler_steps=Whole(0, 200).named("Langevin steps"), step_size=Number(1e-6, 0.1).named("step size"),
    noise=Number(0, 1), alpha=Number(0, 10), reinit=Number(0, 1).named("re-init probability"),
    hidden=Whole(4, 256).named("hidden units"), batch_size=Whole(8, 1024).named("batch size"),
    seed=Whole(0, 2**31 - 1))
POINTS_SPEC = Json(MAX_CUSTOM, optional=True).named("points")
COMPARE_SPECS = dict(dataset=Choice(DATASET_NAMES).named("data set"),
                     objective_a=Choice(OBJECTIVE_NAMES).named("objective A"),
                     objective_b=Choice(OBJECTIVE_NAMES).named("objective B"),
                     updates=Whole(1, MAX_COMPARE_STEPS).named("updates"), seed=Whole(0, 2**31 - 1))


def _side_specs(side: str) -> dict:
    s = side.lower()
    return {f"sampler_{s}": Choice([*SAMPLER_NAMES, "none"] if s == "b" else SAMPLER_NAMES).named(f"sampler {side}"),
            f"step_{s}": Number(1e-7, 1.0, optional=True).named(f"{side} step size"),
            f"noise_{s}": Number(0, 1, optional=True).named(f"{side} noise"),
            f"temp_{s}": Number(1e-4, 1e4, optional=True).named(f"{side} temperature")}


# --- the session's run --------------------------------------------------------------------------
def _run(pg: Playground, session) -> Run | None:
    s = pg.sessions.peek(session)
    return s.runs.get("landscape") if s is not None else None


def _points(pg: Playground, session) -> torch.Tensor | None:
    s = pg.sessions.peek(session)
    return s.choices.get(POINTS) if s is not None else None


def _dataset(run: Run) -> str:
    return run.spec.info.get("dataset", "")


def _own_points(s, dataset: str, points) -> torch.Tensor | None:
    """The session's own points (new ones given through the API replace them) when the data set is
    "custom", else None."""
    if points is not None:
        s.choices[POINTS] = L.check_points(points, "points", MAX_CUSTOM)
    own = s.choices.get(POINTS) if dataset == "custom" else None
    if dataset == "custom" and own is None:
        raise EBMError("no points yet: click on the canvas to add some (API: pass points=[[x, y], …])")
    return own


def _ensure_run(pg: Playground, session, dataset, lr, sampler_steps, step_size, noise, alpha, reinit, hidden,
                batch_size, seed, points, start: bool) -> Run:
    """The session's run, made to match these settings: the live run with the new settings when only
    live ones changed (and new points, if given), else a new run."""
    s = pg.sessions.get(session)
    own = _own_points(s, dataset, points)
    cfg = L.train_config(lr=lr, sampler_steps=sampler_steps, step_size=step_size, noise=noise, alpha=alpha,
                         reinit=reinit, hidden=hidden, batch_size=batch_size, seed=seed)
    run = s.runs.get("landscape")
    same = run is not None and _dataset(run) == dataset and (run.config.hidden, run.config.seed) == (hidden, seed)
    if same and run.live:
        run.change(**{k: getattr(cfg, k) for k in LIVE})
        if own is not None and points is not None:
            run.set_data(own)
        return run
    if run is not None and run.live:
        run.stop()
    data = own if own is not None else L.dataset(dataset)[0].clone()
    return pg.start_run(session, "landscape", cfg, data, source=DATASET_NAMES[dataset], start=start,
                        idle_pause_s=IDLE_PAUSE_S, info={"dataset": dataset}, own_data=own is not None)


def status_of(pg: Playground, session) -> dict:
    run, own = _run(pg, session), _points(pg, session)
    mine = 0 if own is None else len(own)
    if run is None:
        return {"state": "none", "step": 0, "custom_points": mine}
    dataset = _dataset(run)
    return {**run.status(), "dataset": dataset, "points": mine if dataset == "custom" else len(L.dataset(dataset)[0]),
            "custom_points": mine, "view_version": run.version, "fit": {k: round(v, 4) for k, v in run.view.fit.items()}}


# --- the API: each call answers at once ---------------------------------------------------------
@endpoint(session=Session(), **CONFIG_SPECS, points=POINTS_SPEC)
def landscape_train_start(pg: Playground, session: str, dataset: str = "two_moons", lr: float = 5e-3,
                          sampler_steps: int = 20, step_size: float = 0.002, noise: float = 0.0632,
                          alpha: float = 0.1, reinit: float = 0.05, hidden: int = 64, batch_size: int = 256,
                          seed: int = 0, points: list | None = None) -> dict:
    """Play: train a 2-D MLP energy on a data set (two_moons, rings, gaussians8, checkerboard, spiral,
    or custom with points=[[x, y], …] in [-1, 1]²) in the background. A live run on the same data
    set, hidden size and seed takes the new settings from its next step; otherwise a new run starts."""
    run = _ensure_run(pg, session, dataset, lr, sampler_steps, step_size, noise, alpha, reinit, hidden, batch_size,
                      seed, points, start=True)
    if run.state == "paused":
        pg.resume_run(session, "landscape")
    elif run.state == "starting":
        try:  # a paused run (made by Step) still being built: it starts running once built
            run.resume()
        except EBMError:
            pass  # already meant to run
    return status_of(pg, session)


@endpoint(session=Session())
def landscape_status(pg: Playground, session: str) -> dict:
    """The session's landscape run: state, step, speed, last metrics, fit of the buffer to the data
    (a run nobody asks about for 2 minutes pauses itself)."""
    run = _run(pg, session)
    if run is not None:
        run.touch()
    return status_of(pg, session)


def _live_run(pg: Playground, session) -> Run:
    run = _run(pg, session)
    if run is None:
        raise EBMError("no landscape run in this session: press Play first")
    return run


@endpoint(session=Session())
def landscape_pause(pg: Playground, session: str) -> dict:
    """Pause the session's landscape run (within one sampler step)."""
    _live_run(pg, session).pause()
    return status_of(pg, session)


@endpoint(session=Session(), **CONFIG_SPECS, points=POINTS_SPEC, steps=Whole(1, MAX_PENDING_STEPS))
def landscape_step(pg: Playground, session: str, dataset: str = "two_moons", lr: float = 5e-3, sampler_steps: int = 20,
                   step_size: float = 0.002, noise: float = 0.0632, alpha: float = 0.1, reinit: float = 0.05,
                   hidden: int = 64, batch_size: int = 256, seed: int = 0, points: list | None = None,
                   steps: int = 1) -> dict:
    """Ask a paused run (a new paused one if needed) for ``steps`` training steps; the run takes them
    at once in the background (see ``pending_steps``, then ``step`` in ``/landscape_status``)."""
    run = _ensure_run(pg, session, dataset, lr, sampler_steps, step_size, noise, alpha, reinit, hidden, batch_size,
                      seed, points, start=False)
    for _ in range(steps):
        run.step_once()
    return status_of(pg, session)


@endpoint(session=Session(), clear_points=Flag())
def landscape_reset(pg: Playground, session: str, clear_points: bool = False) -> dict:
    """Reset: discard the session's landscape run (and, with clear_points, the clicked points)."""
    s = pg.sessions.get(session)
    run = s.runs.pop("landscape", None)
    if run is not None and run.live:
        run.stop()
    if clear_points:
        s.choices.pop(POINTS, None)
    return status_of(pg, session)


def _landscape(pg: Playground, session, name: str) -> tuple[torch.nn.Module, L.Modes | None, str]:
    """A landscape by name (this session's trained or composed one included), its modes and a label."""
    s = pg.sessions.get(session)
    if name == "trained":
        run = s.runs.get("landscape")
        if run is None or run.weights_step < 0:
            raise EBMError("no trained landscape in this session yet: train one above (Play)")
        dataset = _dataset(run)
        modes = L.modes_for(dataset, data=s.choices.get(POINTS) if dataset == "custom" else None)
        return run.model_copy(), modes, f"trained on {DATASET_NAMES[dataset]}, step {run.weights_step:,}"
    if name == "composed":
        if COMPOSED not in s.choices:
            raise EBMError("no composed landscape yet: compose one below first")
        energy, label = s.choices[COMPOSED]
        return energy, L.modes_of(energy), f"composed: {label}"
    energy = L.landscape(name)
    return energy, L.modes_of(energy), LANDSCAPE_NAMES[name]


def _stats(cmp: Comparison) -> str:
    """The comparison so far as a table people read: short headers, rounded numbers."""
    head = ["sampler", "accept", "mean E"] + (["modes", "outside", "hopped", "hops/chain", "1st hop"]
                                               if cmp.modes is not None else [])
    rows = []
    for side in cmp.sides:
        s = side.summary()
        row = [f"**{side.label}** {describe(side.sampler, side.options)}",
               "–" if s["accept_rate"] is None else f"{s['accept_rate']:.0%}", fmt(s["mean_energy"])]
        if side.tracker is not None:
            row += [" · ".join(f"{v:.0%}" for v in s["mode_share"]), f"{s['outside_share']:.0%}",
                    f"{s['chains_hopped']:.0%}", fmt(s["hops_per_chain"], 3), fmt(s["mean_first_hop"], 3)]
        rows.append(row)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    foot = ("*modes*: share of chains in each mode now · *hopped*: chains that changed mode at least once · "
            "*1st hop*: mean step of the first change · ") if cmp.modes is not None else ""
    return "\n".join(lines) + f"\n\n{foot}step {cmp.step:,} of {cmp.steps:,}"


@endpoint(session=Session(), landscape=Choice(LANDSCAPE_NAMES), **_side_specs("A"), **_side_specs("B"),
          steps=Whole(1, MAX_STEPS), chains=Whole(1, MAX_CHAINS), seed=Whole(0, 2**31 - 1),
          start=Choice(["uniform", "first_mode"]), t_start=Number(1e-4, 1e5, optional=True).named("start temperature"))
def landscape_sample(pg: Playground, session, landscape="double_well", sampler_a="mala", step_a=None, noise_a=None,
                     temp_a=None, sampler_b="annealed", step_b=None, noise_b=None, temp_b=None, steps=600, chains=300,
                     seed=0, start="first_mode", t_start=20.0):
    """Run sampler A and B (B may be 'none') on the same landscape from the same start, streaming
    both; the last output holds acceptance rates, mode shares and mode-hopping statistics."""
    sides = [("A", sampler_a, sampler_options(sampler_a, step_a, noise_a, temp_a, t_start, "A"))]
    if sampler_b != "none":
        sides.append(("B", sampler_b, sampler_options(sampler_b, step_b, noise_b, temp_b, t_start, "B")))
    energy, modes, label = _landscape(pg, session, landscape)
    cmp = Comparison(energy, sides, steps, chains, seed, start, modes)
    with job_threads(1):
        grid = L.energy_grid(energy, GRID)
    bg = V.background(*grid, size=SAMPLE_SIZE)

    def pictures():
        pics = [picture(V.compose_frame(bg, particles=x, particle_color=side[0].lower(),
                                        text=f"{SAMPLER_NAMES[side[1]].split(' (')[0]} · step {cmp.step:,}"), jpeg=True)
                for side, x in zip(sides, cmp.particles())]
        return pics[0], pics[1] if len(pics) > 1 else None

    first = True
    for _ in cmp.run(FRAME_EVERY_S):
        if not cmp.done:
            yield *pictures(), _stats(cmp), (None if first else gr.skip())
            first = False
    pg.sessions.get(session).choices[SAMPLED] = {"grid": grid, "frames": cmp.frames, "sides": [s[0] for s in sides]}
    yield *pictures(), _stats(cmp), {"landscape": label, **cmp.result()}


@endpoint(session=Session(), term1=Choice([v for _, v in TERM_CHOICES]).named("term 1"),
          weight1=Number(-10, 10).named("weight 1"), term2=Choice([v for _, v in TERM_CHOICES]).named("term 2"),
          weight2=Number(-10, 10).named("weight 2"), term3=Choice([v for _, v in TERM_CHOICES]).named("term 3"),
          weight3=Number(-10, 10).named("weight 3"))
def landscape_compose(pg: Playground, session, term1="ring", weight1=1.0, term2="half_plane_up", weight2=1.0,
                      term3="none", weight3=1.0) -> tuple:
    """Compose E = Σ wᵢ Eᵢ from up to three landscapes (trained, double_well, ring, gmm,
    half_plane_up, half_plane_right; 'none' to skip), keep it as this session's 'composed'
    landscape and sample it (annealed MALA); returns the picture and a summary."""
    chosen = [(n, w) for n, w in ((term1, weight1), (term2, weight2), (term3, weight3)) if n != "none"]
    if not chosen:
        raise EBMError("choose at least one term to compose")
    energies = [_landscape(pg, session, n)[0] for n, _ in chosen]
    composed = ebm_play.compose(*[(e, w) for e, (_, w) in zip(energies, chosen)], names=[n for n, _ in chosen])
    label = " ".join(f"{'+' if w >= 0 else '−'} {abs(w):g}×{LANDSCAPE_NAMES[n]}" for n, w in chosen).lstrip("+ ")
    pg.sessions.get(session).choices[COMPOSED] = (composed, label)
    cmp = Comparison(composed, [("A", "annealed", sampler_options("annealed"))], steps=400, chains=300, start="uniform")
    for _ in cmp.run():
        pass
    with job_threads(1):
        terms = [(L.energy_grid(e, GRID), f"{w:g} × {LANDSCAPE_NAMES[n]}") for e, (n, w) in zip(energies, chosen)]
        total = L.energy_grid(composed, GRID)
    strip = V.composition(terms, total, cmp.particles()[0])
    side = cmp.result()["samplers"][0]
    info = {"composed": label, "terms": [{"landscape": n, "weight": w} for n, w in chosen],
            "energy_min": round(float(total[2].min()), 4), "sample_mean_energy": side["mean_energy"],
            "accept_rate": side["accept_rate"]}
    return picture(strip, jpeg=True), info


@endpoint(session=Session(), what=Choice(["training", "sampling"]))
def landscape_gif(pg: Playground, session, what="training") -> str:
    """An animated GIF of this session's training run ('training') or last sampling run ('sampling')."""
    s = pg.sessions.get(session)
    with job_threads(1):
        if what == "training":
            run = s.runs.get("landscape")
            if run is None or not run.views.snapshots:
                raise EBMError("no training run to animate: press Play first")
            frames = V.training_frames(list(run.views.snapshots), run.view.xs, run.view.ys, run.view.data)
        else:
            if SAMPLED not in s.choices:
                raise EBMError("no sampling run to animate: press Sample first")
            done = s.choices[SAMPLED]
            frames = V.sampling_frames(done["grid"], done["frames"], done["sides"])
    folder = Path(pg.tmp) / session
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("landscape-*.gif"):
        old.unlink(missing_ok=True)
    return V.save_gif(frames, folder / f"landscape-{what}-{secrets.token_hex(3)}.gif", fps=8)


# --- objectives side by side -----------------------------------------------------------------------
def _comparison(pg: Playground, session) -> ObjectivesRun | None:
    s = pg.sessions.peek(session)
    return s.runs.get(ObjectivesRun.kind) if s is not None else None


@endpoint(session=Session(), **COMPARE_SPECS, points=POINTS_SPEC)
def landscape_objectives_start(pg: Playground, session: str, dataset: str = "two_moons", objective_a: str = "cd",
                               objective_b: str = "dsm", updates: int = COMPARE_UPDATES, seed: int = 0,
                               points: list | None = None) -> dict:
    """Train two objectives (cd, dsm, nce) side by side on the same data set (custom: points=[[x, y],
    …] or the clicked ones) with the same seed, ``updates`` updates each, in the background; then
    fresh samples from each with its own sampler (dsm: the ladder) give its mode shares. A running
    comparison of the session is replaced."""
    if objective_a == objective_b:
        raise EBMError("choose two different objectives to compare")
    s = pg.sessions.get(session)
    own = _own_points(s, dataset, points)
    old = _comparison(pg, session)
    if old is not None and old.live:
        old.stop()
    data = own if own is not None else L.dataset(dataset)[0]
    modes = L.modes_for(dataset, data=own) if own is not None else L.modes_for(dataset)
    pg.start_objectives(session, data, (objective_a, objective_b), seed, updates, modes,
                        source=DATASET_NAMES[dataset], info={"dataset": dataset}, own_data=own is not None)
    return landscape_objectives_status(pg, session)


@endpoint(session=Session())
def landscape_objectives_status(pg: Playground, session: str) -> dict:
    """The session's objectives comparison: state, update, each side's sampler, last figures and,
    once done, its mode shares against the data's (samples, data, weights, max_error, outside, tv)."""
    run = _comparison(pg, session)
    if run is None:
        return {"state": "none", "step": 0}
    run.touch()
    return {**run.status(), "dataset": run.info.get("dataset", "")}


@endpoint(session=Session())
def landscape_objectives_stop(pg: Playground, session: str) -> dict:
    """Stop the session's comparison at its current update (its mode shares are measured there)."""
    run = _comparison(pg, session)
    if run is None or not run.live:
        raise EBMError("no comparison running in this session: press Compare first")
    run.stop()
    return landscape_objectives_status(pg, session)


# --- what the page shows -------------------------------------------------------------------------
def _canvas(run: Run | None, show, dataset, own) -> tuple[tuple, Callable]:
    """What the canvas shows now, as (a key that changes when the picture would, a painter): a live
    run (or the last run on the chosen data set), else the chosen data set."""
    n_own = 0 if own is None else len(own)
    if run is not None and run.view.E is not None and (run.live or _dataset(run) == dataset):
        custom = _dataset(run) == "custom" and own is not None
        key = ("run", run.id, run.version, run.state, tuple(sorted(show)), n_own if custom else 0)
        return key, lambda: V.run_picture(run.view, show, run.state, own.numpy() if custom else None)
    if dataset == "custom":
        return ("custom", n_own), lambda: V.preview(None if own is None else own.numpy(), f"{n_own} points: click to add")
    return ("set", dataset), lambda: V.preview(L.dataset(dataset)[0][:N_SHOW].numpy(),
                                                f"{DATASET_NAMES[dataset]}: press Play")


def status_markdown(run: Run | None, own) -> str:
    if run is None:
        n = 0 if own is None else len(own)
        return ("**No run yet.** Pick a data set (or click points onto the canvas) and press **Play**."
                + (f"  \n{n:,} points of your own." if n else ""))
    st = run.status()
    parts = [f'<span class="ebm-dot ebm-{run.state}">●</span> **{run.state.capitalize()}**', f"step {st['step']:,}"]
    if run.state == "running":
        parts.append(f"{fmt(st['steps_per_s'], 3)} steps/s")
    lines = [" · ".join(parts)]
    if st["last"]:
        m = st["last"]
        lines.append(f"loss {fmt(m['loss'])} · E(data) {fmt(m['e_real'])} · E(negatives) {fmt(m['e_fake'])}")
    fit = run.view.fit
    if fit:
        lines.append(f"{fit['precision']:.0%} of buffer particles on the data · "
                     f"{fit['coverage']:.0%} of the data covered (within 0.1)")
    lines.append(f"{DATASET_NAMES.get(_dataset(run), '?')} · MLP hidden {run.config.hidden}")
    if run.error:
        lines.append(f'<span class="ebm-error">Error: {html.escape(run.error)}</span>')
    return "  \n".join(lines)


N_VIEW = 6  # canvas, status, curve, log, seen, timer


def refresh(pg: Playground, session, show, dataset, seen: dict | None) -> list:
    """What changed on the page since it last looked (everything for ``seen`` None); the timer
    stays on only while the run has more to show."""
    out = [gr.skip()] * N_VIEW
    run, own = _run(pg, session), _points(pg, session)
    seen = {} if seen is None else dict(seen)
    now = time.monotonic()
    if seen.get("run", "?") != (run.id if run else None):
        seen = {"run": run.id if run else None}
        out[2], out[3] = None, ""
    key, paint = _canvas(run, show, dataset, own)
    if key != seen.get("canvas"):
        out[0], seen["canvas"] = picture(paint(), jpeg=True), key
    state, at = (run.state, run.step) if run else ("none", 0)
    moved = state != "running" and at != seen.get("at")  # a single step: show its numbers at once
    if now - seen.get("text_t", 0) >= TEXT_EVERY_S or state != seen.get("state") or moved:
        seen["text_t"], seen["state"], seen["at"] = now, state, at
        md = status_markdown(run, own)
        if md != seen.get("md"):
            out[1] = seen["md"] = md
        if run is not None and run.history and len(run.history) != seen.get("n"):
            seen["n"] = len(run.history)
            out[2] = picture(V.energy_curves(run.history[:]))
    if run is not None:
        run.touch()
        tail = [len(run.log), run.log[-1] if run.log else ""]
        if tail != seen.get("log"):
            seen["log"], out[3] = tail, "\n".join(run.log[-30:])
    busy = run is not None and (run.state in ("starting", "running") or run.status()["pending_steps"] > 0
                                or (run.live and run.view.step != run.step))
    quiet = seen["quiet"] = None if busy else seen.get("quiet") or now
    settling = not busy and run is not None and run.live and now - quiet < SETTLE_S
    out[4], out[5] = seen, gr.Timer(active=busy or settling)
    return out


VIEW_SPECS = dict(show=Choices(SHOW_NAMES), dataset=Choice(DATASET_NAMES).named("data set"))


@endpoint(session=AnySession(), **VIEW_SPECS, seen=Kept())
def poll(pg: Playground, session, show, dataset, seen) -> list:
    return refresh(pg, session, show, dataset, seen)


def _answer(pg: Playground, session, show, dataset, seen) -> list:
    """A control's answer: what changed, and the timer on to follow what the run does next."""
    return refresh(pg, session, show, dataset, {**(seen or {}), "quiet": None})


@endpoint(session=Session(), **CONFIG_SPECS, show=Choices(SHOW_NAMES), seen=Kept())
def play(pg: Playground, session, dataset, lr, sampler_steps, step_size, noise, alpha, reinit, hidden, batch_size,
         seed, show, seen) -> list:
    landscape_train_start(pg, session, dataset, lr, sampler_steps, step_size, noise, alpha, reinit, hidden,
                          batch_size, seed)
    return _answer(pg, session, show, dataset, seen)


@endpoint(session=Session(), **CONFIG_SPECS, show=Choices(SHOW_NAMES), seen=Kept())
def step_once(pg: Playground, session, dataset, lr, sampler_steps, step_size, noise, alpha, reinit, hidden,
              batch_size, seed, show, seen) -> list:
    landscape_step(pg, session, dataset, lr, sampler_steps, step_size, noise, alpha, reinit, hidden, batch_size, seed)
    return _answer(pg, session, show, dataset, seen)


@endpoint(session=Session(), **VIEW_SPECS, seen=Kept())
def pause(pg: Playground, session, show, dataset, seen) -> list:
    landscape_pause(pg, session)
    return _answer(pg, session, show, dataset, seen)


@endpoint(session=Session(), **VIEW_SPECS, seen=Kept())
def reset(pg: Playground, session, show, dataset, seen) -> list:
    landscape_reset(pg, session)
    return _answer(pg, session, show, dataset, seen)


@endpoint(session=Session(), **VIEW_SPECS, seen=Kept())
def clear_points(pg: Playground, session, show, dataset, seen) -> list:
    """Forget the clicked points (and a run on them)."""
    run = _run(pg, session)
    if run is not None and _dataset(run) == "custom":
        landscape_reset(pg, session, clear_points=True)
    else:
        pg.sessions.get(session).choices.pop(POINTS, None)
    return _answer(pg, session, show, dataset, seen)


@endpoint(session=Session(), per_click=Whole(1, 50).named("points per click"), show=Choices(SHOW_NAMES),
          seen=Kept(), where=Click())
def click(pg: Playground, session, per_click, show, seen, where: gr.SelectData) -> list:
    """A click on the canvas adds points around it to the session's own points (and to a live run
    on them); the data set becomes 'My points'."""
    s = pg.sessions.get(session)
    old = s.choices.get(POINTS)
    have = 0 if old is None else len(old)
    if have + per_click > MAX_CUSTOM:
        raise EBMError(f"at most {MAX_CUSTOM:,} points of your own: clear them to start over")
    new = L.points_around(*V.pixel_to_point(*where), per_click, seed=have)
    s.choices[POINTS] = new if old is None else torch.cat([old, new])
    run = s.runs.get("landscape")
    if run is not None and run.live and _dataset(run) == "custom":
        run.set_data(s.choices[POINTS])
    return ["custom", *_answer(pg, session, show, "custom", seen)]


def objectives_table(run: ObjectivesRun) -> str:
    """Each side's mode shares against the data's: the share of samples in each mode and outside
    every mode, the largest error of a mode's weight, the total-variation distance."""
    reports = [(o, run.sides[o].sampler, run.sides[o].report) for o in run.objectives if o in run.sides]
    reports = [r for r in reports if r[2] is not None]
    if not reports:
        return ("" if run.modes is not None or run.busy
                else "*This data set has no modes to count (the comparison still shows its energies).*")
    k = len(reports[0][2]["data"]) - 1
    shown = min(k, MAX_MODE_COLUMNS)
    head = ["", *[f"mode {i + 1}" for i in range(shown)], "outside", "max weight error", "TV"]
    rows = [["data", *[fmt(v, 3) for v in reports[0][2]["data"][:shown]], fmt(reports[0][2]["data"][-1], 3), "–", "–"]]
    for o, sampler, r in reports:
        rows.append([f"**{o}** ({sampler})", *[fmt(v, 3) for v in r["samples"][:shown]], fmt(r["outside"], 3),
                     fmt(r["max_error"], 3), fmt(r["tv"], 3)])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    more = f" (the first {shown} of {k} modes shown)" if k > shown else ""
    return ("\n".join(lines) + f"\n\nShares of {run.N_SAMPLES:,} fresh samples per objective, each from its own sampler, "
            f"in each mode of the data{more} · *max weight error*: the largest |weight − data weight| among samples in "
            "some mode · *TV*: total-variation distance of the two histograms, outside share included.")


def objectives_status(run: ObjectivesRun | None) -> str:
    if run is None:
        return "Pick two objectives and press **Compare**: both train on the data set and seed chosen above."
    parts = [f'<span class="ebm-dot ebm-{run.state}">●</span> **{run.state.capitalize()}**',
             f"update {run.step:,} of {run.max_steps:,}", f"{' vs '.join(run.objectives)} on {run.source}",
             f"seed {run.seed}"]
    line = " · ".join(parts)
    if run.busy and (not run.live or run.step >= run.max_steps):
        line += " · drawing fresh samples for the mode shares…"
    if run.error:
        line += f'  \n<span class="ebm-error">Error: {html.escape(run.error)}</span>'
    return line


N_COMPARE_VIEW = 6  # picture A, picture B, status, table, seen, timer


def compare_refresh(pg: Playground, session, seen: dict | None) -> list:
    """What changed in the comparison since the page last looked; the timer stays on while it runs."""
    out = [gr.skip()] * N_COMPARE_VIEW
    run = _comparison(pg, session)
    seen = {} if seen is None else dict(seen)
    if seen.get("run", "?") != (run.id if run else None):
        seen = {"run": run.id if run else None}
        out[0], out[1], out[3] = None, None, ""
    busy = run is not None and run.busy  # read first: once it is false, the final view is out
    if run is not None:
        run.touch()
        if run.version != seen.get("version") and all(o in run.sides for o in run.objectives):
            seen["version"], sides = run.version, run.sides
            out[0], out[1] = (picture(V.objective_picture(sides[o], run.data_shown, SAMPLE_SIZE), jpeg=True)
                              for o in run.objectives)
            table = objectives_table(run)
            if table != seen.get("table"):
                out[3] = seen["table"] = table
    md = objectives_status(run)
    if md != seen.get("md"):
        out[2] = seen["md"] = md
    out[4], out[5] = seen, gr.Timer(active=busy)
    return out


@endpoint(session=AnySession(), seen=Kept())
def compare_poll(pg: Playground, session, seen) -> list:
    """The timer's tick, and the page load (a reload finds a comparison still running)."""
    return compare_refresh(pg, session, seen)


@endpoint(session=Session(), **COMPARE_SPECS, seen=Kept())
def compare(pg: Playground, session, dataset, objective_a, objective_b, updates, seed, seen) -> list:
    """Compare: start the comparison, and the timer that follows it."""
    landscape_objectives_start(pg, session, dataset, objective_a, objective_b, updates, seed)
    return compare_refresh(pg, session, seen)


@endpoint(session=Session(), seen=Kept())
def compare_stop(pg: Playground, session, seen) -> list:
    landscape_objectives_stop(pg, session)
    return compare_refresh(pg, session, seen)


@endpoint(name=Choice([*SAMPLER_NAMES, "none"]))
def sampler_fields(pg: Playground, name) -> tuple:
    """A sampler's 2-D defaults in the form; the fields it does not have are greyed out."""
    if name == "none":
        return gr.Number(value=None), gr.Number(value=None, interactive=False), gr.Number(value=None, interactive=False)
    d = sampler_options(name)
    t = d.get("temperature", d.get("t_end"))
    return (gr.Number(value=d["step_size"], interactive=True),
            gr.Number(value=d.get("noise"), interactive="noise" in d),
            gr.Number(value=t, interactive=t is not None))


@endpoint(name=Choice(PRESETS))
def sample_preset(pg: Playground, name) -> list:
    """A preset's settings, and empty pictures and statistics: they showed another run."""
    land, start, steps, a, b = PRESETS[name]
    sides = [[s[0], s[1], gr.Number(value=s[2], interactive=s[2] is not None),
              gr.Number(value=s[3], interactive=s[3] is not None)] for s in (a, b)]
    return [land, start, steps, 20.0, *sides[0], *sides[1], None, None, "", None]


# --- layout and wiring -------------------------------------------------------------------------
INTRO = ("A 2-D energy landscape shows *why* an EBM produces what it does: the heat map is the energy E(x) over the "
         "square (dark valleys = low energy = data-like), the white dots are the data, orange dots the replay buffer "
         "(the negatives), pink crosses fresh chains from noise. Arrows show the two forces of the loss as the change "
         "one training step makes to the landscape: <span style='color:#0891b2'>**cyan**</span> where energy is pulled "
         "down (at the data), <span style='color:#dc2626'>**red**</span> where it is pushed up (at the negatives), "
         "pointing down the slope of that change.")


def _train_column() -> dict:
    d, c = TRAIN_DEFAULTS, {}
    gr.Markdown("### Train a 2-D energy")
    c["dataset"] = gr.Dropdown(DATASET_CHOICES, value=d["dataset"], label="Data set", elem_id="landscape-dataset",
                               info="or click on the canvas to add your own points")
    with gr.Row():
        c["brush"] = gr.Slider(1, 50, 10, step=1, label="Points per click", min_width=120)
        c["clear"] = gr.Button("Clear my points", size="sm", min_width=100)
    with gr.Row():
        c["lr"] = gr.Number(d["lr"], label="Learning rate", min_width=100)
        c["sampler_steps"] = gr.Number(d["sampler_steps"], precision=0, label="Langevin steps", min_width=100)
    with gr.Row():
        c["step_size"] = gr.Number(d["step_size"], label="Step size", min_width=100)
        c["noise"] = gr.Number(d["noise"], label="Noise σ", min_width=100, info="√(2·step) = temperature 1")
    with gr.Row():
        c["alpha"] = gr.Number(d["alpha"], label="α (energy penalty)", min_width=100)
        c["reinit"] = gr.Slider(0, 1, d["reinit"], step=0.01, label="Buffer re-init probability", min_width=100)
    with gr.Accordion("Model and batch (a change of hidden units or seed starts a new run)", open=False), gr.Row():
        c["hidden"] = gr.Number(d["hidden"], precision=0, label="Hidden units", min_width=90)
        c["batch_size"] = gr.Number(d["batch_size"], precision=0, label="Batch", min_width=90)
        c["seed"] = gr.Number(d["seed"], precision=0, label="Seed", min_width=90)
    c["show"] = gr.CheckboxGroup(SHOW_CHOICES, value=SHOW_NAMES, label="Show")
    return c


def _train_view() -> dict:
    v = {}
    with gr.Row():
        v["play"] = gr.Button("▶ Play", variant="primary", elem_id="landscape-play")
        v["pause"] = gr.Button("❚❚ Pause", elem_id="landscape-pause")
        v["step"] = gr.Button("Step", elem_id="landscape-step")
        v["reset"] = gr.Button("↺ Reset", variant="stop", elem_id="landscape-reset")
    with gr.Row():
        first = V.preview(L.dataset("two_moons")[0][:N_SHOW].numpy(), f"{DATASET_NAMES['two_moons']}: press Play")
        v["canvas"] = gr.Image(picture(first, jpeg=True), type="filepath", height=V.SIZE, width=V.SIZE,
                               interactive=False, show_label=False, elem_id="landscape-canvas", scale=3,
                               buttons=["download", "fullscreen"])
        with gr.Column(scale=2, min_width=260):
            v["status"] = gr.Markdown(status_markdown(None, None), elem_classes="ebm-status", elem_id="landscape-status")
            v["curve"] = gr.Image(None, type="filepath", show_label=False, height=200, interactive=False,
                                  elem_id="landscape-curve", buttons=["download"])
            v["log"] = gr.Textbox(label="Log", lines=4, max_lines=6, interactive=False, autoscroll=True)
    return v


def _sampler_fields(side: str, value: str, choices: list) -> dict:
    d = sampler_options(value)
    s = side.lower()
    return {f"sampler_{s}": gr.Dropdown(choices, value=value, label=f"Sampler {side}"),
            f"step_{s}": gr.Number(d["step_size"], label=f"{side}: step size"),
            f"noise_{s}": gr.Number(None, label=f"{side}: noise σ (Langevin)", interactive=False),
            f"temp_{s}": gr.Number(1.0, label=f"{side}: temperature T")}


OBJECTIVES_INTRO = (
    "### Objectives side by side\nTwo training objectives on the data set and seed chosen above, the same network and "
    "the same number of updates: **cd** pushes energy up at MCMC negatives, **dsm** learns the score −∇E from noised "
    "data (no MCMC), **nce** tells data from uniform noise. Each heat map shows its energy with the score field as "
    "red arrows (for dsm the *learned* score at the smallest noise level, for cd and nce the field their energy "
    "implies) and, at the end, fresh samples from its own sampler (pink; dsm: annealed Langevin down the noise "
    "ladder), whose mode shares the table compares with the data's.")


def _objective_controls() -> dict:
    o = {"objective_a": gr.Dropdown(OBJECTIVE_CHOICES, value="cd", label="Objective A", elem_id="landscape-objective-a"),
         "objective_b": gr.Dropdown(OBJECTIVE_CHOICES, value="dsm", label="Objective B",
                                    elem_id="landscape-objective-b"),
         "updates": gr.Number(COMPARE_UPDATES, precision=0, label="Updates (each)", elem_id="landscape-objective-updates",
                              info=f"at most {MAX_COMPARE_STEPS:,}; a cd update costs ~4 dsm updates")}
    with gr.Row():
        o["go"] = gr.Button("Compare", variant="primary", elem_id="landscape-compare")
        o["stop"] = gr.Button("Stop", elem_id="landscape-compare-stop")
    o["status"] = gr.Markdown(objectives_status(None), elem_classes="ebm-status", elem_id="landscape-compare-status")
    return o


def _two_pictures(label_a: str, id_a: str, label_b: str, id_b: str) -> dict:
    """Two pictures side by side, ``img_a`` and ``img_b``."""
    with gr.Row():
        return {key: gr.Image(label=text, elem_id=elem, type="filepath", height=SAMPLE_SIZE, interactive=False)
                for key, text, elem in (("img_a", label_a, id_a), ("img_b", label_b, id_b))}


def _objectives_section() -> dict:
    gr.Markdown(OBJECTIVES_INTRO)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            o = _objective_controls()
        with gr.Column(scale=2):
            o.update(_two_pictures("Objective A", "landscape-objective-a-map", "Objective B", "landscape-objective-b-map"))
            o["table"] = gr.Markdown("", elem_id="landscape-objectives-table", elem_classes="ebm-table")
    return o


def _sample_section() -> dict:
    gr.Markdown("### Sample on a landscape: two samplers side by side\nSame landscape, same start, same seed. "
                "Mode shares and hops count chains near each mode (data clusters, wells, mixture means); "
                "the GIF button below exports the last run.")
    c = {}
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            c["landscape"] = gr.Dropdown(LANDSCAPE_CHOICES, value="double_well", label="Landscape",
                                         elem_id="landscape-sample-on")
            c["start"] = gr.Radio([("Uniform over the square", "uniform"), ("All in the first mode", "first_mode")],
                                  value="first_mode", label="Start")
            with gr.Row():
                c["chains"] = gr.Number(300, precision=0, label="Chains", min_width=90)
                c["steps"] = gr.Number(600, precision=0, label="Steps", min_width=90)
                c["seed"] = gr.Number(0, precision=0, label="Seed", min_width=90)
            c["t_start"] = gr.Number(20.0, label="Annealing: start temperature", info="annealed MALA cools to T")
            with gr.Row():
                with gr.Column(min_width=140):
                    c.update(_sampler_fields("A", "mala", SAMPLER_CHOICES))
                with gr.Column(min_width=140):
                    c.update(_sampler_fields("B", "annealed", SAMPLER_CHOICES + [("(none: A only)", "none")]))
            gr.Markdown("**Presets** (what goes wrong, and what helps):")
            with gr.Row():
                for key, text in PRESET_LABELS.items():
                    c[f"preset_{key}"] = gr.Button(text, size="sm")
            c["go"] = gr.Button("Sample", variant="primary", elem_id="landscape-sample")
        with gr.Column(scale=2):
            c.update(_two_pictures("Sampler A", "landscape-a", "Sampler B", "landscape-b"))
            c["stats"] = gr.Markdown("", elem_id="landscape-stats", elem_classes="ebm-table")
            with gr.Accordion("Result as JSON (what /landscape_sample returns last)", open=False):
                c["json"] = gr.JSON(label="result")
    return c


def _compose_section() -> dict:
    gr.Markdown("### Compose landscapes: a product of experts\nE = Σ wᵢ Eᵢ: adding energies multiplies densities "
                "(both must agree), a negative weight carves a landscape out. The composed landscape can then be "
                "sampled above (*Composed*).")
    c = {"terms": []}
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            for i, (v, w) in enumerate((("ring", 1.0), ("half_plane_up", 1.0), ("none", 1.0))):
                with gr.Row():
                    c["terms"].append(gr.Dropdown(TERM_CHOICES, value=v, label=f"Term {i + 1}", min_width=160, scale=2))
                    c["terms"].append(gr.Number(w, label="weight", min_width=80, scale=1))
            c["go"] = gr.Button("Compose and sample", variant="primary", elem_id="landscape-compose")
        with gr.Column(scale=2):
            c["img"] = gr.Image(label="Terms and their sum (particles: annealed MALA on the sum)", type="filepath",
                                interactive=False, elem_id="landscape-composed")
            with gr.Accordion("Composition as JSON (what /landscape_compose returns)", open=False):
                c["json"] = gr.JSON(label="composition")
    with gr.Row():
        c["gif_what"] = gr.Radio([("Training", "training"), ("Last sampling run", "sampling")], value="training",
                                 label="Export an animation (GIF)")
        c["gif_go"] = gr.Button("Export GIF", elem_id="landscape-gif-btn")
        c["gif"] = gr.File(label="GIF", interactive=False, elem_id="landscape-gif")
    return c


QUICK = {**PRIVATE, "queue": False, "show_progress_on": []}  # answers at once: no queue round trip, no spinners
# (show_progress_on=[]: the page re-reads every component in its loading-status table on each status
# message of every event; issue #21)


def _wire_train(pg: Playground, session, c: dict, v: dict) -> tuple[list, list]:
    seen, timer = gr.State({}), gr.Timer(POLL_S, active=False)
    view = [v["canvas"], v["status"], v["curve"], v["log"], seen, timer]
    settings = [c[k] for k in SETTINGS]
    on(v["play"].click, play, pg, [session, *settings, c["show"], seen], view, **QUICK)
    on(v["step"].click, step_once, pg, [session, *settings, c["show"], seen], view, **QUICK)
    for key, fn in (("pause", pause), ("reset", reset)):
        on(v[key].click, fn, pg, [session, c["show"], c["dataset"], seen], view, **QUICK)
    on(c["clear"].click, clear_points, pg, [session, c["show"], c["dataset"], seen], view, **QUICK)
    for trigger in (c["dataset"].input, c["show"].input):
        on(trigger, poll, pg, [session, c["show"], c["dataset"], seen], view, **QUICK)
    on(v["canvas"].select, click, pg, [session, c["brush"], c["show"], seen], [c["dataset"], *view], **QUICK)
    # the timer's own inputs: never a picture (a picture input is uploaded with every tick)
    on(timer.tick, poll, pg, [session, c["show"], c["dataset"], seen], view, **QUICK)
    for fn, name in ((landscape_train_start, "landscape_train_start"), (landscape_status, "landscape_status"),
                     (landscape_pause, "landscape_pause"), (landscape_step, "landscape_step"),
                     (landscape_reset, "landscape_reset")):
        api(fn, pg, name, concurrency_limit=None)
    return [session, c["show"], c["dataset"], seen], view


def _wire_sample(pg: Playground, session, s: dict, k: dict) -> None:
    for side in ("a", "b"):
        on(s[f"sampler_{side}"].input, sampler_fields, pg, s[f"sampler_{side}"],
           [s[f"step_{side}"], s[f"noise_{side}"], s[f"temp_{side}"]], **QUICK)
    fields = [s[name] for name in ("landscape", "start", "steps", "t_start", "sampler_a", "step_a", "noise_a", "temp_a",
                                   "sampler_b", "step_b", "noise_b", "temp_b")]
    shown = [s["img_a"], s["img_b"], s["stats"], s["json"]]
    for key in PRESETS:
        on(s[f"preset_{key}"].click, sample_preset, pg, gr.State(key), [*fields, *shown], **QUICK)
    compute = dict(concurrency_limit=2, concurrency_id="compute")
    inputs = [session, s["landscape"], s["sampler_a"], s["step_a"], s["noise_a"], s["temp_a"], s["sampler_b"],
              s["step_b"], s["noise_b"], s["temp_b"], s["steps"], s["chains"], s["seed"], s["start"], s["t_start"]]
    on(s["go"].click, landscape_sample, pg, inputs, shown, api_name="landscape_sample", show_progress="minimal",
       **compute)
    on(k["go"].click, landscape_compose, pg, [session, *k["terms"]], [k["img"], k["json"]],
       api_name="landscape_compose", **compute)
    on(k["gif_go"].click, landscape_gif, pg, [session, k["gif_what"]], k["gif"], api_name="landscape_gif", **compute)


def _wire_objectives(pg: Playground, session, c: dict, o: dict) -> tuple:
    seen, timer = gr.State({}), gr.Timer(COMPARE_POLL_S, active=False)
    view = [o["img_a"], o["img_b"], o["status"], o["table"], seen, timer]
    inputs = [session, c["dataset"], o["objective_a"], o["objective_b"], o["updates"], c["seed"], seen]
    on(o["go"].click, compare, pg, inputs, view, **QUICK)
    on(o["stop"].click, compare_stop, pg, [session, seen], view, **QUICK)
    on(timer.tick, compare_poll, pg, [session, seen], view, **QUICK)  # never a picture among its inputs
    for fn, name in ((landscape_objectives_start, "landscape_objectives_start"),
                     (landscape_objectives_status, "landscape_objectives_status"),
                     (landscape_objectives_stop, "landscape_objectives_stop")):
        api(fn, pg, name, concurrency_limit=None)
    return [session, seen], view


# --- your own points as a CSV file, and the command line of a run ----------------------------------------
CSV_BYTES = 2**20  # an uploaded CSV of points: MAX_CUSTOM rows of "x,y" take about 200 KB
POINTS_FILE = "my-points.csv"  # what "Download my points" writes and the command's --data names


@endpoint(session=Session(), path=File(CSV_BYTES).named("points file"), show=Choices(SHOW_NAMES), seen=Kept())
def upload_points(pg: Playground, session, path, show, seen) -> list:
    """An uploaded CSV of 2-D points (columns x and y, a header optional) becomes the session's own
    points, the data set "My points" (a live run on them trains on the new ones). Points outside
    [−1, 1]² are shifted and scaled into [−0.95, 0.95]², the shape kept (``data.points_from_csv``)."""
    if not path:
        return [gr.skip()] * (2 + N_VIEW)
    data = points_from_csv(path, MAX_CUSTOM, CSV_BYTES, name=Path(path).name[:80])
    x = L.check_points(data.train.x, "points", MAX_CUSTOM)
    s = pg.sessions.get(session)
    s.choices[POINTS] = x
    run = s.runs.get("landscape")
    if run is not None and run.live and _dataset(run) == "custom":
        run.set_data(x)
    return ["custom", f"Your points: {html.escape(data.source)}.", *_answer(pg, session, show, "custom", seen)]


@endpoint(session=Session())
def points_download(pg: Playground, session) -> str:
    """The session's own points (clicked or uploaded) as a CSV file that ``--data`` reads back exactly."""
    own = _points(pg, session)
    if own is None:
        raise EBMError("no points of your own yet: click on the canvas or upload a CSV")
    folder = Path(pg.tmp) / session
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / (POINTS_FILE + ".part")
    part.write_text(points_csv(own))
    return str(part.replace(folder / POINTS_FILE))


@endpoint(**CONFIG_SPECS, newer=NEWER)
def command(pg: Playground, dataset, lr, sampler_steps, step_size, noise, alpha, reinit, hidden, batch_size,
            seed, newer=None) -> tuple[str, str]:
    """The exact ``python -m ebm_play train …`` line for Play's settings on the chosen data set, and
    what it cannot reproduce; nothing when the page has sent a newer call (``boundary.on_changes``)."""
    if newer:
        return gr.skip(), gr.skip()
    cfg = L.train_config(lr=lr, sampler_steps=sampler_steps, step_size=step_size, noise=noise, alpha=alpha,
                         reinit=reinit, hidden=hidden, batch_size=batch_size, seed=seed)  # as _ensure_run makes it
    line = train_command(cfg, POINTS_FILE if dataset == "custom" else dataset, TRAIN_STEPS,
                         "my-landscape.safetensors", preset="landscape")
    data = (f"Your points (clicked or uploaded) are not in the command: **Download my points** saves them as "
            f"`{POINTS_FILE}`, which `--data` reads back exactly. " if dataset == "custom"
            else f"`--data {dataset}` draws the same points as this page. ")
    return line, (data + f"Play trains until you pause; the command runs {TRAIN_STEPS:,} updates. Settings "
                  "changed while a run plays are not in it: it trains with these from the first update.")


MAX_ADDRESS_KEYS = 20


def address_values(query: dict) -> tuple[dict, list[str]]:
    """Play's settings from a page address (``?tab=landscape&dataset=rings&lr=0.01&hidden=128``; names
    as the form's, ``-`` or ``_``): each value checked by its field's spec on its own; one that fails is
    left out with a note, never an error."""
    params = {str(k).replace("-", "_"): v for k, v in query.items() if k != "tab"}
    if len(params) > MAX_ADDRESS_KEYS:
        return {}, [f"the page address carries over {MAX_ADDRESS_KEYS} settings: none applied"]
    values, notes = {}, []
    for key, text in params.items():
        spec = CONFIG_SPECS.get(key)
        if spec is None or key == "dataset" and text == "custom":
            notes.append(f"{key[:40]!r} is not a Landscape setting: ignored")
            continue
        try:
            v = text if key == "dataset" else float(text) if "." in text or "e" in text.lower() else int(text)
            values[key] = spec(spec.label or key.replace("_", " "), v)
        except (ValueError, EBMError) as e:
            notes.append(f"{e if isinstance(e, EBMError) else f'{key}: not a number: {text[:20]!r}'}: ignored")
    return values, notes


@endpoint()
def from_address(pg: Playground, request: gr.Request = None) -> list:
    """The page address's settings in Play's form when it opens the Landscape tab; a warning lists
    what could not be used."""
    query = dict(request.query_params) if request is not None else {}
    if query.get("tab") != "landscape":
        return [gr.skip()] * len(SETTINGS)
    values, notes = address_values(query)
    if notes:
        gr.Warning("Page address: " + "; ".join(notes)[:300])
    return [values.get(k, gr.skip()) for k in SETTINGS]


def _own_points_block() -> dict:
    """Upload of 2-D points, and their download."""
    p = {}
    with gr.Accordion("My points as a CSV file", open=False):
        p["file"] = gr.File(label="Upload 2-D points (.csv: x,y per line, a header optional)", file_types=[".csv"],
                            type="filepath", height=110, elem_id="landscape-points-file")
        p["note"] = gr.Markdown(f"At most {MAX_CUSTOM:,} points and {CSV_BYTES // 2**10:,} KB; points outside the "
                                "square are shifted and scaled into it, the shape kept.")
        p["get"] = gr.Button("Download my points", size="sm")
        p["got"] = gr.File(label=POINTS_FILE, interactive=False, visible=True, height=60)
    return p


def _command_block(c: dict) -> dict:
    d = TRAIN_DEFAULTS
    line, note = command(None, *(d[k] for k in SETTINGS))
    with gr.Accordion("Reproduce: the command line", open=True):
        r = {"command": gr.Code(line, language="shell", label="The same run from the command line", lines=2,
                                interactive=False, wrap_lines=True, buttons=["copy"], elem_id="landscape-command"),
             "note": gr.Markdown(note)}
    return r


def _wire_own(pg: Playground, session, c: dict, p: dict, r: dict, poll_inputs: list, view: list) -> None:
    settings = [c[k] for k in SETTINGS]
    on_changes(settings, command, pg, settings, [r["command"], r["note"]], **QUICK)
    seen = poll_inputs[3]
    on(p["file"].upload, upload_points, pg, [session, p["file"], c["show"], seen], [c["dataset"], p["note"], *view],
       **PRIVATE)
    on(p["get"].click, points_download, pg, session, p["got"], **PRIVATE)


def create_tab(pg: Playground, session: gr.BrowserState) -> dict:
    """Lay out the Landscape tab and wire its events; returns what the app wires to (``poll`` and
    ``compare``: the inputs and outputs of the run's and the comparison's refresh, for the page load;
    ``address``: Play's settings, which the page address may fill)."""
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            c = _train_column()
            own = _own_points_block()
        with gr.Column(scale=2):
            v = _train_view()
    poll_inputs, view = _wire_train(pg, session, c, v)
    _wire_own(pg, session, c, own, _command_block(c), poll_inputs, view)
    compare = _wire_objectives(pg, session, c, _objectives_section())
    _wire_sample(pg, session, _sample_section(), _compose_section())
    return {"poll": (poll_inputs, view), "compare": compare, "address": [c[k] for k in SETTINGS]}
