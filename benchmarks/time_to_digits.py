"""Time to digits: the app's "fast" preset against the reference recipe, from fresh models.

    python benchmarks/time_to_digits.py [--minutes 1 2 3 5] [--data ../shared/data] [--n 500] [--presets fast reference]

Each recipe trains alone on every core for the largest budget; at each checkpoint the clock stops,
fresh chains from uniform noise are sampled with the recipe's own sampler settings, and the
evaluation classifier judges them (confident fraction: p > 0.9; class coverage: entropy of the
predicted classes / log 10). Targets for "fast" at 5 minutes: confident ≥ 0.6, coverage ≥ 0.9.
"""

import argparse
import time

import _repo  # noqa: F401  (puts the repository on sys.path: `python benchmarks/<name>.py` works)
import torch

import ebm_play
from ebm_play.metrics import classify, sample_quality
from ebm_play.training import preset


def run(name, digits, classifier, ref_feats, minutes, n):
    tr = ebm_play.Trainer(preset(name), digits.x, digits.y)
    rows, trained, steps = [], 0.0, 0
    for budget in minutes:
        while trained < 60 * budget:
            t = time.perf_counter()
            tr.step()
            trained += time.perf_counter() - t
            steps += 1
        x = tr.fresh_samples(n, seed=1)
        q = sample_quality(classifier, x, ref_feats)
        rows.append((budget, steps, q))
        print(f"{name:>9} {budget:>4g} min {steps:>6} steps  confident {q['confident']:.3f}  coverage {q['coverage']:.3f}"
              f"  FDD {q['fdd']:8.2f}", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 3, 5])
    ap.add_argument("--data", default=None, help="MNIST root (default: $EBM_PLAY_DATA, else the bundled sample)")
    ap.add_argument("--n", type=int, default=500, help="fresh chains per checkpoint")
    ap.add_argument("--presets", nargs="+", default=["fast", "reference"], help="which presets to run")
    args = ap.parse_args()
    ebm_play.configure_threads()
    digits = ebm_play.mnist(train=True, root=args.data)
    test = ebm_play.mnist(train=False, root=args.data)
    classifier = ebm_play.load_model("mnist-classifier")
    ref_feats, _ = classify(classifier, test.x[:2000])
    print(f"{torch.get_num_threads()} threads; training data: {digits.source}")
    results = {name: run(name, digits, classifier, ref_feats, sorted(args.minutes), args.n) for name in args.presets}
    print("\nminutes  " + "  ".join(f"{n:>24}" for n in results))
    for i, budget in enumerate(sorted(args.minutes)):
        cells = [f"conf {r[i][2]['confident']:.2f} cov {r[i][2]['coverage']:.2f}" for r in results.values()]
        print(f"{budget:>7g}  " + "  ".join(f"{c:>24}" for c in cells))


if __name__ == "__main__":
    main()
