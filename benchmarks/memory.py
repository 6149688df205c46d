"""Memory of `python app.py`: resident size with every shipped model loaded and every tab used
once, then its growth over many sampling requests.

    python benchmarks/memory.py [--requests 200] [--port 7863]

Targets: under 1.5 GB resident; less than 100 MB growth after 200 /sample requests (each a
16-chain, 60-step run with its own seed, so every result is a new picture and a new recording).
Gradio's file cache (a private GRADIO_TEMP_DIR here) is on disk, cleaned by ``delete_cache``; its
size is printed too.
"""

import argparse
import tempfile
import time
from pathlib import Path

import _repo  # noqa: F401  (puts the repository on sys.path: `python benchmarks/<name>.py` works)
from app_latency import start_app, wait_for_page
from gradio_client import Client, handle_file
from load import digit_png, rss_mb


def folder_mb(path: Path) -> tuple[float, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20, len(files)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--port", type=int, default=7863)
    args = ap.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="ebm-play-cache-"))
    proc, url = start_app(args.port, GRADIO_TEMP_DIR=str(cache))
    try:
        wait_for_page(url, proc)
        started = rss_mb(proc.pid)
        c = Client(url, verbose=False)
        sid = "bench-memory-session-0"
        png = handle_file(digit_png(cache / "digit.png"))
        editor = {"background": png, "layers": [], "composite": None, "id": None}
        # every tab once, so each lazily built piece (OOD reference energies, classifier, …) exists
        c.predict(session=sid, api_name="/sample")
        c.predict(sid, png, api_name="/score")
        c.predict(session=sid, experts=[{"expert": "class", "label": 3}], steps=20, api_name="/compose")
        c.predict(session=sid, image=editor, keep_half="bottom", steps=20, api_name="/inpaint")
        c.predict(session=sid, image=editor, steps=20, api_name="/denoise")
        c.predict(session=sid, image=editor, api_name="/ood_score")
        c.predict(session=sid, image=editor, api_name="/classify")
        warm = rss_mb(proc.pid)
        print(f"app resident memory: {started:.0f} MB after start, {warm:.0f} MB with every tab used once "
              f"(target < 1536 MB)")
        t0, marks = time.perf_counter(), {}
        for i in range(1, args.requests + 1):
            c.predict(session=sid, steps=60, chains=16, seed=1000 + i, api_name="/sample")
            if i in (args.requests // 4, args.requests // 2, args.requests):
                marks[i] = rss_mb(proc.pid)
        took = time.perf_counter() - t0
        for i, mb in marks.items():
            print(f"  after {i:4d} /sample requests: {mb:.0f} MB ({mb - warm:+.0f} MB)")
        grown = marks[args.requests] - warm
        size, n = folder_mb(cache)
        print(f"growth over {args.requests} requests: {grown:+.0f} MB (target < 100 MB); {took:.0f} s in all")
        print(f"gradio file cache on disk: {size:.1f} MB in {n} files (deleted after 2 h by delete_cache)")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
