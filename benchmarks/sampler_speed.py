"""Sampler throughput: ebm_play's Langevin against the reference tutorial's, side by side.

    python benchmarks/sampler_speed.py [--threads 2] [--seconds 3]

Both run the same architecture and weights on the same batch with the same noise (checked equal),
alternating, and print image-steps per second, the ratio, and the achieved GFLOP/s against a
matrix-multiply rate measured in the same run.
"""

import argparse
import statistics
import time

import _repo  # noqa: F401  (puts the repository on sys.path: `python benchmarks/<name>.py` works)
import torch
from reference import CNNModel, copy_weights, generate_samples

import ebm_play
from ebm_play import samplers
from ebm_play.runtime import make_generator

STEPS = 60


def conv_flops(model, x):
    """Forward multiply-adds ×2, counted from the layer shapes; the input gradient costs the same again."""
    flops, h = 0, x[:1]
    for m in (*model.body, model.head):
        out = m(h)
        if isinstance(m, torch.nn.Conv2d):
            flops += 2 * out.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, torch.nn.Linear):
            flops += 2 * m.in_features * m.out_features
        h = out
    return 2 * flops


def matmul_gflops(seconds):
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        a @ b
        n += 1
    return n * 2 * 1024**3 / (time.perf_counter() - t) / 1e9


def timed(fn, seconds):
    n, t = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=ebm_play.runtime.cpu_count())
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ebm_play.configure_threads(args.threads)
    torch.manual_seed(0)
    ref = CNNModel()
    ours = ebm_play.CNNEnergy().eval()
    copy_weights(ref, ours)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {STEPS} Langevin steps per run")
    mm = matmul_gflops(args.seconds)
    print(f"matrix multiply (1024², fp32): {mm:.1f} GFLOP/s")
    for batch in (128, 16):
        x0 = torch.rand(batch, 1, 28, 28) * 2 - 1
        a = generate_samples(ref, x0.clone(), STEPS, generator=make_generator(1, torch.device("cpu")))
        b = samplers.run("langevin", ours, x0, STEPS, seed=1).x
        same = (a - b).abs().max().item()

        def run_ref():
            generate_samples(ref, x0.clone(), STEPS, generator=make_generator(1, torch.device("cpu")))

        def run_ours():
            samplers.run("langevin", ours, x0, STEPS, seed=1)

        rates = {"reference": [], "ebm_play": []}
        for _ in range(args.rounds):  # alternate, so load changes hit both alike
            rates["reference"].append(timed(run_ref, args.seconds) * batch * STEPS)
            rates["ebm_play"].append(timed(run_ours, args.seconds) * batch * STEPS)
        r, o = statistics.median(rates["reference"]), statistics.median(rates["ebm_play"])
        gf = o * conv_flops(ours, x0) / 1e9
        print(f"batch {batch:>3}: reference {r:8.0f} image-steps/s | ebm_play {o:8.0f} image-steps/s | "
              f"ratio {o / r:.2f}x | {gf:.1f} GFLOP/s = {100 * gf / mm:.0f}% of matmul | max |Δx| {same:.1e}")
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        m = ebm_play.CNNEnergy().to(dev).eval()
        for batch in (128, 4096):
            x0 = torch.rand(batch, 1, 28, 28, device=dev) * 2 - 1
            rates = {}
            for name, energy in (("eager", m), ("CUDA graphs", samplers.compiled(m))):
                samplers.run("langevin", energy, x0, 5, seed=0)  # warm-up (compiles and captures)
                torch.cuda.synchronize()
                rates[name] = timed(lambda: (samplers.run("langevin", energy, x0, STEPS, seed=0),
                                             torch.cuda.synchronize()), args.seconds) * batch * STEPS
            same = (samplers.run("langevin", m, x0, STEPS, seed=0).x
                    - samplers.run("langevin", energy, x0, STEPS, seed=0).x).abs().max().item()
            print(f"cuda batch {batch}: eager {rates['eager']:.0f} | CUDA graphs (torch.compile reduce-overhead) "
                  f"{rates['CUDA graphs']:.0f} image-steps/s, ratio {rates['CUDA graphs'] / rates['eager']:.2f}x | "
                  f"max |Δx| {same:.1e}")


if __name__ == "__main__":
    main()
