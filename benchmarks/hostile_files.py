"""Memory and time of loading hostile weight files: tiny files whose metadata asks for a huge model.

    python benchmarks/hostile_files.py [--tree PATH]

Each file holds no tensors, only metadata (about 150 bytes), e.g. a JEM of width 256 and 500,000
classes. Each is loaded by ``ebm_play.load_model`` in a fresh process, which reports its peak
resident size (VmHWM) before and after, the time and the message. Then one process loads all of
them 10 times over and reports its resident size (VmRSS) growth. ``--tree`` runs another checkout
of ebm_play (e.g. one exported with ``git archive``) for a before/after comparison; children get a
16 GB address-space limit, so a file that asks for more fails instead of swapping.
"""

import argparse
import json
import os
import re
import resource
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES = {  # the report's cases (issue #20)
    "jem width 256, 500,000 classes": {"kind": "jem", "config": {"width": 256, "n_classes": 500000}},
    "rbm 60,000 visible, 8,192 hidden": {"kind": "rbm", "config": {"visible": 60000, "hidden": 8192}},
    "mlp2d hidden 16,000": {"kind": "mlp2d", "config": {"hidden": 16000}},
    "classifier width 3,000": {"kind": "classifier", "config": {"width": 3000}},
    "ensemble 16 × width 256 (in bounds)": {"kind": "jem-ensemble", "config": {"members": 16, "width": 256}},
    "cnn width 256 (in bounds)": {"kind": "cnn", "config": {"width": 256}},
}

CHILD = r"""
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (16 * 2**30, 16 * 2**30))
import torch
torch.set_num_threads(1)
import ebm_play

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
paths, rounds = sys.argv[1:-1], int(sys.argv[-1])
before, rss0 = status("VmHWM"), status("VmRSS")
t0 = time.perf_counter()
messages = []
for _ in range(rounds):
    for p in paths:
        try:
            ebm_play.load_model(p, "cpu")
            messages.append("loaded")
        except Exception as e:
            messages.append(f"{type(e).__name__}: {' '.join(str(e).split())[:110]}")
print(json.dumps({"module": ebm_play.__file__, "peak_before": before, "peak_after": status("VmHWM"), "rss_growth": status("VmRSS") - rss0,
                  "seconds": time.perf_counter() - t0, "message": messages[-1] if messages else ""}))
"""


def hostile_file(folder: Path, name: str, meta: dict) -> Path:
    head = json.dumps({"__metadata__": {"ebm_play": json.dumps(meta)}}).encode()
    path = folder / f"{re.sub(r'[^a-z0-9]+', '_', name.split('(')[0]).strip('_')}.safetensors"
    path.write_bytes(struct.pack("<Q", len(head)) + head)
    return path


def run(tree: Path, paths: list[Path], rounds: int, cwd: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "EBM_PLAY_THREADS": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", CHILD, *map(str, paths), str(rounds)], env=env, capture_output=True,
                       text=True, timeout=900, check=False, cwd=cwd)  # not the repository: cwd comes first on sys.path
    if p.returncode != 0:
        return {"message": f"exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, default=REPO, help="the ebm_play checkout to run (default: this one)")
    ap.add_argument("--rounds", type=int, default=10, help="passes over all files in the growth test (default 10)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: hostile_file(Path(tmp), name, meta) for name, meta in CASES.items()}
        print(f"tree {args.tree}: {run(args.tree, [], 0, tmp).get('module')}")
        print(f"{'file':34s} {'bytes':>5s} {'peak RSS MB':>17s} {'s':>6s}  message")
        for name, path in paths.items():
            r = run(args.tree, [path], 1, tmp)
            peak = f"{r['peak_before']:.0f} → {r['peak_after']:.0f}" if "peak_after" in r else "?"
            print(f"{name:34s} {path.stat().st_size:5d} {peak:>17s} {r.get('seconds', float('nan')):6.2f}  {r['message']}")
        r = run(args.tree, list(paths.values()), args.rounds, tmp)
        if "rss_growth" in r:
            print(f"{args.rounds} × {len(paths)} loads in one process: resident size {r['rss_growth']:+.0f} MB, "
                  f"peak {r['peak_before']:.0f} → {r['peak_after']:.0f} MB, {r['seconds']:.1f} s")
        else:
            print(f"{args.rounds} × {len(paths)} loads in one process: {r['message']}")


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
