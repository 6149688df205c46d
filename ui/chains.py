"""What the Sample and Compose tabs share: sampler settings per model, start images, the streamed
run of chains (a helper thread plus snapshots for the request's generator) and the plots.

Why a helper thread: ``ebm_play.sample_chains`` is a plain loop; running it beside the request's
generator lets the generator send a frame every ``FRAME_EVERY_S`` however fast the steps are, and
lets a closed page, a cancelled API job or the Stop button end the chains early (the recorder's
``should_stop`` is checked after every step).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import ebm_play
from ebm_play import EBMError
from ebm_play.models import IMAGE_ENERGIES
from ebm_play.runtime import make_generator
from ebm_play.samplers import sampler_options

from .common import number, thin, whole
from ebm_play.recording import MAX_FRAMES, ChainJob, Jobs, Recorder, Recording, RecordStore  # noqa: F401

MAX_CHAINS = 256
MAX_STEPS = 5000
MAX_WORK = 320_000  # chains × steps × gradient evaluations per step, per request (~1 min on one CPU core)
FRAME_EVERY_S = 0.25  # a streamed frame at most this often
STALL_S = 20.0  # the chains stop when nobody has read their progress for this long (page or client gone)
PLOT_CHAINS = 16  # chains drawn as their own line in the energy plot
STARTS = [("uniform noise", "uniform"), ("Gaussian noise (σ 0.5, clipped)", "gaussian"),
          ("replay buffer of this session's training run", "buffer"), ("an image (draw or upload)", "image")]
START_NAMES = {v for _, v in STARTS}

# Settings for the textbook samplers per model kind, used where a model file recommends none. Models
# trained with the reference Langevin (step 10, noise 0.005) act like T ≈ 1e-6, so ula/mala/hmc need
# a small temperature. Measured on the shipped models (16 chains; see the Sample tab's report):
#   cnn  ula  T 1e-5, α 1e-4: digits in 200 steps from uniform noise (E 5.37 → −0.11)
#        mala T 1e-4, α 1e-4, wall 1000: acceptance 0.45 from test digits, 0.66 from noise
#        hmc  T 1e-4, ε 0.01, 5 leapfrog, wall 1000: acceptance 0.65 from digits, 0.80 from noise
#   jem  mala α 5e-5 (1e-4 gives 0.35–0.47), hmc as cnn (0.64 / 0.73)
# The Metropolis samplers' soft wall (penalty for pixels outside [−1, 1], not tempered) at 1000
# lets pixels overshoot by ~0.02 without rejecting the −1 background; pictures and files clamp.
_LOW_T = {
    "ula": {"steps": 200, "step_size": 1e-4, "temperature": 1e-5},
    "mala": {"steps": 500, "step_size": 1e-4, "temperature": 1e-4, "wall": 1000.0},
    "hmc": {"steps": 100, "step_size": 1e-2, "leapfrog": 5, "temperature": 1e-4, "wall": 1000.0},
    "annealed": {"steps": 300, "base": "ula", "step_size": 1e-4, "t_start": 1e-2, "t_end": 1e-5},
}
KIND_DEFAULTS: dict[str, dict[str, dict]] = {
    "cnn": _LOW_T,
    "jem": {**_LOW_T, "mala": {**_LOW_T["mala"], "step_size": 5e-5}},
    "composed": _LOW_T,
    "rbm": {
        "ula": {"steps": 200, "step_size": 1e-3, "temperature": 0.1},
        "mala": {"steps": 200, "step_size": 3e-4, "temperature": 0.1},
        "hmc": {"steps": 100, "step_size": 1e-2, "leapfrog": 5, "temperature": 0.1},
        "annealed": {"steps": 300, "base": "ula", "step_size": 1e-3, "t_start": 10.0, "t_end": 0.1},
    },
}

RECORDS = RecordStore()


def recommended(model, sampler: str) -> dict:
    """Settings for ``sampler`` on ``model`` (steps included): the model file's own recommendation,
    else this module's per-kind table, else the sampler's defaults."""
    if sampler not in ebm_play.SAMPLERS:
        raise EBMError(f"unknown sampler {sampler!r}; known: {', '.join(ebm_play.SAMPLERS)}")
    kind = getattr(model, "kind", "cnn")
    base = dict(KIND_DEFAULTS.get(kind, _LOW_T).get(sampler, {}))
    own = dict(getattr(model, "info", {}).get("samplers", {}).get(sampler, {}))
    rec = {**base, **own}
    if "steps" not in rec:
        import inspect

        rec["steps"] = inspect.signature(ebm_play.SAMPLERS[sampler]).parameters["steps"].default
    return rec


def training_length(model) -> int | None:
    """Sampler steps per training iteration (what chains were trained to do), if known."""
    cfg = getattr(model, "info", {}).get("train_config") or {}
    if getattr(model, "kind", "") in ("cnn", "jem") and isinstance(cfg.get("sampler_steps"), int):
        return cfg["sampler_steps"]
    steps = getattr(model, "info", {}).get("samplers", {}).get("langevin", {}).get("steps")
    return steps if isinstance(steps, int) else None


def sampler_settings(model, sampler: str, step_size=None, noise=None, temperature=None, leapfrog=None,
                     t_start=None, base=None) -> tuple[int, dict]:
    """(recommended steps, options for ``sample_chains``) from the model's recommendation and the
    user's values (None = keep the recommendation). Every number is validated here, with its name."""
    rec = recommended(model, sampler)
    steps = rec.pop("steps")
    if sampler == "annealed":
        b = base if base not in (None, "") else rec.get("base", "ula")
        if b not in ("langevin", "ula", "mala", "hmc"):
            raise EBMError(f"annealed sampling needs a gradient base sampler (langevin, ula, mala, hmc), not {b!r}")
        inner = {k: v for k, v in recommended(model, b).items() if k not in ("steps", "temperature")}
        rec = {**inner, **{k: v for k, v in rec.items() if k in ("t_start", "t_end")}, "base": b}
        allowed = (set(sampler_options(b)) - {"temperature", "generator"}) | {"t_start", "t_end", "base"}
    else:
        allowed = set(sampler_options(sampler)) - {"generator"}
    opts = {k: v for k, v in rec.items() if k in allowed}
    if step_size is not None and "step_size" in allowed:
        opts["step_size"] = number("step size", step_size, 1e-12, 1e4)
    if noise is not None and "noise" in allowed:
        opts["noise"] = number("noise", noise, 0, 10)
    if temperature is not None:
        key = "t_end" if sampler == "annealed" else "temperature"
        if key in allowed:
            opts[key] = number("temperature", temperature, 1e-12, 1e6)
    if leapfrog is not None and "leapfrog" in allowed:
        opts["leapfrog"] = whole("leapfrog steps", leapfrog, 1, 100)
    if t_start is not None and "t_start" in allowed:
        opts["t_start"] = number("start temperature", t_start, 1e-12, 1e6)
    return steps, opts


def shown_settings(model, sampler: str, base=None) -> tuple[int, dict]:
    """What the page's knobs show for ``sampler`` on ``model``: the recommended steps and the options
    with the sampler's own defaults filled in (so a knob is never blank or 0 by accident)."""
    steps, opts = sampler_settings(model, sampler, base=base)
    inner = opts.get("base", sampler) if sampler == "annealed" else sampler
    own = {k: v for k, v in sampler_options(inner).items()
           if k in ("step_size", "noise", "temperature", "leapfrog") and isinstance(v, (int, float))}
    if sampler == "annealed":
        own.pop("temperature", None)
        own.update({k: v for k, v in sampler_options("annealed").items() if k in ("t_start", "t_end", "base")})
    return steps, {**own, **opts}


def gradients_per_step(sampler: str, opts: dict) -> int:
    if sampler == "hmc" or opts.get("base") == "hmc":
        return int(opts.get("leapfrog", 10))
    return 1


def check_work(chains: int, steps: int, sampler: str, opts: dict) -> None:
    work = chains * steps * gradients_per_step(sampler, opts)
    if work > MAX_WORK:
        raise EBMError(f"too much work for one request: chains × steps{' × leapfrog' if work > chains * steps else ''}"
                       f" = {work:,}, the limit is {MAX_WORK:,}; use fewer chains or steps")


def editor_image(value):
    """A drawing or upload from the page or the API (path, PIL image, array, or an image editor's
    {background, layers, composite} value) → something ``ebm_play.preprocess`` reads, or None."""
    if isinstance(value, dict):
        if "composite" in value or "background" in value:
            comp = value.get("composite")
            if comp is None:
                comp = value.get("background")
            return editor_image(comp)
        value = value.get("path")  # never "url": the server fetches nothing a caller names
    if value is None or (isinstance(value, str) and not value):
        return None
    if isinstance(value, np.ndarray) and (value.size == 0 or float(np.ptp(value)) == 0):
        return None
    return value


def start_images(kind: str, n: int, seed, image=None, registry=None, session=None) -> torch.Tensor | None:
    """Where the chains start (None = uniform noise drawn by the engine from the run's seed)."""
    if kind not in START_NAMES:
        raise EBMError(f"unknown start {kind!r}; use one of: {', '.join(sorted(START_NAMES))}")
    if kind == "uniform":
        return None
    g = make_generator(None if seed is None else seed + 1, torch.device("cpu"))
    if kind == "gaussian":
        return (torch.randn((n, 1, 28, 28), generator=g) * 0.5).clamp(-1, 1)
    if kind == "image":
        pic = editor_image(image)
        if pic is None:
            raise EBMError("start from an image: draw a digit on the pad or upload a picture first")
        return ebm_play.preprocess(pic).repeat(n, 1, 1, 1)
    s = registry.peek(session) if registry is not None else None
    if s is None or s.run is None:
        raise EBMError("start from the replay buffer: this session has no training run (start one in the Train tab)")
    buf = s.run.view.starts
    if buf is None:
        raise EBMError("start from the replay buffer: the training run has ended and its buffer is gone")
    idx = torch.randint(len(buf), (n,), generator=g)
    return buf[idx].clamp(-1, 1)


ChainRun = ChainJob
JOBS = Jobs()


class ModelFiles:
    """Uploaded ``.safetensors`` models, loaded once per file (a few kept)."""

    def __init__(self, keep: int = 4):
        self.keep = keep
        self._cache: OrderedDict[tuple, ebm_play.EnergyModel] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, path, device) -> ebm_play.EnergyModel:
        p = Path(path)
        if not p.is_file():
            raise EBMError(f"no such model file: {p.name}")
        key = (str(p), p.stat().st_mtime_ns, p.stat().st_size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        m = ebm_play.load_model(p, device)
        if m.kind not in IMAGE_ENERGIES:
            raise EBMError(f"{p.name} is a {m.kind} model, not an energy model over digits (cnn, jem or rbm)")
        with self._lock:
            self._cache[key] = m
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
        return m


MODEL_FILES = ModelFiles()


# --- plots -------------------------------------------------------------------------------------------
CHAIN_COLOR = "#cbd5e1"
MEAN_COLOR = "#4f46e5"
MARK_COLOR = "#dc2626"
TERM_COLORS = ["#2563eb", "#f59e0b", "#10b981", "#a855f7", "#ec4899", "#0ea5e9", "#84cc16", "#64748b"]


def _snapshot(rec: Recording) -> tuple[list[int], list[torch.Tensor]]:
    n = min(len(rec.steps), len(rec.energies))
    return rec.steps[:n], rec.energies[:n]


def energy_plot_data(rec: Recording, marker: int | None = None) -> tuple[pd.DataFrame, dict, list]:
    """Long-format rows for a gr.LinePlot: one line per chain (the first ``PLOT_CHAINS``), the mean,
    and a vertical red line at the training length when the run goes past it."""
    steps, energies = _snapshot(rec)
    idx = thin(list(range(len(steps))))
    rows = []
    k = min(PLOT_CHAINS, rec.chains)
    for i in idx:
        e = energies[i]
        finite = e[torch.isfinite(e)]
        for j in range(k):
            v = float(e[j])
            if math.isfinite(v):
                rows.append((steps[i], v, f"chain {j + 1}"))
        if len(finite):
            rows.append((steps[i], float(finite.mean()), "mean"))
    cmap = {f"chain {j + 1}": CHAIN_COLOR for j in range(k)}
    cmap["mean"] = MEAN_COLOR
    legend = ["mean"]
    df = pd.DataFrame(rows, columns=["step", "value", "series"])
    if marker is not None and steps and steps[-1] > marker and not df.empty:
        name = f"training length ({marker} steps)"
        lo, hi = float(df["value"].min()), float(df["value"].max())
        df = pd.concat([df, pd.DataFrame([(marker, lo, name), (marker, hi, name)], columns=df.columns)],
                       ignore_index=True)
        cmap[name] = MARK_COLOR
        legend.append(name)
    return df, cmap, legend


def accept_plot_data(rec: Recording, window: int = 20) -> pd.DataFrame:
    """Acceptance per update (mean over chains), as a running mean over ``window`` updates."""
    a = np.asarray(rec.accept[:], dtype=np.float64)
    if not len(a):
        return pd.DataFrame({"step": pd.Series(dtype="int64"), "value": pd.Series(dtype="float64"),
                             "series": pd.Series(dtype="str")})
    run = pd.Series(a).rolling(window, min_periods=1).mean().to_numpy()
    overall = np.cumsum(a) / np.arange(1, len(a) + 1)
    idx = thin(list(range(len(a))))
    rows = [(i + 1, float(run[i]), f"last {window} updates") for i in idx]
    rows += [(i + 1, float(overall[i]), "since the start") for i in idx]
    return pd.DataFrame(rows, columns=["step", "value", "series"])


def terms_plot_data(rec: Recording, weights: dict[str, float]) -> tuple[pd.DataFrame, dict]:
    """Each expert's weighted energy w·E_i (mean over chains) at the recorded frames, and the total."""
    rows, cmap = [], {}
    n = len(rec.frame_at)
    for c, (name, values) in enumerate(list(rec.terms.items())):
        w = weights.get(name, 1.0)
        label = f"{name} (w {w:+g})"
        cmap[label] = TERM_COLORS[c % len(TERM_COLORS)]
        rows += [(rec.frame_at[i], w * v, label) for i, v in enumerate(values[:n]) if math.isfinite(w * v)]
    steps, energies = _snapshot(rec)
    for i in thin(list(range(len(steps)))):
        v = float(energies[i].float().mean())
        if math.isfinite(v):
            rows.append((steps[i], v, "total E"))
    cmap["total E"] = "#111827"
    return pd.DataFrame(rows, columns=["step", "value", "series"]), cmap


def summary(rec: Recording) -> dict:
    """JSON-able facts about a finished recording (part of what /sample and /compose return)."""
    last = rec.energies[-1].tolist() if rec.energies else []
    energy = [round(v, 6) if math.isfinite(v) else None for v in last]
    finite = [v for v in energy if v is not None]
    acc = rec.meta.get("accept_rate")
    return {"record": rec.id, "steps_done": rec.last_step, "stopped": rec.stopped, "frames": len(rec.frame_at),
            "frame_steps": list(rec.frame_at), "energy": energy,
            "mean_energy": float(np.mean(finite)) if finite else None,
            "accept_rate": None if acc is None else round(float(acc), 4)}


def status_line(rec: Recording, running: bool) -> str:
    steps, energies = _snapshot(rec)
    if not steps:
        return "starting…"
    e = energies[-1]
    parts = [f"{'running' if running else ('stopped' if rec.stopped else 'done')}",
             f"step {steps[-1]:,} of {rec.steps_planned:,}", f"mean energy {float(e.mean()):.4g}"]
    if rec.accept:
        recent = rec.accept[-20:]
        parts.append(f"acceptance {sum(recent) / len(recent):.2f} (last {len(recent)}), "
                     f"{sum(rec.accept) / len(rec.accept):.2f} overall")
    return " · ".join(parts)



def export_files(folder: str | Path, record, fps) -> dict[str, str | None]:
    """GIF, MP4, PNG and .npz of a recording kept in :data:`RECORDS` (written once per id and fps)."""
    import re
    import shutil

    from ebm_play.media import write_all

    rec = RECORDS.get(record)
    if rec is None:
        raise EBMError("unknown or expired recording: run the chains again (recordings are kept for a while only)")
    fps = number("frames per second", fps, 1, 60)
    root = Path(folder) / "media"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():  # files of recordings no longer kept go too
        if old.is_dir() and RECORDS.get(old.name) is None:
            shutil.rmtree(old, ignore_errors=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{rec.meta.get('model', 'model')}-{rec.meta.get('sampler', '')}"
                  f"-{rec.chains}x{rec.last_step}").strip("-")[:80] or "chains"
    out = root / rec.id / f"fps{fps:g}"
    done = out / ".done"
    if done.exists():
        files = {k: next(iter(out.glob(f"*.{k}")), None) for k in ("gif", "mp4", "png", "npz")}
        if all(files[k] is not None for k in ("gif", "png", "npz")):
            return {k: None if v is None else str(v) for k, v in files.items()}
    files = write_all(rec, out, fps, stem)
    done.touch()
    return {k: None if v is None else str(v) for k, v in files.items()}


def status_line_at(rec: Recording, i: int) -> str:
    """What the status says while scrubbing: the frame's step and its mean energy."""
    s = rec.frame_at[i]
    try:
        e = float(rec.energies[rec.steps.index(s)].mean())
        energy = f" · mean energy {e:.4g}"
    except ValueError:
        energy = ""
    return f"frame {i + 1} of {len(rec.frame_at)} · step {s:,} of {rec.last_step:,}{energy}"
