"""Training objectives side by side: contrastive divergence (the `fast` preset) against denoising
score matching (the `dsm` preset) on digits, and cd, dsm and nce on 2-D landscapes.

    python benchmarks/objectives.py [--minutes 1 2 5] [--data ../shared/data] [--n 500] [--seconds-2d 60]
                                    [--objectives cd dsm] [--skip digits|2d] [--samples-2d 10000]
                                    [--datasets-2d two_moons gaussians8 rings] [--seeds-2d 0]
                                    [--objectives-2d cd dsm nce] [--ema-2d 0]

Digits: the two recipes train at the same time in two processes, one thread each, from fresh models
and the same seed. At each checkpoint a run's training clock stops, 500 fresh chains from uniform
noise are sampled with the run's own sampler (Langevin, 256 steps, for cd; the ladder sampler down
the noise ladder for dsm), and the evaluation classifier judges them: Fréchet digit distance (FDD,
against 5,000 test digits), confident fraction (p > 0.9) and class coverage (entropy of the
predicted classes / log 10). Targets for dsm at 2 minutes: confident ≥ 0.8, coverage ≥ 0.95.

2-D: for two moons, 8 Gaussians and rings, each objective trains for the same wall-clock budget on
the same data and seed (landscapes.SideBySide settings), then 10,000 fresh samples with its own
sampler are assigned to the data's modes: the largest error of a mode's weight against the data's,
the share outside every mode, and the total-variation distance. Target: on 8 Gaussians every mode
holds 12.5% ± 3% of the samples under dsm (max error ≤ 0.03). The sample count matters: with 2,000
samples the binomial noise of a share of 12.5% alone has sd 0.0074, so the largest of 8 errors is
about 0.015 from counting alone; with 10,000 it is about 0.007.
"""

import argparse
import multiprocessing as mp
import queue
import time

import _repo  # noqa: F401  (puts the repository on sys.path: `python benchmarks/<name>.py` works)
import torch

RECIPES = {"cd": "fast", "dsm": "dsm", "nce": "nce"}  # objective → training preset
DATASETS_2D = ("two_moons", "gaussians8", "rings")


def digits_worker(objective: str, minutes: list[float], data_root: str | None, n: int, queue) -> None:
    """One recipe, one thread: train to each budget, then judge n fresh chains."""
    import ebm_play
    from ebm_play.metrics import classify, sample_quality
    from ebm_play.training import preset

    torch.set_num_threads(1)
    digits = ebm_play.mnist(train=True, root=data_root)
    test = ebm_play.mnist(train=False, root=data_root)
    classifier = ebm_play.load_model("mnist-classifier")
    ref, _ = classify(classifier, test.x[:5000])
    tr = ebm_play.Trainer(preset(RECIPES[objective]), digits.x, digits.y)
    trained = 0.0
    for budget in minutes:
        while trained < 60 * budget:
            t = time.perf_counter()
            tr.step()
            trained += time.perf_counter() - t
        t = time.perf_counter()
        x = tr.fresh_samples(n, seed=1)
        q = sample_quality(classifier, x, ref)
        queue.put((objective, budget, tr.state.step, q, time.perf_counter() - t))


def twod_worker(name: str, objective: str, seed: int, seconds: float, n: int, overrides: dict, queue) -> None:
    """One objective on one 2-D data set for ``seconds`` of training, then its mode shares."""
    from ebm_play import landscapes as L

    torch.set_num_threads(1)
    data, labels = L.make_dataset(name, 2000, seed=0)
    tr = L.SideBySide(data, (objective,), seed=seed, **overrides).trainers[objective]
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        tr.step()
    x = tr.fresh_samples(n, seed=seed + 1)
    report = L.mode_share_error(x, L.modes_for(name, data=data, labels=labels), data)
    queue.put((name, objective, seed, tr.state.step, report))


def run_pairs(jobs: list[tuple], target):
    """Run the jobs two at a time (one thread each), yielding what each puts on the queue."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    for i in range(0, len(jobs), 2):
        procs = [ctx.Process(target=target, args=(*job, results)) for job in jobs[i: i + 2]]
        for p in procs:
            p.start()
        while True:
            try:
                yield results.get(timeout=1)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    break
        for p in procs:
            p.join()
            if p.exitcode:
                raise SystemExit(f"a worker failed (exit code {p.exitcode})")


def twod(args) -> None:
    """The 2-D part: every objective on every data set and seed, a table of largest mode-weight errors."""
    objectives = args.objectives_2d
    print(f"\n2-D: {args.seconds_2d:g} s of training per objective, {args.samples_2d:,} fresh samples each, "
          f"seed(s) {' '.join(map(str, args.seeds_2d))}"
          + ("" if args.ema_2d is None else f", weights' moving average {args.ema_2d:g} for every objective"))
    overrides = {} if args.ema_2d is None else {"ema": args.ema_2d}
    jobs = [(name, o, seed, args.seconds_2d, args.samples_2d, overrides)
            for name in args.datasets_2d for seed in args.seeds_2d for o in objectives]
    table = {}
    for name, objective, seed, steps, r in run_pairs(jobs, twod_worker):
        table[name, objective, seed] = r
        print(f"  {name:>10} {objective:>4} seed {seed} {steps:>6} updates  max mode-weight error "
              f"{r['max_error']:.3f}  outside {r['outside']:.3f} (data {r['data'][-1]:.3f})  TV {r['tv']:.3f}  "
              "weights " + " ".join(f"{w:.3f}" for w in r["weights"]), flush=True)
    print("\nmax mode-weight error   " + "  ".join(f"{o:>6}" for o in objectives))
    for name in args.datasets_2d:
        for seed in args.seeds_2d:
            cells = "  ".join(f"{table[name, o, seed]['max_error']:>6.3f}" for o in objectives)
            print(f"{name:>12} seed {seed:<4}  {cells}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 5], help="digit checkpoints (training minutes)")
    ap.add_argument("--data", default=None, help="MNIST root (default: $EBM_PLAY_DATA, else the bundled sample)")
    ap.add_argument("--n", type=int, default=500, help="fresh chains per checkpoint")
    ap.add_argument("--seconds-2d", type=float, default=60.0, help="training seconds per objective and 2-D data set")
    ap.add_argument("--samples-2d", type=int, default=10_000, help="fresh samples judged per 2-D run")
    ap.add_argument("--datasets-2d", nargs="+", choices=DATASETS_2D, default=list(DATASETS_2D))
    ap.add_argument("--seeds-2d", nargs="+", type=int, default=[0], help="one 2-D run per seed")
    ap.add_argument("--objectives-2d", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    ap.add_argument("--ema-2d", type=float, default=None,
                    help="the weights' moving average for every 2-D run (default: the Landscape's, 0.995 for dsm)")
    ap.add_argument("--skip", choices=["digits", "2d"], action="append", default=[], help="leave a part out")
    ap.add_argument("--objectives", nargs="+", choices=list(RECIPES), default=["cd", "dsm"],
                    help="digit recipes, run two at a time (default cd dsm)")
    args = ap.parse_args()
    minutes = sorted(args.minutes)
    if "digits" not in args.skip:
        shown = ", ".join(f"{o} ({RECIPES[o]} preset)" for o in args.objectives)
        print(f"digits: {shown}, two at a time side by side, one thread each; {args.n} fresh chains")
        rows = {}
        for objective, budget, steps, q, secs in run_pairs([(o, minutes, args.data, args.n) for o in args.objectives],
                                                           digits_worker):
            rows[objective, budget] = (steps, q)
            print(f"  {objective:>4} {budget:>4g} min {steps:>6} updates  FDD {q['fdd']:7.1f}  confident "
                  f"{q['confident']:.3f}  coverage {q['coverage']:.3f}  (sampling {secs:.0f} s)", flush=True)
        print("\nminutes  " + "  ".join(f"{o + ' FDD / confident / coverage':>34}" for o in args.objectives))
        for budget in minutes:
            cells = [f"{q['fdd']:.1f} / {q['confident']:.2f} / {q['coverage']:.2f}"
                     for steps, q in (rows[o, budget] for o in args.objectives)]
            print(f"{budget:>7g}  " + "  ".join(f"{c:>34}" for c in cells))
    if "2d" not in args.skip:
        twod(args)


if __name__ == "__main__":
    main()
