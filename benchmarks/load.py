"""Load test: 8 clients sampling and scoring at once while 2 train, against `python app.py` on
localhost, for a bounded time.

    python benchmarks/load.py [--seconds 60] [--think 1] [--trainers 2] [--port 7862] [--no-patch]

Prints requests served, errors, p50/p95 latency per endpoint, the single-user sampling latency
measured first for comparison, the training runs' progress, and the app's resident memory before
and after. Traffic goes to 127.0.0.1 only; every loop stops at the deadline.

``--think`` is each client's pause between its requests (a person looking at the result). With
none, 8 clients keep 2 cores permanently busy, and the response-time law R = N·D/cores bounds the
latency below by 4× a request's single-user time D even with perfect sharing.
"""

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import _repo  # noqa: F401  (puts the repository on sys.path: `python benchmarks/<name>.py` works)
import httpx
from app_latency import start_app, wait_for_page
from gradio_client import Client
from PIL import Image, ImageDraw

SAMPLE = dict(sampler="langevin", steps=60, chains=16)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def digit_png(path):
    img = Image.new("L", (140, 140), 255)
    ImageDraw.Draw(img).ellipse((35, 25, 105, 115), outline=0, width=12)
    img.save(path)
    return path


class BrowserLike:
    """What a browser tab does for one action: upload, POST the call, read the event stream,
    download the pictures of the result. Plain httpx, not gradio_client: on a 2-core machine the
    load generator shares the cores with the app, and gradio_client's per-call threads cost it a
    whole core (measured with top), which would be charged to the app's latency."""

    def __init__(self, url):
        self.url, self.http = url, httpx.Client(timeout=120)
        info = self.http.get(f"{url}gradio_api/info").json()["named_endpoints"]
        self.params = {name: [(p["parameter_name"], p.get("parameter_default")) for p in ep["parameters"]]
                       for name, ep in info.items()}

    def upload(self, path) -> dict:
        with open(path, "rb") as f:
            r = self.http.post(f"{self.url}gradio_api/upload", files={"files": (os.path.basename(path), f)})
        r.raise_for_status()
        return {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}}

    def call(self, api_name, **kwargs) -> list:
        data = [kwargs.get(name, default) for name, default in self.params[api_name]]
        r = self.http.post(f"{self.url}gradio_api/call{api_name}", json={"data": data})
        r.raise_for_status()
        event = None
        with self.http.stream("GET", f"{self.url}gradio_api/call{api_name}/{r.json()['event_id']}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    payload = json.loads(line[5:])
                    if event == "error":
                        raise RuntimeError(f"error event: {payload}")
                    for item in payload:  # the pictures, as the page would show them
                        if isinstance(item, dict) and item.get("url"):
                            self.http.get(item["url"]).raise_for_status()
                    return payload
        raise RuntimeError("the event stream ended without a result")


def client_loop(url, kind, i, deadline, log, png, think):
    c = BrowserLike(url)
    sid = f"load-{kind}-{i:03d}-session"
    n = 0
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            if kind == "sample":
                c.call("/sample", session=sid, seed=n, **SAMPLE)
            else:
                c.call("/score", session=sid, image=c.upload(png))
            log.append((kind, time.perf_counter() - t0, None))
        except Exception as e:  # every failure counts; the loop goes on until the deadline
            log.append((kind, time.perf_counter() - t0, f"{type(e).__name__}: {e}"[:200]))
        n += 1
        time.sleep(max(0.0, min(think, deadline - time.monotonic())))


def trainer_loop(url, i, until, log, steps, started):
    """Start a training run, then poll it once a second (as the page does) until ``until[0]``."""
    c = Client(url, verbose=False)
    sid = f"load-train-{i:03d}-session"
    t0 = time.perf_counter()
    try:
        c.predict(sid, "cnn", 16, list(range(10)), 32, 10, 10.0, 0.005, 0.1, 1e-3, 500, 0.05, i,
                  api_name="/train_start")
        log.append(("train_start", time.perf_counter() - t0, None))
        started.release()
        while time.monotonic() < until[0]:
            t0 = time.perf_counter()
            steps[i] = c.predict(sid, api_name="/train_status")["step"]
            log.append(("train_status", time.perf_counter() - t0, None))
            time.sleep(1)
        c.predict(sid, api_name="/train_stop")
    except Exception as e:
        log.append(("train", time.perf_counter() - t0, f"{type(e).__name__}: {e}"[:200]))
        started.release()


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--port", type=int, default=7862)
    ap.add_argument("--trainers", type=int, default=2, help="training runs alive during the test (default 2)")
    ap.add_argument("--think", type=float, default=1.0, help="each client's pause between requests, s (default 1)")
    ap.add_argument("--no-patch", action="store_true",
                    help="run the app without its gradio session patch (EBM_PLAY_GRADIO_PATCH=0), to see what it buys")
    args = ap.parse_args()
    proc, url = start_app(args.port, **({"EBM_PLAY_GRADIO_PATCH": "0"} if args.no_patch else {}))
    try:
        wait_for_page(url, proc)
        png = digit_png(Path(tempfile.mkdtemp()) / "digit.png")
        c = BrowserLike(url)
        c.call("/sample", session="load-single-user-0", **SAMPLE)  # warm-up
        single = []
        for i in range(5):
            t0 = time.perf_counter()
            c.call("/sample", session="load-single-user-0", seed=i, **SAMPLE)
            single.append(time.perf_counter() - t0)
        single_p50 = statistics.median(single)
        rss0 = rss_mb(proc.pid)
        print(f"single user: /sample p50 {single_p50:.2f} s; app memory {rss0:.0f} MB")
        log: list = []
        steps, until, started = [0] * args.trainers, [float("inf")], threading.Semaphore(0)
        trainers = [threading.Thread(target=trainer_loop, args=(url, i, until, log, steps, started))
                    for i in range(args.trainers)]
        for t in trainers:  # the runs train first; the clients come while they do
            t.start()
        for _ in trainers:
            started.acquire(timeout=120)
        until[0] = deadline = time.monotonic() + args.seconds
        clients = [threading.Thread(target=client_loop, args=(url, "sample" if i % 2 == 0 else "score", i, deadline,
                                                              log, png, args.think)) for i in range(8)]
        for t in clients:
            t.start()
        for t in trainers + clients:
            t.join(args.seconds + 120)
        rss1 = rss_mb(proc.pid)
        errors = [e for _, _, e in log if e]
        print(f"{args.seconds:.0f} s with 8 clients (4 sampling, 4 scoring; {args.think:g} s between requests) "
              f"and {args.trainers} training runs:")
        print(f"  requests served {len(log) - len(errors)}, errors {len(errors)}")
        for kind in sorted({k for k, _, _ in log}):
            lat = [t for k, t, e in log if k == kind and not e]
            print(f"  {kind:>12}: {len(lat):4d} ok, p50 {pct(lat, 0.5):.2f} s, p95 {pct(lat, 0.95):.2f} s")
        p95 = pct([t for k, t, e in log if k == "sample" and not e], 0.95)
        print(f"  /sample p95 {p95:.2f} s = {p95 / single_p50:.1f}× the single-user p50 (target ≤ 4×)")
        if steps:
            print(f"  training runs reached steps {steps} (they pause while requests are in flight)")
        print(f"  app memory {rss0:.0f} MB → {rss1:.0f} MB")
        for e in errors[:5]:
            print("  error:", e)
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
