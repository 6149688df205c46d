"""The shipped `mnist` recipe against the reference tutorial's training, after the same wall-clock time.

    python benchmarks/reference_recipe.py --data ../shared/data [--minutes 15] [--n 1000]

Both recipes train at the same time, each in its own process with one thread (so they get the
same machine), from fresh models, for ``--minutes`` of wall-clock time:

- reference: a faithful copy of the UvA tutorial's training (benchmarks/reference.py's CNN and
  60-step sampler, its list-based replay buffer of 8192 with 5% uniform-noise restarts, its loss
  α(E_r² + E_f²) + E_r − E_f, Adam lr 1e-4 β=(0, 0.999), gradient clipping 0.1, StepLR 0.97 per
  epoch, batch 128, real images jittered by N(0, 0.005²));
- shipped: ``ebm_play.Trainer`` with the configuration stored in weights/mnist.safetensors, up to
  the number of updates the model card documents (the recipe includes its length).

Then ``ebm_play.evaluation.evaluate`` judges both the same way: 1000 fresh chains from uniform noise,
256 reference-Langevin steps (the tutorial's own generation setting), Fréchet digit distance,
confident fraction, class coverage, OOD AUROC per set, and the mean and worst of those AUROCs.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _repo  # noqa: F401  (puts the repository on sys.path: `python benchmarks/<name>.py` works)
import numpy as np
import torch
from reference import CNNModel, copy_weights, generate_samples

import ebm_play
from ebm_play.evaluation import evaluate

HERE = Path(__file__).resolve().parent
EVAL_SAMPLER = {"langevin": {"steps": 256, "step_size": 10.0, "noise": 0.005, "grad_clamp": 0.03}}


class TutorialBuffer:
    """The tutorial's ``Sampler``: a list of single images, newest first, cut at ``max_len``."""

    def __init__(self, model, sample_size, max_len=8192):
        self.model, self.sample_size, self.max_len = model, sample_size, max_len
        self.examples = [(torch.rand((1, 1, 28, 28)) * 2 - 1) for _ in range(sample_size)]

    def sample_new_exmps(self, steps=60, step_size=10):
        n_new = np.random.binomial(self.sample_size, 0.05)
        rand_imgs = torch.rand((n_new, 1, 28, 28)) * 2 - 1
        old_imgs = torch.cat(random.choices(self.examples, k=self.sample_size - n_new), dim=0)
        inp_imgs = torch.cat([rand_imgs, old_imgs], dim=0).detach()
        inp_imgs = generate_samples(self.model, inp_imgs, steps=steps, step_size=step_size)
        self.examples = list(inp_imgs.detach().chunk(self.sample_size, dim=0)) + self.examples
        self.examples = self.examples[: self.max_len]
        return inp_imgs.detach()


def train_reference(digits, seconds: float, out: Path) -> dict:
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    cnn = CNNModel()
    buffer = TutorialBuffer(cnn, 128)
    opt = torch.optim.Adam(cnn.parameters(), lr=1e-4, betas=(0.0, 0.999))
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.97)
    x, steps, t0 = digits.x, 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        for idx in torch.randperm(len(x)).split(128):  # one epoch, the short last batch dropped
            if time.monotonic() - t0 >= seconds:
                break
            if len(idx) < 128:
                continue
            real = (x[idx] + torch.randn_like(x[idx]) * 0.005).clamp(-1, 1)
            fake = buffer.sample_new_exmps(steps=60, step_size=10)
            real_out, fake_out = cnn(torch.cat([real, fake])).chunk(2)
            loss = 0.1 * (real_out ** 2 + fake_out ** 2).mean() + fake_out.mean() - real_out.mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(cnn.parameters(), 0.1)
            opt.step()
            steps += 1
        sched.step()
    ours = ebm_play.CNNEnergy(width=16)
    copy_weights(cnn, ours)
    ebm_play.save_model(ours, out, info={"samplers": EVAL_SAMPLER, "train_steps": steps})
    return {"steps": steps}


def train_shipped(digits, seconds: float, out: Path) -> dict:
    info = ebm_play.load_model("mnist").info
    config = ebm_play.TrainConfig.from_dict(info["train_config"])
    trainer = ebm_play.Trainer(config, digits.x, digits.y)
    t0 = time.monotonic()
    while trainer.state.step < info["train_steps"] and time.monotonic() - t0 < seconds:
        trainer.step()
    ebm_play.save_model(trainer.model, out, info={"samplers": EVAL_SAMPLER, "train_steps": trainer.state.step})
    return {"steps": trainer.state.step, "recipe_steps": info["train_steps"],
            "rollbacks": len(trainer.state.events)}


def child(args) -> None:
    ebm_play.configure_threads(1)
    digits = ebm_play.mnist(train=True, root=args.data)
    train = {"reference": train_reference, "shipped": train_shipped}[args.role]
    facts = train(digits, 60 * args.minutes, Path(args.out))
    print(json.dumps(facts), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=15)
    ap.add_argument("--data", default=os.environ.get("EBM_PLAY_DATA"), help="MNIST root (full MNIST for real figures)")
    ap.add_argument("--n", type=int, default=1000, help="samples and OOD images per set")
    ap.add_argument("--role", choices=["reference", "shipped"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        return child(args)
    tmp = Path(tempfile.mkdtemp(prefix="reference-recipe-"))
    procs = {}
    for role in ("reference", "shipped"):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--role", role, "--out", str(tmp / f"{role}.safetensors"),
               "--minutes", str(args.minutes)] + (["--data", args.data] if args.data else [])
        procs[role] = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "EBM_PLAY_THREADS": "1"})
    print(f"training both recipes side by side for {args.minutes:g} min (one thread each) …", flush=True)
    facts = {role: json.loads(p.communicate()[0].strip().splitlines()[-1]) for role, p in procs.items()}
    ebm_play.configure_threads()
    test = ebm_play.mnist(train=False, root=args.data)
    classifier = ebm_play.load_model("mnist-classifier")
    reports = {role: evaluate(ebm_play.load_model(tmp / f"{role}.safetensors"), classifier, test, args.n, log=lambda *_: None)
               for role in procs}
    print(f"\nafter {args.minutes:g} min of training; samples: {args.n} fresh chains, 256 reference-Langevin steps")
    print(f"{'':24}{'reference':>12}{'shipped':>12}   better")
    print(f"{'updates':24}{facts['reference']['steps']:>12}{facts['shipped']['steps']:>12}")
    rows = [("FDD (lower is better)", reports["reference"]["samples"]["fdd"], reports["shipped"]["samples"]["fdd"], -1)]
    rows += [(k, reports["reference"]["samples"][k], reports["shipped"]["samples"][k], 1) for k in ("confident", "coverage")]
    rows += [(f"AUROC {k}", v, reports["shipped"]["ood_auroc"][k], 1) for k, v in reports["reference"]["ood_auroc"].items()]
    tally = {"shipped": 0, "reference": 0, "tie": 0}
    for name, ref, ours, sign in rows:
        better = "tie" if ours == ref else "shipped" if (ours - ref) * sign > 0 else "reference"
        tally[better] += 1
        fmt = ".1f" if name.startswith("FDD") else ".3f"
        print(f"{name:24}{ref + 0.0:>12{fmt}}{ours + 0.0:>12{fmt}}   {better}")
    print(f"shipped recipe better on {tally['shipped']}, reference on {tally['reference']}, tied on {tally['tie']} "
          f"of {len(rows)} figures")
    for what, summary in (("mean", lambda a: sum(a) / len(a)), ("worst", min)):
        ref, ours = (summary(list(reports[r]["ood_auroc"].values())) for r in ("reference", "shipped"))
        print(f"{'AUROC ' + what + ' of the sets':24}{ref:>12.3f}{ours:>12.3f}")


if __name__ == "__main__":
    main()
