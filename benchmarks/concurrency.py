"""A training run and a 16-chain sampling job at once, as the app runs them (threads in one
process), against each alone.

    python benchmarks/concurrency.py [--seconds 10]

Prints each job's throughput as a fraction of running alone, and the sum. The thread policy under
test is the app's: OMP_WAIT_POLICY=PASSIVE, one inter-op thread, and one intra-op thread per job
(``ebm_play.runtime.job_threads``), so two jobs on two cores never oversubscribe them.
"""

import argparse
import threading
import time

import _repo  # noqa: F401  (puts the repository on sys.path: `python benchmarks/<name>.py` works)
import torch

import ebm_play
from ebm_play.runtime import job_threads


def trainer_job(stop: threading.Event, counts: dict, threads: int):
    d = ebm_play.sample_digits()
    tr = ebm_play.Trainer(ebm_play.TrainConfig(batch_size=64, sampler_steps=20, buffer_size=1024), d.x, d.y)
    with job_threads(threads):
        tr.step()
        counts["ready"].wait()
        while not stop.is_set():
            tr.step()
            counts["train"] += 1


def sampler_job(stop: threading.Event, counts: dict, threads: int):
    model = ebm_play.CNNEnergy().eval()
    with job_threads(threads):
        ebm_play.sample(model, 16, 4, seed=0)
        counts["ready"].wait()
        while not stop.is_set():
            ebm_play.sample(model, 16, 16, seed=0)
            counts["sample"] += 1


def measure(jobs, seconds, threads):
    counts = {"train": 0, "sample": 0, "ready": threading.Barrier(len(jobs) + 1)}
    stop = threading.Event()
    ts = [threading.Thread(target=j, args=(stop, counts, threads)) for j in jobs]
    for t in ts:
        t.start()
    counts["ready"].wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    return counts["train"] / dt, counts["sample"] / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per job (the app uses 1)")
    args = ap.parse_args()
    ebm_play.configure_threads()
    print(f"{ebm_play.runtime.cpu_count()} cores, {args.threads} thread(s) per job, torch {torch.__version__}")
    train_alone, _ = measure([trainer_job], args.seconds, args.threads)
    _, sample_alone = measure([sampler_job], args.seconds, args.threads)
    train_both, sample_both = measure([trainer_job, sampler_job], args.seconds, args.threads)
    ft, fs = train_both / train_alone, sample_both / sample_alone
    print(f"training: alone {train_alone:.2f} steps/s, together {train_both:.2f} steps/s = {100 * ft:.0f}%")
    print(f"sampling: alone {sample_alone:.2f} jobs/s, together {sample_both:.2f} jobs/s = {100 * fs:.0f}%")
    print(f"together: {100 * (ft + fs):.0f}% (sum of the two fractions; each alone would be 100%)")


if __name__ == "__main__":
    main()
