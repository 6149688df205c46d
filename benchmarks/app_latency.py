"""App responsiveness through gradio_client, against a real `python app.py` on localhost.

    python benchmarks/app_latency.py [--port 7861] [--requests 5]

Prints the seconds from process start to the page being served, and for a 16-chain, 256-step
/sample request the time to its first streamed frame and to its end (median of several).
Targets (2 cores): page within 10 s; first frame within 1 s; whole request within 5 s.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import _repo  # noqa: F401  (puts the repository on sys.path: `python benchmarks/<name>.py` works)
from gradio_client import Client

ROOT = Path(__file__).resolve().parent.parent


def wait_for_page(url, proc, limit=120):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        if proc.poll() is not None:
            raise SystemExit(f"app exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            time.sleep(0.1)
    raise SystemExit("page not served in time")


def start_app(port: int, **env) -> tuple[subprocess.Popen, str]:
    """`python app.py` on 127.0.0.1:port (extra environment in ``env``); the process and its URL."""
    env = {**os.environ, "EBM_PLAY_PORT": str(port), "EBM_PLAY_HOST": "127.0.0.1", **env}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}/"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=7861)
    ap.add_argument("--requests", type=int, default=5)
    args = ap.parse_args()
    t_start = time.perf_counter()
    proc, url = start_app(args.port)
    try:
        page = wait_for_page(url, proc)
        print(f"page served {page:.1f} s after `python app.py` started")
        client = Client(url, verbose=False)
        firsts, totals = [], []
        for i in range(args.requests + 1):
            t0 = time.perf_counter()
            job = client.submit(session=f"bench-{i:04d}-latency", sampler="langevin", steps=256, chains=16, seed=i,
                                api_name="/sample")
            first = None
            while not job.done():
                if first is None and job.outputs():
                    first = time.perf_counter() - t0
                time.sleep(0.01)
            job.result()
            total = time.perf_counter() - t0
            first = total if first is None else first
            if i:  # the first request warms up the worker
                firsts.append(first)
                totals.append(total)
            print(f"request {i}: first frame {first:.2f} s, done {total:.2f} s, frames {len(job.outputs())}"
                  + (" (warm-up, not counted)" if i == 0 else ""))
        print(f"16 chains × 256 steps: first frame {statistics.median(firsts):.2f} s, "
              f"whole request {statistics.median(totals):.2f} s (medians of {len(totals)})")
        print(f"total wall time {time.perf_counter() - t_start:.0f} s")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
